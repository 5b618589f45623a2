"""Policy rules as parsed from files (or per-document rows), each keeping where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a model is parsed with pycasbin; the rules themselves need none of it
    from bastion.policies.modeldef import ModelSpec

__all__ = ["DOCUMENT", "Policy", "Rule"]

DOCUMENT = "document"
"""The source of rules that come from a resource's own permission rows rather than a file."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``p`` or ``g`` line: its type, its fields, and its ``file:line`` (or a document)."""

    ptype: str
    fields: tuple[str, ...]
    file: str = ""
    line: int = 0

    @property
    def source(self) -> str:
        """``policy.csv:12`` for a file line, ``document`` for a per-document row."""
        return f"{self.file}:{self.line}" if self.file else DOCUMENT

    @property
    def sub(self) -> str:
        """The subject (role) of a ``p`` line of the shipped models."""
        return self.fields[0]

    @property
    def obj(self) -> str:
        """The object (resource or pattern) of a ``p`` line of the shipped models."""
        return self.fields[1]

    @property
    def act(self) -> str:
        """The action of a ``p`` line of the shipped models."""
        return self.fields[2]

    @property
    def eft(self) -> str:
        """The effect of a ``p`` line of the shipped models (``allow`` when it has no eft)."""
        return self.fields[3] if len(self.fields) > 3 else "allow"

    def __str__(self) -> str:
        return ", ".join((self.ptype, *self.fields))


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed model plus the ``p`` rules and ``g`` role links of its policy files, in order."""

    model: ModelSpec
    rules: tuple[Rule, ...]
    links: tuple[Rule, ...]
    files: tuple[str, ...] = ()
