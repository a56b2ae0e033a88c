"""The portal's languages: Chinese (``zh``) and English (``en``), Babel catalogues.

English is the source language (the message ids); ``zh/LC_MESSAGES/messages.po`` is
the Chinese catalogue and ``en/LC_MESSAGES/messages.po`` gives the identifiers the pages
show (statuses, ledger kinds, topics) their English labels; both committed as text.
Each is compiled in memory when the portal first needs it (`translations`), so there is
no ``.mo`` to build or to go stale; a test checks that every message the templates and
pages use is translated. Extraction (from the top):
``pybabel extract -F cloud_receiver/web/i18n/babel.cfg -k plain -o messages.pot .``.

Which language a request gets is `cloud_receiver.web.pages.language` (``?lang=``, which
the language switch in the header links to, kept in the session; else the server's
default); this module translates and formats for it.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from decimal import Decimal
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from markupsafe import Markup

LANGUAGES = ("zh", "en")
DEFAULT = "zh"
NAMES = {"zh": "中文", "en": "English"}
HERE = Path(__file__).parent


def catalogue_path(lang: str) -> Path:
    return HERE / lang / "LC_MESSAGES" / "messages.po"


@functools.cache
def translations(lang: str) -> NullTranslations:
    """The compiled catalogue of ``lang`` (a message it lacks stays as its English id)."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r}: expected one of {', '.join(LANGUAGES)}")
    path = catalogue_path(lang)
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as f:
        catalogue = read_po(f, locale=lang)
    buf = io.BytesIO()
    write_mo(buf, catalogue)
    buf.seek(0)
    return Translations(buf)


class Gettext:
    """``_`` in the templates: translate, then fill ``%(name)s`` placeholders with the
    (escaped) values; the result is Markup, so a translation may hold markup itself."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self._t = translations(lang)

    def __call__(self, message: str, **values: Any) -> Markup:
        text = self._t.gettext(message)
        return Markup(text) % values if values else Markup(text)  # Markup escapes values

    def plain(self, message: str, **values: Any) -> str:
        """The translation as plain text (chart labels, headers): escaped by the caller."""
        text = self._t.gettext(message)
        return text % values if values else text


def money(cents: int) -> str:
    """Yuan with two decimals: ``¥12.30`` / ``-¥3.00``."""
    sign = "-" if cents < 0 else ""
    value = Decimal(abs(cents)) / 100
    return f"{sign}¥{value:.2f}"


def when(t: float | None, tz: dt.tzinfo, *, date_only: bool = False) -> str:
    """A time as both languages write it on a form: ISO order, local to the site."""
    if t is None:
        return "—"
    stamp = dt.datetime.fromtimestamp(t, tz)
    return stamp.strftime("%Y-%m-%d" if date_only else "%Y-%m-%d %H:%M")
