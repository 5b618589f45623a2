"""User agents as stored: browsers' boilerplate a byte each, read back exactly as written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import Bastion
from bastion.cleantext import clean_text
from bastion.sessions import keys
from bastion.sessions.agents import TOKENS, compact, expand
from bastion.sessions.store import MAX_USER_AGENT

pytestmark = pytest.mark.anyio

BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 "
    "Safari/537.36 Edg/131.0.0.0",
]

# Printable text built from the table's phrases, their fragments and other characters, so
# that phrases overlap and abut in every way.
_pieces = st.sampled_from([*TOKENS, *(t[: len(t) // 2] for t in TOKENS), "Chrome/", ") ", "é"])
_agents = st.lists(st.one_of(_pieces, st.text(min_size=1, max_size=5)), max_size=12).map(
    lambda parts: clean_text("".join(parts), MAX_USER_AGENT)
)


@given(_agents)
def test_every_printable_agent_reads_back_as_written_and_never_grows(agent: str) -> None:
    stored = compact(agent)
    assert expand(stored) == agent
    assert len(stored.encode()) <= len(agent.encode())


@pytest.mark.parametrize("agent", BROWSERS)
def test_browsers_agents_shrink_to_a_few_bytes(agent: str) -> None:
    stored = compact(agent)
    assert expand(stored) == agent
    assert len(stored.encode()) <= 20 < len(agent), repr(stored)


def test_text_stored_without_compaction_reads_back_unchanged() -> None:
    # Agents written by earlier versions: plain text, control characters included (from before
    # values were cleaned); none starts with NUL, so none is taken for a compacted agent.
    for stored in ["curl/8.5.0", "old\x1b\x04agent", "\x05x", ""]:
        assert expand(stored) == stored
    assert compact("curl/8.5.0") == "curl/8.5.0"


async def test_a_session_keeps_its_browsers_agent_in_a_few_bytes(bastion: Bastion) -> None:
    first = await bastion.sessions.create("alice", ip="203.0.113.7", user_agent=BROWSERS[0])
    second = await bastion.sessions.create("alice", ip="203.0.113.8", user_agent=BROWSERS[0])
    await bastion.sessions.create("alice", user_agent=BROWSERS[3])
    assert first.session.user_agent == BROWSERS[0]
    listed = await bastion.sessions.list("alice")
    assert [s.user_agent for s in listed] == [BROWSERS[0], BROWSERS[0], BROWSERS[3]]
    assert [s.id for s in listed[:2]] == [first.session.id, second.session.id]
    stored = bastion.sync.redis.hgetall(keys.sessions("bastion", "alice"))
    agents = {f: v for f, v in stored.items() if f.startswith(b"a:")}
    # One entry per browser (the two sessions of the first share it), one piece each.
    assert sorted(agents) == [b"a:0:0", b"a:1:0"]
    assert agents[b"a:0:0"] == compact(BROWSERS[0]).encode() and len(agents[b"a:0:0"]) == 8
