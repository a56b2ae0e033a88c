"""What the checker reports: one ``ConfigIssue`` per problem, ``ConfigError`` for all."""

from __future__ import annotations

from dataclasses import dataclass

from concentrator.errors import ConcentratorError


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ConfigError(ConcentratorError):
    """The file has problems; ``issues`` lists every one, in file order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__(issues)
        self.issues = issues

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)
