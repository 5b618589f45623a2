"""Throw-away Redis Cluster (3 masters, 3 replicas) and Sentinel set-ups on loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable

from tests.redis_server import RedisServer, free_port

START_WITHIN = 30.0
"""Seconds a whole cluster or sentinel set-up may take to come up before the fixture fails."""


def _ask(port: int, *command: str, timeout: float = 1.0) -> str:
    """One command through redis-cli (bounded); its output, '' if it did not answer."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (apt-get install -y redis-tools)")
    try:
        done = subprocess.run(
            [cli, "-h", "127.0.0.1", "-p", str(port), *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout


def wait_for(what: str, ready: Callable[[], bool], within: float = START_WITHIN) -> None:
    """Poll ``ready`` every 50 ms until it holds; RuntimeError naming ``what`` after ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready within {within:.0f} s")


class RedisCluster:
    """Six cluster-enabled redis-servers: 3 masters with one replica each, all slots covered."""

    def __init__(self) -> None:
        # The bus port is chosen too: port + 10000, redis' default, may not exist (> 65535).
        self.nodes = [
            RedisServer(
                extra=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    str(free_port()),
                    "--cluster-node-timeout",
                    "2000",
                )
            )
            for _ in range(6)
        ]

    @property
    def url(self) -> str:
        """A URL naming one node (any node will do: the client discovers the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def ports(self) -> list[int]:
        """Every node's port."""
        return [node.port for node in self.nodes]

    def start(self) -> RedisCluster:
        """Start the nodes, join them, and wait for cluster_state:ok on every node."""
        try:
            for node in self.nodes:
                node.start()
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is not installed (apt-get install -y redis-tools)")
            subprocess.run(
                [cli, "--cluster", "create"]
                + [f"127.0.0.1:{port}" for port in self.ports]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True,
                check=True,
                timeout=START_WITHIN,
            )
            wait_for(
                "Redis Cluster",
                lambda: all("cluster_state:ok" in _ask(p, "cluster", "info") for p in self.ports),
            )
            # Every replica must have finished its first sync, or a test may read stale roles.
            wait_for("Redis Cluster replicas", self._replicas_synced)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _replicas_synced(self) -> bool:
        links = [_ask(p, "info", "replication") for p in self.ports]
        replicas = [info for info in links if "role:slave" in info]
        return len(replicas) == 3 and all("master_link_status:up" in r for r in replicas)

    def masters(self) -> list[int]:
        """Ports of the nodes that are masters now."""
        return [p for p in self.ports if "role:master" in _ask(p, "info", "replication")]

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for port in self.masters():
            _ask(port, "flushall")

    def cleanup(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            node.cleanup()


class RedisSentinels:
    """One master, one replica and three sentinels watching them under the name ``bastion``."""

    name = "bastion"

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.master = RedisServer()
        self.replica = RedisServer(extra=("--replicaof", "127.0.0.1", str(self.master.port)))
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._down_after_ms = down_after_ms
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self._dirs: list[str] = []

    @property
    def sentinels(self) -> list[str]:
        """The sentinels as ``host:port`` (the form of ``redis_sentinels``)."""
        return [f"127.0.0.1:{port}" for port in self.sentinel_ports]

    def start(self) -> RedisSentinels:
        """Start master, replica and sentinels; wait until every sentinel knows the replica."""
        import tempfile
        from pathlib import Path

        try:
            self.master.start()
            self.replica.start()
            wait_for(
                "Sentinel replica",
                lambda: "master_link_status:up" in _ask(self.replica.port, "info", "replication"),
            )
            binary = RedisServer.binary()
            assert binary is not None
            for port in self.sentinel_ports:
                folder = tempfile.mkdtemp(prefix="bastion-sentinel-")
                self._dirs.append(folder)
                config = Path(folder) / "sentinel.conf"
                config.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                    f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                    f"sentinel down-after-milliseconds {self.name} {self._down_after_ms}\n"
                    f"sentinel failover-timeout {self.name} 5000\n"
                    f"sentinel parallel-syncs {self.name} 1\n"
                )
                self._sentinels.append(
                    subprocess.Popen(
                        [binary, str(config), "--sentinel"],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            wait_for("Sentinels", self._sentinels_see_all)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _sentinels_see_all(self) -> bool:
        for port in self.sentinel_ports:
            info = _ask(port, "info", "sentinel")
            if "slaves=1" not in info or "sentinels=3" not in info:
                return False
        return True

    def master_port(self) -> int:
        """The port the sentinels name as master now."""
        reply = _ask(
            self.sentinel_ports[0], "sentinel", "get-master-addr-by-name", self.name
        ).split()
        return int(reply[1])

    def cleanup(self) -> None:
        """Stop sentinels, master and replica."""
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._sentinels = []
        self.master.cleanup()
        self.replica.cleanup()
        for folder in self._dirs:
            shutil.rmtree(folder, ignore_errors=True)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
