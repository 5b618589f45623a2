"""The forms a common password hides in: digits and symbols at its ends, and leetspeak.

``Password1!``, ``P@ssw0rd!`` and ``Summer2024!`` are the dictionary's words dressed the way
composition rules taught people to dress them. Like zxcvbn, the dictionary rule also looks at
what is left after taking off a leading and/or trailing run of digits and symbols and undoing the
common substitutions (``@`` for a, ``0`` for o, ``1`` for i or l, ...).

The number of forms is bounded whatever the password: at most ``MAX_CUTS`` cut points at each
end, and three spellings of each piece (as written, ``1`` read as i, ``1`` read as l), since a
substitution is undone for every occurrence of a character at once, as zxcvbn does.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

MIN_FORM = 4
"""Shortest form looked up: the shipped list has nothing shorter, and "abc" says nothing."""
MAX_CUTS = 4
"""Most places tried at each end to cut a run of digits and symbols (both ends of it included)."""

# Undone for every occurrence at once. "1" is read both ways, the others one way.
_LEET = str.maketrans({"@": "a", "0": "o", "3": "e", "4": "a", "5": "s", "$": "s", "7": "t"})
_ONE_AS_I = str.maketrans({"1": "i"})
_ONE_AS_L = str.maketrans({"1": "l"})
_LEET_CHARS = frozenset("@013457$")


def without_invisible(folded: str) -> str:
    """``folded`` without format and control characters (``pass\\u200bword`` is ``password``)."""
    if folded.isprintable():
        return folded  # no Cc or Cf in it (a quick test in C): the usual case
    return "".join(ch for ch in folded if unicodedata.category(ch) not in ("Cf", "Cc"))


def _cuts(text: str, start: int, end: int, *, from_end: bool, reach: int) -> list[int]:
    """Where the run ``text[start:end]`` of digits and symbols may be cut, at most ``MAX_CUTS``,
    none further than ``reach`` from the word (a longer piece cannot be a dictionary entry).

    Both ends of the run; one character into it from the word, which may be a substituted letter
    (``2024$unshine``, ``20244dmin``); and the places where digits meet symbols (``2024!`` at 0,
    4 and 5, not inside ``2024``); the nearest the word (``end`` when ``from_end``) first.
    """
    near, far = (end, start) if from_end else (start, end)
    step = -1 if from_end else 1
    points = [near]
    if abs(far - near) > 1 and reach >= 1:
        points.append(near + step)
    bound = far if abs(far - near) <= reach else near + step * (reach + 1)
    for i in range(near + 2 * step, bound, step):
        if len(points) >= MAX_CUTS - 1:
            break
        if text[i - 1].isdigit() != text[i].isdigit():
            points.append(i)
    if far != near and abs(far - near) <= reach:
        points.append(far)
    return points


_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


def _core(text: str) -> tuple[int, int, bool]:
    """Where the word of ``text`` starts and ends, and whether it has letters: its first and
    last letter, or, in a password without letters (``!!123456!!``), its first and last digit;
    (0, len) if it has neither."""
    for pattern, letters in ((_LETTER, True), (_DIGIT, False)):
        first = pattern.search(text)
        last = pattern.search(text[::-1])  # the same text, read backwards
        if first is not None and last is not None:
            return first.start(), len(text) - last.start(), letters
    return 0, len(text), False


def forms(folded: str, longest: int | None = None) -> Iterator[str]:
    """The forms of a folded, trimmed password to look up in the dictionary, itself first.

    Pieces longer than ``longest`` (the longest entry) are left out: they cannot be listed.
    """
    yield folded
    text = without_invisible(folded)
    if text != folded:
        yield text
    n = len(text)
    first, last, letters = _core(text)
    # Every piece holds the whole word; what is left of ``longest`` may come from the runs.
    reach = (n if longest is None else longest) - (last - first)
    if reach < 0:
        return
    # The runs before the word and after it, cut nearest the word first.
    for start in _cuts(text, 0, first, from_end=True, reach=reach):
        for end in _cuts(text, last, n, from_end=False, reach=reach):
            if end - start < MIN_FORM or end - start - (last - first) > reach:
                continue
            # Substitutions are undone in words only: "2000" is a year, not "2ooo".
            spellings = _spellings(text[start:end], leet=letters)
            if start == 0 and end == n:
                next(spellings)  # the text as written, looked up already
            yield from spellings


def _spellings(piece: str, *, leet: bool) -> Iterator[str]:
    """``piece`` as written and, if ``leet``, with the substitutions undone (``1`` as i, as l)."""
    yield piece
    if not leet or _LEET_CHARS.isdisjoint(piece):
        return
    undone = piece.translate(_LEET)
    if "1" in undone:
        yield undone.translate(_ONE_AS_I)
        yield undone.translate(_ONE_AS_L)
    else:
        yield undone


def is_listed(folded: str, words: frozenset[str]) -> bool:
    """Whether a folded, trimmed password or one of its :func:`forms` is in ``words``."""
    return any(form in words for form in forms(folded, _longest(words)))


@functools.lru_cache(maxsize=8)
def _longest(words: frozenset[str]) -> int:
    # Once per dictionary (a frozenset keeps its hash, so the cache look-up is cheap).
    return max(map(len, words), default=0)
