"""Vectorised byte building: whole columns of RESP and protobuf bytes at once.

A row's bytes are assembled from pieces: fixed-width NumPy byte matrices (a template, the
values written into it, and a mask of the bytes a row does not use, removed in one boolean
take) and Arrow binary arrays for the variable-length parts. :func:`assemble` concatenates
the pieces row by row into one Arrow ``large_binary`` array, one value per row, whose data
buffer is the bytes to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

CRLF = b"\r\n"
EMPTY = pa.scalar(b"", pa.large_binary())


@dataclass(slots=True)
class Short:
    """Sparse cells that hold fewer bytes: from ``offset`` in the field, only ``keep``."""

    rows: npt.NDArray[np.intp]
    fields: npt.NDArray[np.intp]  # which field of the piece, per cell
    offset: int
    keep: bytes


@dataclass(slots=True)
class Mat:
    """A fixed-width slot per row (``fields`` equal sub-slots): template, writes, holes.

    Every row starts as ``template``. Each ``(offset, values)`` in ``writes`` overwrites bytes
    from ``offset``: ``values`` is ``(n, k)``, or ``(n, fields, k)`` written at ``offset`` in
    every field. ``mask`` (dense) or ``short`` (sparse cells) drops unused bytes, which the
    final compaction removes.
    """

    template: U8  # (w,), w = fields * field width
    lengths: I64 | int  # bytes used per row
    writes: tuple[tuple[int, U8], ...] = ()
    mask: Mask | None = None  # (n, w)
    short: Short | None = None
    fields: int = 1


@dataclass(slots=True)
class Var:
    """Variable-length bytes per row (an Arrow array without nulls)."""

    array: pa.LargeBinaryArray


Piece = Mat | Var


@dataclass(slots=True)
class Payload:
    """The pieces of one serialised value per row, and its length per row."""

    pieces: list[Piece]
    lengths: I64


def const(data: bytes) -> Mat:
    return Mat(np.frombuffer(data, dtype=np.uint8), len(data))


def dense(data: U8, mask: Mask | None, lengths: I64 | int) -> Mat:
    return Mat(np.zeros(data.shape[1], dtype=np.uint8), lengths, ((0, data),), mask)


def binary_from(offsets: I64, data: npt.NDArray[Any], n: int) -> pa.LargeBinaryArray:
    return cast(
        pa.LargeBinaryArray,
        pa.LargeBinaryArray.from_buffers(
            pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        ),
    )


def offsets_of(lengths: I64) -> I64:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def flatten(group: Sequence[Mat], n: int) -> pa.LargeBinaryArray:
    """Concatenate matrix pieces row by row into one binary array (one value per row)."""
    template = np.concatenate([piece.template for piece in group])
    width = len(template)
    out = np.empty((n, width), dtype=np.uint8)
    out[:] = template
    masked = any(
        piece.mask is not None or (piece.short is not None and len(piece.short.rows))
        for piece in group
    )
    mask = np.ones((n, width), dtype=np.bool_) if masked else None
    lengths = np.zeros(n, dtype=np.int64)
    constant = 0
    col = 0
    for piece in group:
        w = len(piece.template)
        stride = w // piece.fields
        for offset, values in piece.writes:
            if values.ndim == 3:  # one value per field: a strided view of every field
                cells = np.ndarray(
                    (n, piece.fields, stride), np.uint8, out, col, (width, stride, 1)
                )
                cells[:, :, offset : offset + values.shape[2]] = values
            else:
                out[:, col + offset : col + offset + values.shape[1]] = values
        if piece.mask is not None and mask is not None:
            mask[:, col : col + w] = piece.mask
        short = piece.short
        if short is not None and len(short.rows) and mask is not None:
            start = col + short.fields * stride + short.offset
            rows = short.rows[:, None]
            if short.keep:
                kept = start[:, None] + np.arange(len(short.keep))
                out[rows, kept] = np.frombuffer(short.keep, dtype=np.uint8)
            dropped = np.arange(stride - short.offset - len(short.keep))
            mask[rows, (start + len(short.keep))[:, None] + dropped] = False
        if isinstance(piece.lengths, int):
            constant += piece.lengths
        else:
            lengths += piece.lengths
        col += w
    lengths += constant
    flat = out.reshape(-1) if mask is None else out[mask]
    offsets = offsets_of(lengths)
    if len(flat) != offsets[-1]:  # a corrupt RESP stream would stall Redis: fail here instead
        raise AssertionError(f"encoded {len(flat)} bytes, expected {offsets[-1]}")
    return binary_from(offsets, flat, n)


def assemble(pieces: Sequence[Piece], n: int) -> pa.LargeBinaryArray:
    """Concatenate pieces row by row: consecutive matrices in NumPy, the rest in Arrow."""
    parts: list[pa.LargeBinaryArray] = []
    group: list[Mat] = []
    for piece in pieces:
        if isinstance(piece, Mat):
            group.append(piece)
            continue
        if group:
            parts.append(flatten(group, n))
            group = []
        parts.append(piece.array)
    if group:
        parts.append(flatten(group, n))
    if not parts:
        return binary_from(np.zeros(n + 1, dtype=np.int64), np.zeros(0, np.uint8), n)
    if len(parts) == 1:
        return parts[0]
    return cast(pa.LargeBinaryArray, pc.binary_join_element_wise(*parts, EMPTY))


def payload_bytes(array: pa.LargeBinaryArray) -> memoryview:
    """The contiguous data bytes of a (possibly sliced) large binary array."""
    n = len(array)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1, offset=array.offset * 8)
    if buffers[2] is None:
        return memoryview(b"")
    return memoryview(buffers[2])[int(offsets[0]) : int(offsets[-1])]


def row_lengths(array: pa.LargeBinaryArray) -> I64:
    n = len(array)
    offsets = np.frombuffer(
        array.buffers()[1], dtype=np.int64, count=n + 1, offset=array.offset * 8
    )
    return np.diff(offsets)


_VARINT_SHIFTS = np.arange(0, 70, 7, dtype=np.uint64)
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_VARINT_COLS = np.arange(10)


def varint(values: npt.NDArray[Any]) -> tuple[U8, Mask, I64]:
    """Protobuf varints of int64 values (negatives as 10-byte two's complement)."""
    v = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    nbytes = 1 + (v[:, None] >= _VARINT_LIMITS[None, :]).sum(axis=1)
    data = ((v[:, None] >> _VARINT_SHIFTS[None, :]) & np.uint64(0x7F)).astype(np.uint8)
    data |= np.where(_VARINT_COLS[None, :] < (nbytes - 1)[:, None], 0x80, 0).astype(np.uint8)
    mask = _VARINT_COLS[None, :] < nbytes[:, None]
    return data, mask, nbytes.astype(np.int64)


def decimal(values: I64) -> Mat:
    """ASCII decimal digits of non-negative integers (right-aligned, leading bytes masked)."""
    n = len(values)
    if n == 0:
        return const(b"")
    low, high = int(values.min()), int(values.max())
    if low == high:
        return const(str(low).encode())
    width = len(str(high))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((values[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8)
    ndigits = 1 + (values[:, None] >= powers[None, :-1]).sum(axis=1) if width > 1 else None
    if ndigits is None:
        return dense(digits, None, 1)
    mask = np.arange(width)[None, :] >= (width - ndigits)[:, None]
    return dense(digits, mask, ndigits.astype(np.int64))


def bulk_string(pieces: Sequence[Piece], lengths: I64) -> list[Piece]:
    """RESP bulk string around a payload: ``$<len>\\r\\n<payload>\\r\\n``."""
    return [const(b"$"), decimal(lengths), const(CRLF), *pieces, const(CRLF)]


def header_matrix(
    tag: bytes, length_values: npt.NDArray[Any], present: Mask
) -> tuple[Mat, I64, I64]:
    """``tag + varint(length)`` per row (masked out where not present).

    Returns the matrix piece, the varint sizes and the header length per row (0 if absent).
    """
    data, vmask, nbytes = varint(length_values)
    n = len(length_values)
    t = len(tag)
    out = np.empty((n, t + 10), dtype=np.uint8)
    out[:, :t] = np.frombuffer(tag, dtype=np.uint8)
    out[:, t:] = data
    mask = np.empty((n, t + 10), dtype=np.bool_)
    mask[:, :t] = present[:, None]
    mask[:, t:] = vmask & present[:, None]
    lengths = np.where(present, t + nbytes, 0).astype(np.int64)
    return dense(out, mask, lengths), nbytes, lengths
