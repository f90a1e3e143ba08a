"""Send many commands on one Redis connection without redis-py's pipeline machinery.

`run_commands` sends a batch of commands in one write and reads their raw replies (the read
path: per entity a pipeline costs more in redis-py than in Redis). `ScriptStream` runs many
calls of one Lua script, overlapping Python and Redis:

a redis-py pipeline builds every command, sends them, then waits for every reply, so
Python and Redis take turns; `ScriptStream` sends the calls in chunks and reads a chunk's
replies only after the next chunk has been built and sent: Redis runs one chunk while
Python builds the next. At most two chunks are in flight, so replies never fill the socket.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError

T = TypeVar("T")


@dataclass(frozen=True)
class EncodedArgs:
    """Arguments RESP-encoded once, to end many commands with (the same trailing arguments)."""

    count: int
    resp: bytes

    @classmethod
    def of(cls, args: Sequence[str | bytes]) -> EncodedArgs:
        if not args:
            return cls(0, b"")
        packed = pack_command(tuple(args))  # type: ignore[arg-type]
        return cls(len(args), packed[packed.index(b"\r\n") + 2 :])


def pack_with(args: tuple[Any, ...], tail: EncodedArgs) -> bytes:
    """The RESP encoding of the command `args` followed by the arguments of `tail`."""
    packed = pack_command(args)  # type: ignore[arg-type]
    return b"*%d\r\n%b%b" % (len(args) + tail.count, packed[packed.index(b"\r\n") + 2 :], tail.resp)


class ScriptStream:
    """Runs a registered Lua script over many (keys, args) calls, `chunk` calls per send."""

    def __init__(self, client: redis.Redis, lua: str, chunk: int = 1000) -> None:
        self.client = client
        self.lua = lua
        self.sha: str | None = None  # loaded on first use
        self.chunk = chunk

    def run(self, items: Sequence[T], call: Callable[[T], tuple[str, list[Any], EncodedArgs]]) -> list[Any]:
        """Replies of `call(item)` → (key, script arguments, further arguments already encoded)
        for every item, in order. A reply that is a Redis error is returned as the exception; a
        lost connection raises."""
        if self.sha is None:
            self.sha = self.client.script_load(self.lua)
        try:
            return self._run(items, call)
        except NoScriptError:  # Redis restarted or flushed its scripts: load again, run again
            self.sha = self.client.script_load(self.lua)
            return self._run(items, call)

    def _run(self, items: Sequence[T], call: Callable[[T], tuple[str, list[Any], EncodedArgs]]) -> list[Any]:
        sha = self.sha
        assert sha is not None
        batches = (
            [pack_with(("EVALSHA", sha, "1", key, *args), tail) for key, args, tail in map(call, chunk)]
            for chunk in _chunks(items, self.chunk)
        )
        replies = stream_commands(self.client, batches)
        for reply in replies:
            if isinstance(reply, NoScriptError):
                raise reply
        return replies


def stream_commands(client: redis.Redis, batches: Iterable[Sequence[bytes]]) -> list[Any]:
    """Send each batch of RESP-encoded commands in one write and read its replies only after
    the next batch is built and sent, so Redis runs one batch while Python builds the next (at
    most two in flight: replies never fill the socket). Replies that are Redis errors are
    returned as the exception; a lost connection raises."""
    replies: list[Any] = []
    in_flight = 0
    with _borrowed(client) as conn:
        for batch in batches:
            conn.send_packed_command([b"".join(batch)], check_health=False)  # one write, not one per command
            if in_flight:
                replies.extend(_read(conn, in_flight))
            in_flight = len(batch)
        replies.extend(_read(conn, in_flight))
    return replies


def run_commands(client: redis.Redis, commands: Sequence[tuple[Any, ...] | bytes]) -> list[Any]:
    """Send commands (argument tuples, or already RESP-encoded) in one write on one
    connection and return their raw replies (no redis-py response callbacks: HGETALL gives
    a flat [field, value, ...] list). A reply that is a Redis error is raised; a lost
    connection is retried once on a new one (reads only)."""
    packed = [_packed(commands)]
    for attempt in (1, 2):
        try:
            with _borrowed(client) as conn:
                conn.send_packed_command(packed, check_health=False)
                replies = _read(conn, len(commands))
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == 2:
                raise
            continue
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


async def arun_commands(client: Any, commands: Sequence[tuple[Any, ...] | bytes]) -> list[Any]:
    """As run_commands, over an asyncio client (`redis.asyncio.Redis`): one write, then the
    replies read under one timeout (redis-py's pipeline starts a timeout per reply)."""
    packed = [_packed(commands)]
    pool = client.connection_pool
    for attempt in (1, 2):
        conn = await pool.get_connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            async with asyncio.timeout(conn.socket_timeout):
                replies = [await _aread_one(conn) for _ in commands]
        except (redis.ConnectionError, redis.TimeoutError, TimeoutError):
            await conn.disconnect()
            if attempt == 2:
                raise
            continue
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


def _packed(commands: Sequence[tuple[Any, ...] | bytes]) -> bytes:
    return b"".join([c if isinstance(c, bytes) else pack_command(c) for c in commands])  # type: ignore[arg-type]


async def _aread_one(conn: Any) -> Any:
    try:
        return await conn.read_response(timeout=math.inf)  # the caller's timeout covers every reply
    except ResponseError as exc:
        return exc


@contextmanager
def _borrowed(client: redis.Redis) -> Iterator[Any]:
    """A connection of the client's pool, disconnected if the body fails: unread replies
    would answer the next user's commands."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _read(conn: Any, n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(conn.read_response())
        except ResponseError as exc:
            out.append(exc)
    return out


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
