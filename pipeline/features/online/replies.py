"""Reading the fast writer's pipelined replies in bulk: its one thin raw path.

redis-py's ``Connection.read_response`` costs about 0.9 us per reply (10,000 ``HSET``
replies in 9 ms, measured here with hiredis installed). A 100,000-row materialisation reads
200,000 replies (one ``HMGET`` of the stored event time and one ``HSET`` per row), about
0.18 s of a 1.2 s call: through ``read_response`` the writer measured 58,000-75,000 rows/s
against 80,000-82,000 on the raw path in the same session (``benchmarks/materialize.py``).
So the two reply shapes it reads by the ten thousand are read here from the socket that
redis-py connected (TLS, ``AUTH`` and ``SELECT`` done by redis-py):

* single-line replies (``HSET``, ``EXPIRE``: integers, or errors) are counted by their line
  ends, and only error lines are looked at;
* ``HMGET`` of one field: when every reply is a nil (a fresh load) one bytes comparison
  settles it, otherwise hiredis parses them.

Everything else (connecting, commands, cluster slots, the reader's pipelines) is redis-py's.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.connection import Connection

CRLF = b"\r\n"
NIL_ARRAY_1 = b"*1\r\n$-1\r\n"  # HMGET of one field that is not there


class ReplyStreamError(ConnectionError):
    """The socket closed, timed out or sent what no command asked for."""


def _socket(connection: Connection) -> Any:
    # redis-py keeps the connected (possibly TLS) socket here; nothing public exposes it.
    sock = connection._sock
    if sock is None:
        raise ReplyStreamError(f"not connected to {connection.host}:{connection.port}")
    return sock


def _receive(connection: Connection, buffer: bytearray) -> memoryview:
    try:
        size = _socket(connection).recv_into(buffer)
    except OSError as error:
        raise ReplyStreamError(f"Redis {connection.host}:{connection.port}: {error}") from error
    if size == 0:
        raise ReplyStreamError(f"Redis {connection.host}:{connection.port} closed the connection")
    return memoryview(buffer)[:size]


def count_lines(connection: Connection, count: int) -> list[str]:
    """Read ``count`` single-line replies; returns the error messages among them.

    Raises:
        ReplyStreamError: The connection failed, or more bytes came than ``count`` replies
            (the stream is out of step: the caller must close the connection).
    """
    chunk = bytearray(1 << 20)
    data = bytearray()
    seen = 0
    while seen < count:
        scanned = max(len(data) - 1, 0)
        data += _receive(connection, chunk)
        seen += data.count(CRLF, scanned)
    if seen > count or not data.endswith(CRLF):
        raise ReplyStreamError("more replies than commands: the stream is out of step")
    if b"-" not in data:
        return []
    return [
        line[1:].decode("utf8", "replace") for line in data.split(CRLF) if line.startswith(b"-")
    ]


def first_fields(connection: Connection, count: int) -> list[Any] | None:
    """Read ``count`` ``HMGET key field`` replies: the field of each (``None`` for nil), or
    ``None`` when every reply is nil. Error replies come back as ``hiredis.ReplyError``."""
    chunk = bytearray(1 << 20)
    expected = NIL_ARRAY_1 * count
    data = bytearray()
    while len(data) < len(expected) and data == expected[: len(data)]:
        data += _receive(connection, chunk)
    if data == expected:
        return None
    reader = hiredis.Reader()
    reader.feed(bytes(data))
    values: list[Any] = []
    while len(values) < count:
        reply = reader.gets()
        if reply is False:
            reader.feed(bytes(_receive(connection, chunk)))
            continue
        values.append(reply if isinstance(reply, hiredis.ReplyError) else (reply or [None])[0])
    if reader.gets() is not False:
        raise ReplyStreamError("more replies than commands: the stream is out of step")
    return values
