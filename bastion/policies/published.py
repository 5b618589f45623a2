"""Policies published to Redis: one checked version that every worker on every host uses.

``bastion policy publish`` checks and tests the files, then stores their text as a new version
(a :class:`Bundle`: the model and the policy files) with who published it, when, and the
bundle's SHA-256. Every worker's watcher (:mod:`bastion.policies.watch`) sees the announcement
and builds that version aside. Versions are numbered from 1; the history keeps every version's
record and the last :data:`KEEP` bundles (the versions a rollback can return to). A rollback
publishes an older bundle again as a new version, so the history says who went back, when, and
to what.

Every key shares the hash tag ``{policy}``: the publish script is one atomic step on a Redis
Cluster too. Redis is read with the blocking client (the CLI's, or the watcher's thread).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.policies.diagnostics import Diagnostic, PolicyError

if TYPE_CHECKING:
    from bastion.policies.engine import PolicyEngine

__all__ = ["KEEP", "Bundle", "PolicyVersions", "Version", "announce_key"]

KEEP = 20
"""How many of the latest versions keep their bundle (a rollback target); records stay."""

PathLike = str | os.PathLike[str]


def _key(prefix: str, name: str) -> str:
    return f"{prefix}:{{policy}}:{name}"


def announce_key(prefix: str) -> str:
    """The key whose value changes whenever workers must look at their policy again."""
    return _key(prefix, "version")


_PUBLISH = """
local n = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[4], n, ARGV[1])
redis.call('HSET', KEYS[5], n, ARGV[2])
redis.call('SET', KEYS[2], n)
redis.call('INCR', KEYS[3])
local gone = n - tonumber(ARGV[3])
if gone > 0 then redis.call('HDEL', KEYS[4], gone) end
return n
"""
# KEYS: the version counter, the current version, the announcement, bundles, records.
# ARGV: the bundle's JSON, the record's JSON, how many bundles to keep.


@dataclass(frozen=True)
class Bundle:
    """The text of one policy: the model (None: the shipped one) and the policy files, by name."""

    model: tuple[str, str] | None
    policies: tuple[tuple[str, str], ...]

    @classmethod
    def read(cls, model_path: PathLike | None, policy_paths: Sequence[PathLike]) -> Bundle:
        """The files' text, named by file name (their path when two share a name)."""
        paths = [os.fspath(p) for p in policy_paths]
        names = [os.path.basename(p) for p in paths]
        if len(set(names)) != len(names):
            names = paths
        policies = []
        for name, path in zip(names, paths, strict=True):
            policies.append((name, _read_text(path)))
        model = None
        if model_path is not None:
            model = (os.path.basename(os.fspath(model_path)), _read_text(model_path))
        return cls(model, tuple(policies))

    def to_bytes(self) -> bytes:
        """How this bundle is stored (and hashed): a JSON header naming the files and their
        sizes, a newline, then the files' bytes one after the other.

        Not one JSON document: decoding 6 MB of JSON is one 16 ms call that holds the GIL in
        every worker; the files' text is only sliced out of this.
        """
        files = [("model", *self.model)] if self.model else []
        files += [("policy", name, text) for name, text in self.policies]
        encoded = [(kind, name, text.encode()) for kind, name, text in files]
        header = {"format": 1, "files": [[k, n, len(b)] for k, n, b in encoded]}
        head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        return b"\n".join([head, b"".join(b for _, _, b in encoded)])

    @classmethod
    def from_bytes(cls, value: bytes) -> Bundle:
        """The bundle stored as :meth:`to_bytes`."""
        cut = value.index(b"\n")
        header = json.loads(value[:cut])
        if header.get("format") != 1:
            raise ValueError(f"unknown policy bundle format {header.get('format')!r}")
        model = None
        policies = []
        at = cut + 1
        for kind, name, size in header["files"]:
            text = _decode(value, at, at + int(size))
            at += int(size)
            if kind == "model":
                model = (str(name), text)
            else:
                policies.append((str(name), text))
        return cls(model, tuple(policies))

    @property
    def sha256(self) -> str:
        """The SHA-256 of :meth:`to_bytes`: what the history shows and a host can compare."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def engine(self, *, self_test: bool = True, suites: Sequence[PathLike] = ()) -> PolicyEngine:
        """Parse, lint and self-test this policy (and run ``suites`` on it); PolicyError if not."""
        from bastion.policies.holder import check_engine
        from bastion.policies.loader import load_policy_texts

        policy, diagnostics = load_policy_texts(self.model, self.policies)
        return check_engine(policy, diagnostics, self_test=self_test, suites=suites)


_PIECE = 1 << 16


def _decode(value: bytes, start: int, end: int) -> str:
    """``value[start:end]`` as UTF-8, in pieces: no one long call holds the GIL (see watch)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(value)
    parts = [decoder.decode(view[at : min(at + _PIECE, end)]) for at in range(start, end, _PIECE)]
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def _read_text(path: PathLike) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8")
    except OSError as exc:
        raise PolicyError.from_diagnostics(
            [Diagnostic(os.fspath(path), None, f"cannot read: {exc.strerror or exc}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyError.from_diagnostics(
            [Diagnostic(os.fspath(path), None, f"not UTF-8 text: {exc.reason}")]
        ) from None


@dataclass(frozen=True)
class Version:
    """One published version's record: what the history lists."""

    number: int
    sha256: str
    by: str
    at: float
    """Unix time of the publication."""
    rules: int
    files: tuple[str, ...]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return {
            "version": self.number,
            "sha256": self.sha256,
            "by": self.by,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "rules": self.rules,
            "files": list(self.files),
            "note": self.note,
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PolicyVersions:
    """The published versions in one Redis (blocking client), under ``key_prefix``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._counter = _key(prefix, "counter")
        self._current = _key(prefix, "current")
        self._bundles = _key(prefix, "bundles")
        self._records = _key(prefix, "records")
        self._announce = announce_key(prefix)

    def publish(self, bundle: Bundle, engine: PolicyEngine, *, by: str, note: str = "") -> Version:
        """Store ``bundle`` (already checked into ``engine``) as the new current version."""
        raw = bundle.to_bytes()
        record = {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "by": by,
            "at": time.time(),
            "rules": len(engine.rules),
            "files": [name for name, _ in ((bundle.model,) if bundle.model else ())]
            + [name for name, _ in bundle.policies],
            "note": note,
        }
        keys = [self._counter, self._current, self._announce, self._bundles, self._records]
        number = int(
            self.client.eval(
                _PUBLISH, len(keys), *keys, bundle.to_bytes(), json.dumps(record), KEEP
            )
        )
        return _version(number, record)

    def current(self) -> int | None:
        """The version in force, or None when none was ever published."""
        value = self.client.get(self._current)
        return int(value) if value is not None else None

    def bundle(self, number: int) -> Bundle | None:
        """The text of version ``number``; None if it never was or is no longer kept."""
        value = self.client.hget(self._bundles, str(number))
        return Bundle.from_bytes(bytes(value)) if value is not None else None

    def history(self) -> list[Version]:
        """Every version's record, oldest first."""
        records = self.client.hgetall(self._records)
        found = [_version(int(_text(n)), json.loads(r)) for n, r in records.items()]
        return sorted(found, key=lambda v: v.number)


def _version(number: int, record: dict[str, Any]) -> Version:
    return Version(
        number=number,
        sha256=str(record["sha256"]),
        by=str(record["by"]),
        at=float(record["at"]),
        rules=int(record["rules"]),
        files=tuple(record.get("files", ())),
        note=str(record.get("note", "")),
    )
