"""Policy reloads: a published version, changed files, or a reload announced over Redis.

Where the policy comes from: a version published to Redis (``bastion policy publish``,
:mod:`bastion.policies.published`) wins over the local files whenever Redis holds one; the local
files are the policy of a single host that publishes none (and of every worker until its first
check reads Redis). While a published version is in force, a change to the local files is
logged and ignored.

A reload builds the new engine aside (parse, lint, self-check) and swaps it in with one
assignment; a broken file or version is logged (file:line) and never replaces the policy in
force. Announcements bump a version number in Redis that every worker polls, so a worker that
was briefly disconnected still sees it (pub/sub would drop it).

A build runs in the watcher's thread, off the request path, but in the same process: it holds
the GIL between switches and allocates about a million objects for 100k rules. Measured on a
2-core VM (bench/reload.py), the cycle collector then made full passes over every object of the
process, 250-390 ms each, three times per build, with every request stalled behind them. So
:func:`build_aside` builds with the collector paused and then freezes what is alive
(``gc.freeze``: the collector never walks those objects again), asks for GIL switches every
0.5 ms instead of 5 ms, and paces the build (:mod:`bastion.policies.pacing`: 1 ms of work, 1 ms
of rest), which doubles its time and keeps a cheap route's p99 within twice its usual value
(figures in bench/README.md). The engine holds no reference cycle, so a replaced one is
freed by reference counting, frozen or not; what freezing costs is the cyclic garbage of the
rest of the process not yet collected at that moment (a young-generation pass runs first), which
is never collected.

Building a watcher does no Redis I/O (``Bastion(...)`` must not): the announced version is first
read by the first check, made as soon as the watcher starts. That check cannot tell whether a
version it finds was announced before or after the policy was loaded, so it reloads once if
there is one: a spare rebuild, in the watcher's thread, rather than a worker that keeps a policy
another worker was told to drop.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from bastion.policies.diagnostics import PolicyError
from bastion.policies.holder import PolicyHolder
from bastion.policies.pacing import paced
from bastion.policies.published import PolicyVersions, announce_key
from bastion.redisio import OutageLog
from bastion.settings import Settings

logger = logging.getLogger("bastion.policy")

T = TypeVar("T")

BUILD_SWITCH_INTERVAL = 0.0005
"""Seconds between GIL switches while a policy builds (CPython's default is 0.005)."""
BUILD_WORK, BUILD_REST = 0.001, 0.001
"""A build rests BUILD_REST seconds after each BUILD_WORK seconds (bastion.policies.pacing)."""

_building = threading.Lock()


def build_aside(build: Callable[[], T], *, pace: bool = True) -> T:
    """Run ``build`` paced, without cycle-collector pauses, with short GIL slices (see above)."""
    with _building, paced(BUILD_WORK if pace else float("inf"), BUILD_REST):
        collecting = gc.isenabled()
        interval = sys.getswitchinterval()
        if collecting:
            gc.collect(1)  # the young garbage now, so little is frozen below
            gc.disable()
        sys.setswitchinterval(min(interval, BUILD_SWITCH_INTERVAL))
        freeze = False
        try:
            result = build()
            # An engine Casbin's Enforcer serves (a model the index cannot) holds reference
            # cycles: frozen, it would never be freed once replaced.
            freeze = getattr(result, "is_indexed", True)
        finally:
            sys.setswitchinterval(interval)
            if collecting:
                if freeze:
                    gc.freeze()
                gc.enable()
        return result


def suites_beside(policy_files: tuple[str, ...]) -> list[str]:
    """The YAML test suites next to the policy files; a reload must pass them too."""
    found: list[str] = []
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f)) for f in policy_files):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        found += [
            os.path.join(folder, n) for n in names if n.endswith((".test.yaml", "_test.yaml"))
        ]
    return found


def load_holder(settings: Settings) -> PolicyHolder:
    """The policy of these settings, built, linted and self-tested; ``PolicyError`` if broken."""
    if not settings.authorization:
        return PolicyHolder()  # nothing is authorized: no files to read, nothing to test
    return PolicyHolder.from_files(
        settings.policy_model, settings.policy_files, suites=suites_beside(settings.policy_files)
    )


def version_key(settings: Settings) -> str:
    """The Redis key whose value changes whenever a reload is announced or a version published."""
    return announce_key(settings.key_prefix)


_UNREAD = b"\x00unread"  # no version is this: every one announced is a decimal number


class PolicyWatcher:
    """Polls the policy files and the announced version; reloads when either changes."""

    def __init__(
        self,
        holder: PolicyHolder,
        settings: Settings,
        client: Any,
        outages: OutageLog | None = None,
    ) -> None:
        self.holder = holder
        # A Redis outage is logged with the requests' failures (a few lines, not one a check).
        self.outages = outages if outages is not None else OutageLog()
        self.settings = settings
        self.client = client
        self.versions = PolicyVersions(client, settings.key_prefix)
        self.published: int | None = None
        """The published version in force, or None while the local files are."""
        self.build_aside: Callable[[Callable[[], Any]], Any] = build_aside
        """How a build is run (bench/reload.py compares it with a plain call)."""
        # The files' signature now, when the holder has just read them; Redis waits (see above).
        self._files = self._signature()
        self._version: bytes | None = _UNREAD
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        paths = [*self.settings.policy_files]
        if self.settings.policy_model:
            paths.append(self.settings.policy_model)
        found = []
        for path in paths:
            try:
                stat = os.stat(path)
                found.append((path, stat.st_mtime_ns, stat.st_size))
            except OSError:
                found.append((path, -1, -1))
        return tuple(found)

    def _announced(self) -> bytes | None:
        try:
            value = self.client.get(version_key(self.settings))
        except RedisError as exc:  # a Redis outage must not stop file reloads
            self.outages.failed(exc)
            return self._version
        if self.outages.failing:
            self.outages.succeeded()
        return bytes(value) if value is not None else None

    def check_now(self) -> bool:
        """Reload if the files or the announced version changed; True when a new policy is in.

        The first check reloads if any version was ever announced (see the module docstring).
        """
        files, version = self._signature(), self._announced()
        previous, files_changed = self._version, files != self._files
        self._files, self._version = files, version
        announced = version is not _UNREAD and (
            version is not None if previous is _UNREAD else version != previous
        )
        if announced:
            return self.reload()
        if not files_changed:
            return False
        if self.published is not None:
            logger.warning(
                "the local policy files changed, but the published policy version %d stays in "
                "force (publish the files to use them: bastion policy publish)",
                self.published,
            )
            return False
        return self.reload_files()

    def reload(self) -> bool:
        """Swap in the version published in Redis, or rebuild from the local files without one.

        On any error (Redis, a broken file or version) the current policy stays.
        """
        try:
            number = self.versions.current()
            if number is None:
                return self.reload_files()
            if number == self.published:
                return False
            bundle = self.versions.bundle(number)
        except RedisError as exc:
            logger.warning("cannot read the published policy: %s", exc)
            return False
        if bundle is None:
            logger.error(
                "published policy version %d has no stored text; keeping the current", number
            )
            return False
        try:
            engine = self.build_aside(bundle.engine)
        except PolicyError as exc:
            logger.error(
                "published policy version %d refused, keeping the current policy: %s", number, exc
            )
            return False
        self.holder.replace(engine)
        self.published = number
        logger.info("published policy version %d in force: %d rules", number, len(engine.rules))
        return True

    def reload_files(self) -> bool:
        """Build the local files' policy aside and swap it in; on any error keep the current one."""
        suites = suites_beside(self.settings.policy_files)
        try:
            engine = self.build_aside(lambda: self.holder.build(suites=suites))
        except PolicyError as exc:
            logger.error("policy reload refused, keeping the current policy: %s", exc)
            return False
        self.holder.replace(engine)
        self.published = None
        logger.info("policy reloaded: %d rules", len(engine.rules))
        return True

    @property
    def running(self) -> bool:
        """Whether the polling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Poll every ``policy_reload_interval`` seconds in a daemon thread (not after stop)."""
        interval = self.settings.policy_reload_interval
        if interval <= 0 or self._thread is not None or self._stop.is_set():
            return
        self._thread = threading.Thread(
            target=self._loop, args=(interval,), name="bastion-policy-watch", daemon=True
        )
        self._thread.start()

    def _loop(self, interval: float) -> None:
        # The first check at once: a published version replaces the local files within ms.
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # the watcher must outlive any surprise; the old policy stays
                logger.exception("policy watcher error")
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        """Stop polling for good, waiting (at most 5 s) for a check in progress to finish."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                logger.warning("the policy watcher is still busy after 5 s; it stops after it")
            self._thread = None


def announce(settings: Settings, client: Any) -> int:
    """Tell every worker to reload its policy now; returns the new version number."""
    return int(client.incr(version_key(settings)))
