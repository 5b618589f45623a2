"""Reload builds off the request path: no collector pauses, short GIL slices, paced, no leak."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import pytest

from bastion.policies import pacing
from bastion.policies.diagnostics import PolicyError
from bastion.policies.published import Bundle
from bastion.policies.watch import BUILD_SWITCH_INTERVAL, build_aside

POLICY = "p, users, notes/*, read\ng, user:alice, team:t\np, team:t, notes/x, update\n"


def test_a_replaced_engine_is_freed_without_the_cycle_collector() -> None:
    # build_aside freezes what is alive after a build: an engine in a reference cycle would
    # never be freed once replaced. Reference counting alone must free it.
    engine = Bundle(None, (("policy.csv", POLICY),)).engine()
    assert engine.decide(frozenset({"user:alice"}), "update", "notes/x").allowed
    gone = weakref.ref(engine)
    gc.disable()
    try:
        del engine
        assert gone() is None
    finally:
        gc.enable()


def test_build_aside_pauses_the_collector_and_restores_everything() -> None:
    seen: dict[str, Any] = {}

    def build() -> str:
        seen["collecting"] = gc.isenabled()
        seen["interval"] = sys.getswitchinterval()
        return "built"

    interval, frozen = sys.getswitchinterval(), gc.get_freeze_count()
    assert build_aside(build) == "built"
    assert seen == {"collecting": False, "interval": BUILD_SWITCH_INTERVAL}
    assert gc.isenabled() and sys.getswitchinterval() == interval
    assert gc.get_freeze_count() > frozen  # what was alive is frozen (never walked again)

    def broken() -> None:
        raise PolicyError("no")

    with pytest.raises(PolicyError):
        build_aside(broken)
    assert gc.isenabled() and sys.getswitchinterval() == interval


def test_a_paced_build_rests(monkeypatch: pytest.MonkeyPatch) -> None:
    rests: list[float] = []
    monkeypatch.setattr(pacing.time, "sleep", rests.append)
    text = "".join(f"p, user:u{i}, notes/n{i}, read\n" for i in range(5000))
    Bundle(None, (("policy.csv", text),)).engine()
    assert rests == []  # not paced: start-up, the CLI
    with pacing.paced(0.0, 0.001):
        Bundle(None, (("policy.csv", text),)).engine()
    # 5000 lines read and 5000 rules indexed, a look at the clock every 128 steps.
    assert len(rests) >= 70 and set(rests) == {0.001}
