"""Problems found in model and policy files, each tied to a file and a line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem in a model or policy file: where it is, what it is, how bad it is."""

    file: str
    line: int | None
    message: str
    severity: Severity = "error"

    @property
    def location(self) -> str:
        """``file:line``, or just ``file`` for problems of the whole file."""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        return f"{self.location}: {self.severity}: {self.message}"


class PolicyError(ValueError):
    """A model or policy that must not be used; ``file``/``line`` locate the first error."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        diagnostics: Iterable[Diagnostic] = (),
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.diagnostics = tuple(diagnostics)
        where = f"{file}:{line}" if file and line is not None else file
        super().__init__(f"{where}: {message}" if where else message)

    @classmethod
    def from_diagnostics(cls, diagnostics: Iterable[Diagnostic]) -> PolicyError:
        """The error for a list of diagnostics: located at the first error, counting the rest."""
        found = list(diagnostics)
        errors = [d for d in found if d.severity == "error"]
        if not errors:
            raise ValueError("no error-severity diagnostic to raise")
        first = errors[0]
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        return cls(first.message + more, file=first.file, line=first.line, diagnostics=found)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """Whether any diagnostic is an error (the policy must then not be used)."""
    return any(d.severity == "error" for d in diagnostics)
