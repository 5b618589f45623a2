"""``./scripts/bench sessions --against REV``: Bastion's own work here beside revision REV's.

REV's tree is exported (``git archive``) to a temporary folder; one worker process per side
(:mod:`bench.against_worker`, the same measuring code) imports ``bastion`` from its own tree
through ``PYTHONPATH``. The parent starts one redis-server for all of them, a database each (used
only to make the credentials and record Redis's replies, never in the timed loops), then runs
rounds: in each round, row by row, every worker in turn (in a rotating order) times the same
requests. Times are the worker thread's CPU time (the timed loops do no I/O), so time the
scheduler gives to other processes does not count. Bastion's own work is a row minus the bare app
of the same round; ratios are taken within each round (this side / REV's side) and the median
over rounds is reported, so the VM's drift cancels out as in the session benchmark.

Sides: REV as it is; this tree with its defaults (redis-py's command path); this tree with
``redis_lean_reads = true``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "against_worker.py"
CREDENTIALS = {"session": "session cookie", "jwt": "JWT", "api_key": "API key"}
ROWS = [
    *(f"{stub}_{kind}" for kind in CREDENTIALS for stub in ("stubbed", "client")),
    "stubbed_guest",
]
LABELS = {
    **{f"stubbed_{kind}": f"{label}, Redis stubbed" for kind, label in CREDENTIALS.items()},
    **{
        f"client_{kind}": f"{label}, redis-py, conn. stubbed" for kind, label in CREDENTIALS.items()
    },
    "stubbed_guest": "guest (no credential)",
}
LIMIT = 1.10
"""Issue 10's bound: Bastion's own work (Redis stubbed) grows by no more than 10 %."""


class Side:
    """One worker process: a tree, settings, and its timings per row, one entry per round."""

    def __init__(
        self,
        name: str,
        tree: Path,
        settings: dict[str, Any],
        url: str,
        wrapper: list[str] | None = None,
    ) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
        config = json.dumps({"redis_url": url, "settings": settings, "collect": wrapper is None})
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, str(WORKER), config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),  # not this tree: its bastion must not shadow PYTHONPATH's
        )
        ready = self._ask(None)
        self.imported: str = ready["ready"]
        if not self.imported.startswith(str(tree)):
            raise SystemExit(f"{name}: imported {self.imported}, not from {tree}")
        self.rows: list[str] = ready["rows"]
        self.cpu: dict[str, list[float]] = {row: [] for row in self.rows}
        self.wall: dict[str, list[float]] = {row: [] for row in self.rows}

    def _ask(self, line: str | None) -> dict[str, Any]:
        if line is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        out: IO[str] | None = self.proc.stdout
        assert out is not None
        answer = out.readline()
        if not answer:
            raise SystemExit(f"{self.name}: the worker stopped (exit {self.proc.wait()})")
        return json.loads(answer)  # type: ignore[no-any-return]

    def record(self) -> None:
        """Record Redis's replies again (fresh "last seen": no request takes the touch path)."""
        self._ask("record 0")

    def run(self, row: str, requests: int, keep: bool = True) -> None:
        timing = self._ask(f"{row} {requests}")
        if keep:
            self.cpu[row].append(timing["cpu_us"])
            self.wall[row].append(timing["wall_us"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def own(self, row: str, index: int) -> float:
        """Bastion's own work in one round (CPU µs): the row minus the bare app of that round."""
        return self.cpu[row][index] - self.cpu["bare"][index]


def export(rev: str, into: Path) -> str:
    """REV's tree in ``into`` (nothing else of the repository changes); its short hash."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"git archive {rev} failed")
    return commit


def compare(rev: str, *, rounds: int, requests: int, warmup: int) -> dict[str, Any]:
    """Run the sides interleaved and summarize the ratios."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    folder = Path(tempfile.mkdtemp(prefix="bastion-against-"))
    server = RedisServer()
    sides: list[Side] = []
    try:
        commit = export(rev, folder)
        server.start()
        # A database per side: this tree moves sessions it meets in REV's older key layout into
        # its own, which REV could then no longer read.
        base = server.url.rsplit("/", 1)[0]
        sides = [
            Side(f"{commit} (REV)", folder, {}, f"{base}/0"),
            Side("this tree (default)", ROOT, {}, f"{base}/1"),
            Side("this tree, redis_lean_reads", ROOT, {"redis_lean_reads": True}, f"{base}/2"),
        ]
        rows = sides[0].rows
        for side in sides:
            side.record()
            for row in rows:
                side.run(row, warmup, keep=False)
        for index in range(rounds):
            for side in sides:
                side.record()
            # Row by row, every side in turn (the order rotating), so the two figures a ratio
            # compares are taken moments apart.
            for row in rows:
                shift = index % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    side.run(row, requests)
    finally:
        for side in sides:
            side.close()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    return summarize(rev, commit, sides, rounds=rounds, requests=requests, warmup=warmup)


def count(rev: str, *, requests: int) -> dict[str, Any]:
    """Instructions per request over the bare app, REV and this tree: valgrind's callgrind.

    A count does not depend on the machine's load, which a time does; it stands beside the
    timed ratios as their check. Each side's worker runs under callgrind, the counters zeroed
    before a row's command and dumped after it (``callgrind_control``); the two sides run at
    the same time. Stubbed rows only (the lean setting changes nothing there).
    """
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer

    folder = Path(tempfile.mkdtemp(prefix="bastion-count-"))
    server = RedisServer()
    sides: list[Side] = []
    try:
        tree = folder / "rev"
        tree.mkdir()
        commit = export(rev, tree)
        server.start()
        base = server.url.rsplit("/", 1)[0]
        outs: list[Path] = []
        for index, (name, where) in enumerate(
            [(f"{commit} (REV)", tree), ("this tree (default)", ROOT)]
        ):
            outs.append(folder / f"callgrind.{index}")
            wrapper = [
                "valgrind",
                "--quiet",
                "--tool=callgrind",
                f"--callgrind-out-file={outs[-1]}",
            ]
            sides.append(Side(name, where, {}, f"{base}/{index}", wrapper))
        rows = ["bare", *(row for row in ROWS if row.startswith("stubbed_"))]
        with concurrent.futures.ThreadPoolExecutor(len(sides)) as pool:
            work = [
                pool.submit(_count_rows, side, out, rows, requests)
                for side, out in zip(sides, outs, strict=True)
            ]
            counts = [done.result() for done in work]
    finally:
        for side in sides:
            side.close()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    own: dict[str, Any] = {}
    for row in rows[1:]:
        entry: dict[str, Any] = {
            side.name: round(done[row] - done["bare"])
            for side, done in zip(sides, counts, strict=True)
        }
        entry[f"ratio {sides[1].name} / REV"] = round(
            entry[sides[1].name] / entry[sides[0].name], 3
        )
        own[row] = entry
    return {
        "against": rev,
        "commit": commit,
        "python": sys.version.split()[0],
        "requests_per_row": requests,
        "sides": {side.name: side.imported for side in sides},
        "instructions_per_request": own,
    }


def _count_rows(side: Side, out: Path, rows: list[str], requests: int) -> dict[str, float]:
    """Instructions per request of each row, for one side under callgrind (dumps to ``out.N``)."""
    pid = str(side.proc.pid)  # valgrind runs the program in its own process
    side.record()
    for row in rows:
        side.run(row, 200, keep=False)  # warm: the first calls of each path do more
    counts: dict[str, float] = {}
    for row in rows:
        side.record()  # fresh "last seen" (callgrind is slow), and the collection
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
        side.run(row, requests, keep=False)
        subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
        counts[row] = _dumped_instructions(out) / requests
    return counts


def _dumped_instructions(out: Path) -> int:
    """The instruction total of the newest callgrind dump ``out.N``."""
    newest = max(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime_ns)
    for line in newest.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"{newest}: no instruction total")


def render_count(summary: dict[str, Any]) -> str:
    sides = list(summary["sides"])
    lines = [
        f"Instructions per request over the bare app (valgrind callgrind), this tree against"
        f" {summary['against']} ({summary['commit']}); {summary['requests_per_row']} requests"
        " per row",
        "",
        f"{'row':<34}" + "".join(f"{name[:28]:>30}" for name in sides),
    ]
    for row, entry in summary["instructions_per_request"].items():
        ratio = entry[f"ratio {sides[1]} / REV"]
        cells = [f"{entry[sides[0]]:,}", f"{entry[sides[1]]:,} ({ratio:.3f}x)"]
        lines.append(f"{LABELS[row]:<34}" + "".join(f"{cell:>30}" for cell in cells))
    return "\n".join(lines)


def summarize(
    rev: str, commit: str, sides: list[Side], *, rounds: int, requests: int, warmup: int
) -> dict[str, Any]:
    old, *new = sides
    rows: dict[str, Any] = {}
    for row in ROWS:
        entry: dict[str, Any] = {
            side.name: round(statistics.median(side.own(row, i) for i in range(rounds)), 2)
            for side in sides
        }
        for side in new:
            ratio = statistics.median(side.own(row, i) / old.own(row, i) for i in range(rounds))
            entry[f"ratio {side.name} / REV"] = round(ratio, 3)
        rows[row] = entry
    default = new[0].name
    # The verdict: the three credential kinds. The guest row is shown too, but its own work is
    # a few µs, so its ratio moves by several per cent between identical sides.
    worst = max(rows[f"stubbed_{kind}"][f"ratio {default} / REV"] for kind in CREDENTIALS)
    return {
        "against": rev,
        "commit": commit,
        "python": sys.version.split()[0],
        "rounds": rounds,
        "requests_per_round": requests,
        "warmup": warmup,
        "sides": {side.name: side.imported for side in sides},
        "own_work_us": rows,
        "limit": LIMIT,
        "worst_stubbed_ratio": worst,
        "within_limit": worst <= LIMIT,
    }


def render(summary: dict[str, Any]) -> str:
    sides = list(summary["sides"])
    lines = [
        f"Bastion's own work (CPU µs per request over the bare app, median over rounds), this tree"
        f" against {summary['against']} ({summary['commit']}); {summary['rounds']} interleaved"
        f" rounds x {summary['requests_per_round']} requests per row, one process per side",
        "",
        f"{'row':<34}" + "".join(f"{name[:28]:>30}" for name in sides),
    ]
    for row, entry in summary["own_work_us"].items():
        label = LABELS[row]
        cells = [f"{entry[sides[0]]:.2f}"]
        for name in sides[1:]:
            cells.append(f"{entry[name]:.2f} ({entry[f'ratio {name} / REV']:.3f}x)")
        lines.append(f"{label:<34}" + "".join(f"{cell:>30}" for cell in cells))
    verdict = "WITHIN" if summary["within_limit"] else "NOT within"
    lines += [
        "",
        "ratio: this side / REV, taken within each round, median over rounds",
        f"Redis stubbed (as ./scripts/bench measures Bastion's own work), session cookie, JWT"
        f" and API key, this tree's default:"
        f" worst ratio {summary['worst_stubbed_ratio']:.3f} -> {verdict} the"
        f" +{(summary['limit'] - 1) * 100:.0f} % bound",
    ]
    return "\n".join(lines)
