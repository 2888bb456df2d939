"""Building many text lines at once with numpy: the fast path of the demo shop's JSON writer.

A line is a sequence of *segments*; each segment gives, for some rows, a byte matrix (one row of
bytes per line) and how many of its bytes to use. :meth:`Lines.build` lays every line out in one
``uint8`` buffer in a requested order, ``\\n``-terminated, with no Python object per line. Values
are rendered by :func:`hex_matrix`, :func:`decimal_matrix` and :func:`text_matrix`; callers are
responsible for JSON escaping (the demo shop only writes strings that need none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)
_POW10 = 10 ** np.arange(19, dtype=np.int64)
_NEWLINE = ord("\n")


def const(text: str) -> np.ndarray:
    """Returns the bytes of an ASCII constant as a 1-D uint8 array (broadcast over rows)."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8)


def hex_matrix(values: np.ndarray) -> np.ndarray:
    """Returns each uint64 as 16 lower-case hex digits (n x 16 uint8)."""
    values = np.asarray(values, dtype=np.uint64)
    return _HEX[((values[:, None] >> _HEX_SHIFTS) & np.uint64(15)).astype(np.intp)]


def decimal_matrix(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns non-negative integers as right-aligned decimal digits and their lengths."""
    values = np.asarray(values, dtype=np.int64)
    width = int(np.searchsorted(_POW10, max(int(values.max(initial=0)), 1), side="right"))
    digits = (values[:, None] // _POW10[width - 1 :: -1]) % 10 + ord("0")
    lengths = 1 + (values[:, None] >= _POW10[1:width]).sum(axis=1)
    return digits.astype(np.uint8), lengths


def two_digits(values: np.ndarray) -> np.ndarray:
    """Returns values 0..99 as two decimal digits (n x 2 uint8)."""
    values = np.asarray(values, dtype=np.int64)
    return (np.stack([values // 10, values % 10], axis=1) + ord("0")).astype(np.uint8)


def text_matrix(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Returns ASCII texts as a left-aligned, space-padded matrix and their lengths."""
    encoded = [t.encode("ascii") for t in texts]
    width = max((len(e) for e in encoded), default=1) or 1
    matrix = np.frombuffer(b"".join(e.ljust(width) for e in encoded), dtype=np.uint8).reshape(len(encoded), width)
    return matrix, np.array([len(e) for e in encoded], dtype=np.int64)


def columns(n: int, *parts: np.ndarray) -> np.ndarray:
    """Returns a fixed-width n-row matrix made of constants (1-D) and per-row matrices (2-D), side by side."""
    return np.concatenate([np.broadcast_to(p, (n, p.size)) if p.ndim == 1 else p for p in parts], axis=1)


@dataclass(frozen=True)
class _Segment:
    rows: np.ndarray | slice
    matrix: np.ndarray  # 1-D: the same bytes for every row; 2-D: one row per selected row
    lengths: np.ndarray | None  # None: the whole width
    right: bool


class Lines:
    """Collects the segments of ``n`` lines; :meth:`build` lays them out."""

    def __init__(self, n: int):
        self.n = n
        self._segments: list[_Segment] = []

    def add(
        self,
        matrix: np.ndarray,
        rows: np.ndarray | slice | None = None,
        lengths: np.ndarray | None = None,
        right: bool = False,
    ) -> None:
        """Appends a segment to the given rows (all by default); ``right``: use the last ``lengths`` bytes."""
        self._segments.append(_Segment(slice(None) if rows is None else rows, matrix, lengths, right))

    def build(self, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (buffer, end offset of each line) with the lines in ``order`` (a permutation of rows)."""
        size = np.ones(self.n, dtype=np.int64)  # the newline
        for seg in self._segments:
            size[seg.rows] += seg.matrix.shape[-1] if seg.lengths is None else seg.lengths
        ends = np.cumsum(size[order])
        total = int(ends[-1]) if self.n else 0
        # 32-bit offsets halve the memory traffic of the scatter, the bulk of the work.
        index = np.int32 if total < 2**31 else np.int64
        pos = np.empty(self.n, dtype=index)
        pos[order] = ends - size[order]
        buf = np.empty(total, dtype=np.uint8)
        for seg in self._segments:
            at = pos[seg.rows]
            width = seg.matrix.shape[-1]
            cols = np.arange(width, dtype=index)
            if seg.lengths is None:
                buf[at[:, None] + cols] = seg.matrix
                pos[seg.rows] += width
                continue
            lengths = seg.lengths.astype(index)[:, None]
            if seg.right:
                use = cols >= width - lengths
                dest = at[:, None] + cols - (width - lengths)
            else:
                use = cols < lengths
                dest = at[:, None] + cols
            buf[dest[use]] = (np.broadcast_to(seg.matrix, use.shape) if seg.matrix.ndim == 1 else seg.matrix)[use]
            pos[seg.rows] += seg.lengths
        buf[pos] = _NEWLINE
        return buf, ends
