"""The common-password dictionary: a frozenset of folded passwords, loaded once per file.

A custom file (``password_dictionary_path``) extends the shipped list; with
``password_dictionary_replace`` it is the whole dictionary instead. A password is common when it
or one of its forms (:mod:`bastion.passwords.variants`: ``P@ssw0rd!`` is ``password``) is listed.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from importlib import resources

from bastion.errors import ConfigError
from bastion.passwords.variants import is_listed

SHIPPED = "data/common-passwords.txt"
"""The shipped list, relative to the ``bastion.passwords`` package (see ``data/NOTICE``)."""


def fold(text: str) -> str:
    """NFKC-normalise and casefold ``text``: the form every password comparison uses."""
    # NFKC first, so full-width letters and ligatures become plain letters before casefold()
    # removes case (which also turns ß into ss).
    return unicodedata.normalize("NFKC", text).casefold()


def _entries(text: str) -> frozenset[str]:
    # Surrounding whitespace is never meaningful in a list (stray spaces, CRLF files), and an
    # empty line would otherwise become the entry "", which no checked password can equal.
    return frozenset(entry for line in text.splitlines() if (entry := fold(line).strip()))


def load_dictionary(path: str | None = None) -> frozenset[str]:
    """The folded entries of ``path`` (None: the shipped list), read once and then cached."""
    # One cache key per file, however the caller spells the call (functools.cache would keep
    # load_dictionary() and load_dictionary(None) apart).
    return _load(path)


@functools.cache
def _load(path: str | None) -> frozenset[str]:
    if path is None:
        text = resources.files("bastion.passwords").joinpath(SHIPPED).read_text("utf-8")
        return _entries(text)
    allowed = "a readable UTF-8 file with one password a line"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("password_dictionary_path", path, f"{allowed} ({exc})") from None
    entries = _entries(text)
    if not entries:
        # An empty file silently turns the rule off; that is a mistake, not a configuration.
        raise ConfigError("password_dictionary_path", path, f"{allowed} (the file is empty)")
    return entries


def dictionary_words(path: str | None = None, *, replace: bool = False) -> frozenset[str]:
    """The dictionary in force: the shipped list plus ``path``, or ``path`` alone if ``replace``."""
    if replace and path is None:
        raise ConfigError(
            "password_dictionary_replace", True, "false unless password_dictionary_path is set"
        )
    return _combined(path, replace)


@functools.cache
def _combined(path: str | None, replace: bool) -> frozenset[str]:
    # A custom list is usually a few words of the deployment's own (its old default password,
    # local sports teams); replacing the 10,000 most common passwords with it would weaken the
    # rule, so extending is the default and replacing is asked for by name.
    if path is None or replace:
        return load_dictionary(path)
    return load_dictionary(None) | load_dictionary(path)


def is_common(
    password: str, path: str | os.PathLike[str] | None = None, *, replace: bool = False
) -> bool:
    """Whether ``password`` or one of its forms is in the dictionary (see ``dictionary_words``)."""
    words = dictionary_words(None if path is None else os.fspath(path), replace=replace)
    return is_listed(fold(password).strip(), words)
