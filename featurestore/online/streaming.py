"""Send many commands on one Redis connection without redis-py's pipeline machinery.

`run_commands` sends a batch of commands in one write and reads their raw replies (per
entity a redis-py pipeline costs more in Python than the command costs in Redis).
`stream_commands` sends batches one after another and reads a batch's replies only after
the next batch is built and sent, so Redis runs one batch while Python builds the next. At
most two batches are in flight, so replies never fill the socket.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import hiredis
import redis
from redis.exceptions import ResponseError

T = TypeVar("T")


def stream_commands(client: redis.Redis[bytes], batches: Iterable[Sequence[bytes]]) -> list[Any]:
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


def run_commands(client: redis.Redis[bytes], commands: Sequence[tuple[Any, ...] | bytes], raise_errors: bool = True) -> list[Any]:
    """Send commands (argument tuples, or already RESP-encoded) in one write on one
    connection and return their raw replies (no redis-py response callbacks: HGETALL gives
    a flat [field, value, ...] list). A reply that is a Redis error is raised (returned as
    the exception without `raise_errors`); a lost connection is retried once on a new one."""
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
            if raise_errors and isinstance(reply, ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


async def arun_commands(client: Any, commands: Sequence[tuple[Any, ...] | bytes], raise_errors: bool = True) -> list[Any]:
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
            if raise_errors and isinstance(reply, ResponseError):
                raise reply
        return replies
    raise AssertionError("unreachable")


def pack_command(args: Sequence[Any]) -> bytes:
    """One command in the Redis protocol (hiredis's encoder)."""
    command: Any = tuple(args)  # hiredis's annotation admits only 1-tuples; it packs any length
    packed: bytes = hiredis.pack_command(command)
    return packed


def _packed(commands: Sequence[tuple[Any, ...] | bytes]) -> bytes:
    return b"".join([c if isinstance(c, bytes) else pack_command(c) for c in commands])


async def _aread_one(conn: Any) -> Any:
    try:
        return await conn.read_response(timeout=math.inf)  # the caller's timeout covers every reply
    except ResponseError as exc:
        return exc


@contextmanager
def _borrowed(client: redis.Redis[bytes]) -> Iterator[Any]:
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
