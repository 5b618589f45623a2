"""User agents as a session hash stores them: the boilerplate of browsers' agents, a byte each.

A browser's user agent is mostly the same few phrases (``Mozilla/5.0 (``, ``) AppleWebKit/537.36
(KHTML, like Gecko) Chrome/``, `` Safari/537.36``...). Written as they come, a user's one agent
fills two of the session hash's 64-byte values and pushes a user holding one session into the
next allocation size (bench/README.md, "Redis memory per session"). Each phrase of :data:`TOKENS`
is written as one control character instead: the 111 characters of a Chrome on Windows agent
become 8 bytes. An agent with none of them is stored as it came.

Stored agents are printable text (``clean_text``), so control characters cannot be part of one;
a compacted agent starts with NUL, so an agent stored without compaction (by an earlier version,
perhaps with control characters from before values were cleaned) reads back as it was stored.
Like HPACK's static table, :data:`TOKENS` is append-only: a token's number, once released, means
that phrase in every stored agent.
"""

from __future__ import annotations

TOKENS = (
    # Longer phrases first where one contains another: compact() replaces in this order.
    ") AppleWebKit/537.36 (KHTML, like Gecko) Chrome/",
    ") AppleWebKit/605.1.15 (KHTML, like Gecko)",
    ") AppleWebKit/537.36 (KHTML, like Gecko)",
    "Mozilla/5.0 (",
    "Windows NT 10.0; Win64; x64",
    "Macintosh; Intel Mac OS X 10_15_7",
    "Macintosh; Intel Mac OS X ",
    "X11; Linux x86_64",
    "Linux; Android ",
    "iPhone; CPU iPhone OS ",
    "iPad; CPU OS ",
    " like Mac OS X",
    ".0.0.0 Mobile Safari/537.36",
    ".0.0.0 Safari/537.36",
    " Mobile Safari/537.36",
    " Safari/537.36",
    " Mobile/15E148 Safari/604.1",
    " Safari/605.1.15",
    " Version/",
    ") Gecko/20100101 Firefox/",
    "; rv:",
    " Edg/",
    " OPR/",
    " SamsungBrowser/",
    " CriOS/",
    " Firefox/",
    "Windows NT ",
)
assert len(TOKENS) <= 31  # the control characters U+0001..U+001F
assert all(token.isprintable() for token in TOKENS)

_MARK = "\x00"
_EXPAND = {index: token for index, token in enumerate(TOKENS, start=1)}


def compact(agent: str) -> str:
    """``agent`` (printable text) as stored: each known phrase as one control character."""
    compacted = agent
    for index, token in enumerate(TOKENS, start=1):
        compacted = compacted.replace(token, chr(index))
    return agent if compacted == agent else _MARK + compacted


def expand(stored: str) -> str:
    """The agent that :func:`compact` stored as ``stored`` (any other text unchanged)."""
    if not stored.startswith(_MARK):
        return stored
    return stored[1:].translate(_EXPAND)
