"""What ``cloud-receiver web`` is started with, and the secret key its cookies are
signed with."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clitools.files import PRIVATE, write_file
from cloud_receiver.errors import EXIT_USAGE, ReceiverError

if TYPE_CHECKING:
    from cloud_receiver.storage.completeness import Plan

LANGUAGES = ("zh", "en")
SECRET_BYTES = 32


class WebConfigError(ReceiverError, ValueError):
    """A setting of the web server that cannot work (the message names it)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class WebSettings:
    """``db_url``: the receiver's database; ``secret_key_file``: the key that signs the
        session cookies (made, mode 0600, if missing); ``tls_cert``/``tls_key``: PEM files
        (both or neither; with them cookies are ``Secure``); ``language``: the default of the
        pages (``zh`` or ``en``); ``login_attempts``/``login_window_s``: logins allowed per
        client address in that window before 429; ``collection_interval_s``/``late_after_s``:
    the collection plan the fleet page counts today's completeness by (the ``run`` and
    ``completeness`` commands take the same, `cloud_receiver.storage.completeness`)."""

    db_url: str
    secret_key_file: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    language: str = "zh"
    login_attempts: int = 10
    login_window_s: float = 60.0
    collection_interval_s: int = 900
    late_after_s: int = 7200

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise WebConfigError("--tls-cert and --tls-key: give both or neither")
        if self.language not in LANGUAGES:
            raise WebConfigError(
                f"--language {self.language!r}: expected one of {', '.join(LANGUAGES)}"
            )
        if self.login_attempts < 1 or self.login_window_s <= 0:
            raise WebConfigError("login rate limit: at least 1 attempt in a window above 0 s")

    def collection_plan(self) -> Plan:
        """The one plan the portal and the API judge completeness by: the site's zone
        and this server's interval and lateness."""
        from clitools.timefmt import site_tz
        from cloud_receiver.storage.completeness import Plan

        return Plan(site_tz(), interval_s=self.collection_interval_s,
                    late_after_s=self.late_after_s)  # fmt: skip

    @property
    def secure(self) -> bool:
        return self.tls_cert is not None


def load_secret(path: Path) -> bytes:
    """The server's secret key (hex in ``path``); a new one is written (0600) if the
    file does not exist, so sessions survive a restart but not a new key."""
    if not path.exists():
        write_file(path, secrets.token_hex(SECRET_BYTES) + "\n", PRIVATE)
    try:
        raw = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise WebConfigError(f"--secret-key {path}: expected a hex key ({exc})") from None
    if len(raw) < SECRET_BYTES:
        raise WebConfigError(f"--secret-key {path}: at least {SECRET_BYTES} bytes, hex")
    return raw


def derive(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (cookie signing, the session key's encryption)."""
    info = f"meterflow web {purpose} v1".encode()
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(secret)


def fernet_key(secret: bytes) -> bytes:
    return base64.urlsafe_b64encode(derive(secret, "session key"))
