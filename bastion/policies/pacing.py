"""Paced policy builds: a build that shares its process with requests gives the CPU back.

A reload builds in the watcher's thread while the same process serves requests. The GIL lets
one thread run Python at a time, and on a busy machine each slice the build takes is a slice a
request waits for; so the long loops of a build (the loader's lines, the engine's index) call
:func:`step`, which, inside :class:`paced` in that thread, sleeps ``rest`` seconds after every
``work`` seconds of building. Elsewhere (start-up, the CLI, tests) :func:`step` does nothing.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

__all__ = ["paced", "step"]

_here = threading.local()


class paced:
    """Within ``with paced(work, rest):`` this thread's builds rest ``rest`` s every ``work`` s."""

    def __init__(self, work: float, rest: float) -> None:
        self.work = work
        self.rest = rest
        self._count = 0
        self._since = 0.0

    def __enter__(self) -> paced:
        self._since = time.perf_counter()
        _here.pace = self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _here.pace = None

    def step(self) -> None:
        """Count one unit of work; rest when ``work`` seconds of it went by."""
        self._count += 1
        if self._count & 127:
            return
        now = time.perf_counter()
        if now - self._since >= self.work:
            time.sleep(self.rest)
            self._since = time.perf_counter()


def step() -> None:
    """One unit of a build's work (a line, a rule): a pause now and then when paced."""
    pace = getattr(_here, "pace", None)
    if pace is not None:
        pace.step()
