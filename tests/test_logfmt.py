"""Structured logs: one JSON object per line with the meter and bus as fields."""

from __future__ import annotations

import json
import logging

from concentrator.cli.logfmt import JsonFormatter, formatter


def _record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("concentrator.test")
    record = logger.makeRecord(
        "concentrator.test", logging.WARNING, __file__, 1, "meter %s: %s", ("0001", "x"), None,
        extra=extra,
    )  # fmt: skip
    return record


def test_json_lines_carry_the_message_and_the_structured_fields() -> None:
    doc = json.loads(JsonFormatter().format(_record(meter="0001", bus="bus1")))
    assert doc["msg"] == "meter 0001: x" and doc["level"] == "WARNING"
    assert (doc["meter"], doc["bus"], doc["logger"]) == ("0001", "bus1", "concentrator.test")
    assert "T" in str(doc["t"])


def test_a_field_named_like_a_secret_is_redacted() -> None:
    doc = json.loads(JsonFormatter().format(_record(password="123456", payload_key="ab")))
    assert doc["password"] == "***" and doc["payload_key"] == "***"


def test_text_is_the_default_for_people() -> None:
    line = formatter("text").format(_record())
    assert "WARNING concentrator.test: meter 0001: x" in line
