"""What the checker reports: one ``ConfigIssue`` per problem, ``ConfigError`` for all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from concentrator.errors import ConcentratorError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of the file. An ``error`` keeps the daemon from starting; a
    ``warning`` does not (a serial port that is not there yet: a USB adapter plugged in
    later), so it is only said, at the check and in the daemon's log."""

    file: str
    line: int | None
    field: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        label = "warning: " if self.severity == "warning" else ""
        return f"{where}: {self.field}: {label}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "message": self.message,
            "severity": self.severity,
        }


class ConfigError(ConcentratorError):
    """The file has errors; ``issues`` lists every one, in file order, and ``warnings``
    what else the check found (it did not refuse the file for those)."""

    def __init__(
        self, issues: list[ConfigIssue], warnings: list[ConfigIssue] | None = None
    ) -> None:
        super().__init__(issues)
        self.issues = issues
        self.warnings = warnings or []

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)
