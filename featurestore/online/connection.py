"""The online store's Redis: one server, or a Redis Cluster (detected, routed by key slot).

Every online command touches one key (an entity's value), so on a cluster a batch of commands
is split by the node that serves each key's slot (CRC16 of the key, as Redis computes it),
sent to each node in one write (`featurestore.online.streaming`), and the replies are put
back in order. The slot map comes from `CLUSTER SLOTS` of the node the URL names and is read
again when a node answers `MOVED` (slots moved, a failover); the commands it refused are
sent again (online commands are reads, or writes that are idempotent).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.crc import key_slot
from redis.exceptions import NoPermissionError, ResponseError

from featurestore.errors import StoreUnavailable
from featurestore.online.streaming import arun_commands, run_commands, stream_commands

#: A command for one key: (the key, the command as an argument tuple or RESP-encoded bytes).
Keyed = tuple[bytes, Any]
Node = tuple[str, int]
_SLOTS = 16384
_MOVED_RETRIES = 3


class _Routes:
    """A cluster's slot map and a client per primary (made like the seed client)."""

    def __init__(self, seed: Any, slots_reply: list[Any]) -> None:
        self.seed = seed
        self.lock = threading.Lock()
        self.clients: dict[Node, Any] = {}
        self.slots: list[Node] = []
        self.update(slots_reply)

    def update(self, slots_reply: list[Any]) -> None:
        slots: list[Node] = [("", 0)] * _SLOTS
        default_host = self.seed.connection_pool.connection_kwargs.get("host", "127.0.0.1")
        for start, end, primary, *_ in slots_reply:
            host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
            node = (host or default_host, int(primary[1]))
            slots[int(start) : int(end) + 1] = [node] * (int(end) - int(start) + 1)
        with self.lock:
            self.slots = slots

    def split(self, keys: Iterable[bytes]) -> dict[Node, list[int]]:
        """Positions of the keys each node serves."""
        out: dict[Node, list[int]] = {}
        slots = self.slots
        for i, key in enumerate(keys):
            node = slots[key_slot(key)]
            if not node[0]:
                raise redis.ConnectionError(f"no node of the Redis Cluster serves slot {key_slot(key)}: is the cluster complete?")
            out.setdefault(node, []).append(i)
        return out

    def client(self, node: Node) -> Any:
        with self.lock:
            got = self.clients.get(node)
            if got is None:
                pool = self.seed.connection_pool
                kwargs = dict(pool.connection_kwargs, host=node[0], port=node[1])
                got = self.clients[node] = type(self.seed)(connection_pool=type(pool)(connection_class=pool.connection_class,
                                                                                        **kwargs))
            return got

    def primaries(self) -> list[Node]:
        return list(dict.fromkeys(n for n in self.slots if n[0]))


def _single_server(exc: ResponseError) -> Any:
    """`CLUSTER SLOTS` failed: a server without cluster support is a single server; a user
    that may not run it is taken for one too (a cluster then answers MOVED, see `_check`)."""
    if isinstance(exc, NoPermissionError) or "cluster support disabled" in str(exc).lower():
        return None
    raise exc


def _check(replies: list[Any], raise_errors: bool = False) -> list[Any]:
    """Replies of a single server (an error reply raised with `raise_errors`); MOVED means it
    is a cluster node after all."""
    for reply in replies:
        if isinstance(reply, ResponseError) and str(reply).startswith("MOVED"):
            raise StoreUnavailable(
                "Redis answered MOVED: it is a node of a Redis Cluster, but this user may not run CLUSTER SLOTS "
                "to find the other nodes; grant it +cluster|slots (see docs/serving.md, Security)"
            ) from None
        if raise_errors and isinstance(reply, ResponseError):
            raise reply
    return replies


def _raised(replies: list[Any]) -> list[Any]:
    """The replies, the first error among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def _moved(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN"))


class OnlineRedis:
    """Runs batches of single-key commands on one Redis or across a cluster's nodes."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self._routes: _Routes | None = None
        self._checked = False

    @property
    def routes(self) -> _Routes | None:
        """The cluster routes, or None on a single server (asked once, when first needed)."""
        if not self._checked:
            try:
                slots = self.client.execute_command("CLUSTER SLOTS")
            except ResponseError as exc:
                slots = _single_server(exc)
            if slots is not None:
                self._routes = _Routes(self.client, slots)
            self._checked = True
        return self._routes

    @property
    def is_cluster(self) -> bool:
        return self.routes is not None

    def run(self, commands: Sequence[Keyed], raise_errors: bool = True) -> list[Any]:
        """The replies of the commands, in order; an error reply is raised (returned as the
        exception without `raise_errors`)."""
        routes = self.routes
        if routes is None:
            return _check(run_commands(self.client, [c for _, c in commands], raise_errors=False), raise_errors)
        replies = self._routed(commands, lambda client, part: run_commands(client, part, raise_errors=False))
        return _raised(replies) if raise_errors else replies

    def stream(self, batches: Iterable[Sequence[Keyed]]) -> list[Any]:
        """The replies of batches of commands sent one after another (Redis runs one batch while
        the next is built); error replies are returned as exceptions."""
        routes = self.routes
        if routes is None:
            return _check(stream_commands(self.client, ([c for _, c in batch] for batch in batches)))
        out: list[Any] = []
        for batch in batches:
            out += self._routed(batch, lambda client, part: stream_commands(client, [part]))
        return out

    def _routed(self, commands: Sequence[Keyed], send: Any) -> list[Any]:
        routes = self.routes
        assert routes is not None
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        for attempt in range(_MOVED_RETRIES + 1):
            by_node = routes.split(commands[i][0] for i in pending)
            for node, positions in by_node.items():
                got = send(routes.client(node), [commands[pending[p]][1] for p in positions])
                for p, reply in zip(positions, got):
                    replies[pending[p]] = reply
            moved = [i for i in pending if _moved(replies[i])]
            if not moved or attempt == _MOVED_RETRIES:
                break
            routes.update(self.client.execute_command("CLUSTER SLOTS"))
            pending = moved
        return replies

    def clients(self) -> list[redis.Redis[bytes]]:
        """A client of every primary (one client on a single server)."""
        routes = self.routes
        return [self.client] if routes is None else [routes.client(n) for n in routes.primaries()]

    def load_script(self, lua: str) -> str:
        """Load a script on every primary; its SHA1."""
        sha = ""
        for client in self.clients():
            sha = client.script_load(lua)
        return sha

    def scan(self, match: str, count: int = 1000) -> Iterator[bytes]:
        """Every key matching `match`, on every primary."""
        for client in self.clients():
            yield from client.scan_iter(match=match, count=count)

    def unlink(self, keys: Sequence[bytes]) -> int:
        """Unlink keys (one command per key on a cluster); how many existed."""
        if not keys:
            return 0
        if self.routes is None:
            return int(self.client.unlink(*keys))
        return sum(int(r) for r in self.run([(k, ("UNLINK", k)) for k in keys]))

    def close(self) -> None:
        if self._routes is not None:
            for client in self._routes.clients.values():
                client.close()


class AsyncOnlineRedis:
    """As OnlineRedis, reads only, over redis.asyncio clients (the HTTP server)."""

    def __init__(self, client: aioredis.Redis[bytes]) -> None:
        self.client = client
        self._routes: _Routes | None = None
        self._checked = False

    async def run(self, commands: Sequence[Keyed], raise_errors: bool = True) -> list[Any]:
        """As `OnlineRedis.run`."""
        if not self._checked:
            try:
                slots = await self.client.execute_command("CLUSTER SLOTS")
            except ResponseError as exc:
                slots = _single_server(exc)
            if slots is not None:
                self._routes = _Routes(self.client, slots)
            self._checked = True
        routes = self._routes
        if routes is None:
            return _check(await arun_commands(self.client, [c for _, c in commands], raise_errors=False), raise_errors)
        replies: list[Any] = [None] * len(commands)
        pending = list(range(len(commands)))
        for attempt in range(_MOVED_RETRIES + 1):
            for node, positions in routes.split(commands[i][0] for i in pending).items():
                got = await arun_commands(routes.client(node), [commands[pending[p]][1] for p in positions],
                                          raise_errors=False)
                for p, reply in zip(positions, got):
                    replies[pending[p]] = reply
            moved = [i for i in pending if _moved(replies[i])]
            if not moved or attempt == _MOVED_RETRIES:
                break
            routes.update(await self.client.execute_command("CLUSTER SLOTS"))
            pending = moved
        return _raised(replies) if raise_errors else replies

    async def aclose(self) -> None:
        if self._routes is not None:
            for client in self._routes.clients.values():
                await client.aclose()
