"""Commands of many entities on one Redis, or routed to the nodes of a Redis Cluster.

Every online command touches one key (an entity hash), so on a cluster a batch of commands
is split by the node that serves each key's slot (CRC16 of the key, as Redis computes it),
sent to each node in one write, and the replies put back in order. The slot map is read
with `CLUSTER SLOTS` from the node the URL names and read again when a node answers
`MOVED` (slots migrated, failover).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import ResponseError

#: A command for one key: (the key, the command: an argument tuple, or RESP-encoded bytes).
Keyed = tuple[bytes, "tuple[Any, ...] | bytes"]


def is_cluster(client: redis.Redis) -> bool:
    """Whether the server is a node of a Redis Cluster (`cluster_enabled:1`)."""
    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except ResponseError:  # a server without the section (or a proxy): not a cluster
        return False


class ClusterRoutes:
    """The cluster's slot map and one client per primary node (sync or asyncio, made by
    `make_client(host, port)` with the settings' credentials and TLS)."""

    def __init__(self, seed: redis.Redis, make_client: Callable[[str, int], Any]) -> None:
        self.seed = seed
        self.make_client = make_client
        self._lock = threading.Lock()
        self._slots: list[tuple[str, int]] = []
        self._clients: dict[tuple[str, int], Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """Read the slot map again (from the seed node)."""
        slots: list[tuple[str, int]] = [("", 0)] * 16384
        for start, end, primary, *_ in self.seed.execute_command("CLUSTER SLOTS"):
            host, port = primary[0], int(primary[1])
            host = host.decode() if isinstance(host, bytes) else host
            if not host:  # a node that does not know its address: the one we asked
                host = self.seed.connection_pool.connection_kwargs.get("host", "127.0.0.1")
            for slot in range(int(start), int(end) + 1):
                slots[slot] = (host, port)
        with self._lock:
            self._slots = slots

    def node_of(self, key: bytes) -> tuple[str, int]:
        node = self._slots[key_slot(key)]
        if not node[0]:
            raise redis.ConnectionError(f"no node of the Redis Cluster serves slot {key_slot(key)}")
        return node

    def client(self, node: tuple[str, int]) -> Any:
        with self._lock:
            got = self._clients.get(node)
            if got is None:
                got = self._clients[node] = self.make_client(*node)
            return got

    def split(self, commands: Sequence[Keyed]) -> dict[tuple[str, int], list[int]]:
        """The positions of the commands each node serves."""
        by_node: dict[tuple[str, int], list[int]] = {}
        for i, (key, _) in enumerate(commands):
            by_node.setdefault(self.node_of(key), []).append(i)
        return by_node

    def clients(self) -> list[Any]:
        """A client of every primary (for commands that go to all of them: SCAN, SCRIPT LOAD)."""
        return [self.client(node) for node in dict.fromkeys(n for n in self._slots if n[0])]

    def close(self) -> None:
        for client in self._clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # an asyncio client closes with aclose(); nothing to do here
                    pass
