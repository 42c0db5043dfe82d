"""Rendering numpy columns as CSV bytes, without a Python loop per row.

The generator's rows become the bytes of a CSV block here; the same bytes go to the files and,
for the warehouse fast path, straight into COPY.
"""

from __future__ import annotations

import numpy as np


def vocab(values: list[str] | tuple[str, ...]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype="S")


def digits(numbers: np.ndarray, width: int, prefix: bytes = b"") -> np.ndarray:
    """Zero-padded decimal ``numbers`` (non-negative) as fixed-width bytes."""
    n = len(numbers)
    p = len(prefix)
    out = np.empty((n, p + width), np.uint8)
    if p:
        out[:, :p] = np.frombuffer(prefix, np.uint8)
    x = numbers.astype(np.int64, copy=True)
    for k in range(width - 1, -1, -1):
        out[:, p + k] = x % 10 + 48
        x //= 10
    return out.view(f"S{p + width}").ravel()


def ints(numbers: np.ndarray) -> np.ndarray:
    return numbers.astype(np.int64).astype("S12")


def csv_block(cols: list[np.ndarray]) -> bytes:
    """Rows of byte-string columns as CSV lines (values must not need quoting)."""
    n = len(cols[0])
    if n == 0:
        return b""
    cols = [np.ascontiguousarray(c) for c in cols]
    widths = [c.dtype.itemsize for c in cols]
    lens = [np.strings.str_len(c).astype(np.int64) for c in cols]
    last = len(cols) - 1
    if all(bool((ln == w).all()) for ln, w in zip(lens, widths, strict=True)):
        out = np.empty((n, sum(widths) + len(cols)), np.uint8)
        pos = 0
        for j, (c, w) in enumerate(zip(cols, widths, strict=True)):
            out[:, pos : pos + w] = c.view(np.uint8).reshape(n, w)
            out[:, pos + w] = 10 if j == last else 44
            pos += w + 1
        return out.tobytes()
    row_len = np.sum(lens, axis=0) + len(cols)
    ends = np.cumsum(row_len)
    out = np.empty(int(ends[-1]), np.uint8)
    pos = ends - row_len
    for j, (c, w, ln) in enumerate(zip(cols, widths, lens, strict=True)):
        if w:
            src = c.view(np.uint8).reshape(n, w)
            mask = np.arange(w) < ln[:, None]
            out[(pos[:, None] + np.arange(w))[mask]] = src[mask]
        pos = pos + ln
        out[pos] = 10 if j == last else 44
        pos = pos + 1
    return out.tobytes()
