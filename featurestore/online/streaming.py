"""Send many commands on one Redis connection without redis-py's pipeline machinery.

`run_commands` sends a batch of commands in one write and reads their raw replies (per
entity a redis-py pipeline costs more in Python than the command costs in Redis).
`stream_commands` sends batches one after another and reads a batch's replies only after
the next batch is built and sent, so Redis runs one batch while Python builds the next. At
most two batches are in flight, so replies never fill the socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import hiredis
import redis
from redis._parsers import BaseParser
from redis.exceptions import ResponseError

T = TypeVar("T")


def stream_commands(client: redis.Redis[bytes], batches: Iterable[Sequence[bytes]]) -> list[Any]:
    """Send each batch of RESP-encoded commands in one write and read its replies only after
    the next batch is built and sent, so Redis runs one batch while Python builds the next (at
    most two in flight: replies never fill the socket). Replies that are Redis errors are
    returned as the exception; a lost connection raises."""
    replies: list[Any] = []
    in_flight = 0
    reader = _reader()  # one for the whole stream: a read may take in the next batch's replies
    with _borrowed(client) as conn:
        for batch in batches:
            conn.send_packed_command([b"".join(batch)], check_health=False)  # one write, not one per command
            if in_flight:
                replies.extend(_read(conn, in_flight, reader))
            in_flight = len(batch)
        replies.extend(_read(conn, in_flight, reader))
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
                replies = _read(conn, len(commands), _reader())
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
                replies = await _aread(conn, len(commands))
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


def _reader() -> hiredis.Reader:
    """A reply parser for `_read`; error replies become redis-py's exception for them."""
    return hiredis.Reader(replyError=BaseParser.parse_error, notEnoughData=_MORE)


def _read(conn: Any, n: int, reader: hiredis.Reader) -> list[Any]:
    """The next `n` replies on the connection, parsed by `reader` from as few socket reads as
    they arrive in (redis-py reads one reply per call, ~10 µs each). Bytes read beyond the
    n-th reply stay in `reader` for the next call."""
    sock = conn._sock  # connected: the commands were just sent on it
    buffer = bytearray(_CHUNK)
    out: list[Any] = []
    try:
        while _parsed(reader, out, n):
            got = sock.recv_into(buffer)
            if not got:
                raise redis.ConnectionError("Redis closed the connection")
            _feed(reader, buffer, got, out, n)
    except TimeoutError:
        raise redis.TimeoutError("Timeout reading replies from Redis") from None
    except (OSError, hiredis.ProtocolError) as exc:
        raise redis.ConnectionError(f"Error reading replies from Redis: {exc}") from None
    return out


async def _aread(conn: Any, n: int) -> list[Any]:
    """As `_read`, on an asyncio connection (its stream reader; the caller bounds the time)."""
    reader = _reader()
    out: list[Any] = []
    try:
        while _parsed(reader, out, n):
            data = await conn._reader.read(_CHUNK)
            if not data:
                raise redis.ConnectionError("Redis closed the connection")
            _feed(reader, data, len(data), out, n)
    except (OSError, hiredis.ProtocolError) as exc:
        raise redis.ConnectionError(f"Error reading replies from Redis: {exc}") from None
    return out


def _feed(reader: hiredis.Reader, data: bytes | bytearray, size: int, out: list[Any], n: int) -> None:
    """Give the first `size` bytes of `data` to `reader` a piece at a time (see `_PIECE`),
    moving whole replies to `out` until it holds `n`; all bytes are fed (those beyond the
    n-th reply belong to the next call)."""
    for at in range(0, size, _PIECE):
        reader.feed(data, at, min(_PIECE, size - at))  # type: ignore[arg-type]  # any buffer: its stub says bytes
        _parsed(reader, out, n)


def _parsed(reader: hiredis.Reader, out: list[Any], n: int) -> bool:
    """Move whole replies from `reader` to `out` until it holds `n`; whether more bytes are needed."""
    while len(out) < n:
        reply = reader.gets()
        if reply is _MORE:
            return True
        out.append(reply)
    return False


_MORE = object()
_CHUNK = 1 << 16
_PIECE = 1 << 13
"""Bytes fed to a reader at a time: each reply it returns moves the bytes after it to the front
of its buffer, so feeding a whole chunk of many replies would move it again and again."""
