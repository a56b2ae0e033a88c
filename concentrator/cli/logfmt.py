"""Log lines for people (text) and for the journal and log shippers (JSON).

``--log-format json`` writes one JSON object per line: ``t`` (ISO time with offset),
``level``, ``logger``, ``msg`` and the structured fields a call passes with
``extra={"meter": …, "bus": …}``. Under systemd each line lands in the journal as it is.
Secrets (relay passwords, operator codes, payload keys) are never passed to a log call;
``redact`` is a last line of defence for a field named like one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("meter", "bus", "concentrator", "event", "slot")  # structured extras we emit
SECRET_WORDS = ("password", "operator", "key", "secret", "token")

# Attributes every LogRecord has; anything else on a record came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(name: str, value: object) -> object:
    return "***" if any(w in name.lower() for w in SECRET_WORDS) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "t": dt.datetime.fromtimestamp(record.created)
            .astimezone()
            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                doc[name] = redact(name, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
