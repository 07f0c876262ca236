"""Real Redis topologies on loopback for tests: a Sentinel-watched master with a replica, and a Redis Cluster.

Each is started from ``redis-server`` processes on free ports (``redis-server --sentinel`` for the sentinels,
``--cluster-enabled yes`` for cluster nodes), keeps nothing on disk beyond a temporary directory, and is stopped by
:meth:`close`. The binary is the one :func:`~livedata_core.redis_io.server.find_redis_server` picks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..redis_io.server import find_redis_server, free_port, terminate
from ..redis_io.topology import RedisTopology

__all__ = ["LocalCluster", "SentinelSet", "redis_version", "topology_skip_reason"]

SERVICE = "mymaster"
CLUSTER_SLOTS = 16384


def redis_version(binary: str | None = None) -> tuple[int, ...]:
    """The version of ``binary`` (default: the ``redis-server`` tests use), ``()`` if unknown."""
    import re

    binary = binary or find_redis_server()
    if binary is None:
        return ()
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(p) for p in match.groups()) if match else ()


def topology_skip_reason(kind: str) -> str | None:
    """Why a ``sentinel`` or ``cluster`` cannot be started here, or ``None`` when it can."""
    binary = find_redis_server()
    if binary is None:
        return "no redis-server found"
    version = redis_version(binary)
    if kind == "cluster" and version < (7,):
        shown = ".".join(map(str, version)) or "unknown"
        return f"a cluster with sharded pub/sub needs Redis 7 or newer; the redis-server here ({binary}) is {shown}"
    return None


class _Node:
    """One redis-server process (a data node or a sentinel) with its own config file."""

    def __init__(self, binary: str, directory: Path, lines: list[str], sentinel: bool = False) -> None:
        self.binary = binary
        self.port = free_port()
        self.sentinel = sentinel
        self.dir = directory / str(self.port)
        self.dir.mkdir()
        self.conf = self.dir / "redis.conf"
        base = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}", "loglevel warning", "daemonize no"]
        if not sentinel:
            base += ['save ""', "appendonly no"]
        self.conf.write_text("\n".join(base + lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, str(self.conf)] + (["--sentinel"] if self.sentinel else [])
        with open(self.dir / "out.log", "wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = (self.dir / "out.log").read_text(errors="replace")[-800:]
                raise RuntimeError(f"redis-server {' '.join(args)} exited at start: {output}")
            try:
                if self.command(b"PING") == b"+PONG\r\n":
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def command(self, *words: bytes) -> bytes:
        """Send one inline command and return the raw reply's first read (enough for short replies)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b" ".join(words) + b"\r\n")
            return s.recv(65536)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        terminate(self.proc)


class SentinelSet:
    """A master, one replica and three sentinels watching them as ``mymaster``, all on 127.0.0.1.

    ``topology(**options)`` gives the :class:`RedisTopology` to use; ``kill_master()`` SIGKILLs the master;
    ``wait_for_promotion()`` waits until the sentinels name another master and returns its port.
    """

    def __init__(self, down_after_ms: int = 1000) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server found")
        self._dir = Path(tempfile.mkdtemp(prefix="livedata-sentinel-"))
        self.master = _Node(binary, self._dir, [])
        self.replica = _Node(binary, self._dir, [f"replicaof 127.0.0.1 {self.master.port}"])
        monitor = [
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
            f"sentinel failover-timeout {SERVICE} 10000",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        self.sentinels = [_Node(binary, self._dir, monitor, sentinel=True) for _ in range(3)]

    def start(self) -> "SentinelSet":
        self.master.start()
        self.replica.start()
        deadline = time.monotonic() + 15
        while b"master_link_status:up" not in self.replica.command(b"INFO", b"replication"):
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync with the master within 15s")
            time.sleep(0.05)
        for sentinel in self.sentinels:
            sentinel.start()
        # Sentinels find the replica and each other through the master: wait until each knows both.
        deadline = time.monotonic() + 20
        for sentinel in self.sentinels:
            while True:
                info = sentinel.command(b"INFO", b"sentinel")
                if b"slaves=1,sentinels=3" in info:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentinel {sentinel.port} did not see the replica and the others: {info!r}")
                time.sleep(0.1)
        return self

    @property
    def sentinel_addresses(self) -> tuple[str, ...]:
        return tuple(s.address for s in self.sentinels)

    def topology(self, **options: object) -> RedisTopology:
        """The topology of this set; ``options`` as :class:`RedisTopology` (``wait_replicas``...)."""
        return RedisTopology("redis://127.0.0.1/0", sentinels=self.sentinel_addresses, service=SERVICE, **options)  # type: ignore[arg-type]

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers says, or ``None``."""
        import redis

        for sentinel in self.sentinels:
            try:
                client = redis.Redis(port=sentinel.port, socket_timeout=1, decode_responses=True)
                try:
                    address = client.sentinel_get_master_addr_by_name(SERVICE)
                finally:
                    client.close()
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def kill_master(self) -> int:
        """SIGKILL the current master; returns its port."""
        port = self.master_port()
        node = self.master if port == self.master.port else self.replica
        node.kill()
        return node.port

    def wait_for_promotion(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until the sentinels name a master other than ``old_port`` that answers as master; its port."""
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old_port:
                try:
                    client = redis.Redis(port=port, socket_timeout=1)
                    try:
                        if client.execute_command("ROLE")[0] == b"master":
                            return port
                    finally:
                        client.close()
                except redis.RedisError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"no replica was promoted within {timeout}s")

    def close(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class LocalCluster:
    """A Redis Cluster of ``masters`` master nodes (no replicas) on 127.0.0.1, slots split evenly."""

    def __init__(self, masters: int = 3, node_timeout_ms: int = 2000) -> None:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("no redis-server found")
        self._dir = Path(tempfile.mkdtemp(prefix="livedata-cluster-"))
        # cluster-port: a bus port of its own, not port + 10000 (which may be taken, or past 65535)
        self.bus_ports = [free_port() for _ in range(masters)]
        self.nodes = [
            _Node(binary, self._dir, ["cluster-enabled yes", "cluster-config-file nodes.conf",
                                      f"cluster-node-timeout {node_timeout_ms}", f"cluster-port {bus}"])
            for bus in self.bus_ports
        ]

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        import redis

        for node in self.nodes:
            node.start()
        share = CLUSTER_SLOTS // len(self.nodes)
        for i, node in enumerate(self.nodes):
            first = i * share
            last = CLUSTER_SLOTS - 1 if i == len(self.nodes) - 1 else first + share - 1
            client = redis.Redis(port=node.port)
            try:
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
                for other, bus in zip(self.nodes, self.bus_ports):
                    if other is not node:
                        client.execute_command("CLUSTER MEET", "127.0.0.1", other.port, bus)
            finally:
                client.close()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while b"cluster_state:ok" not in node.command(b"CLUSTER", b"INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not come up within {timeout}s")
                time.sleep(0.1)
        # Every node must know every other before clients read the slot map.
        for node in self.nodes:
            while node.command(b"CLUSTER", b"NODES").count(b" connected") < len(self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster nodes did not all meet within {timeout}s")
                time.sleep(0.1)
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def topology(self, **options: object) -> RedisTopology:
        """The topology of this cluster (seeded by every node); ``options`` as :class:`RedisTopology`."""
        return RedisTopology(self.url, cluster=True, nodes=tuple(n.address for n in self.nodes[1:]), **options)  # type: ignore[arg-type]

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
