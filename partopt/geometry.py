"""Boxes and receptive-field arithmetic: the one geometry every method uses.

An activation tensor is seen as a 3-D array (C, H, W) per batch element; a fully connected
activation of shape (N, F) is seen as (F, 1, 1). A :class:`Box` is a half-open range on each
axis. Windows (what an op needs from its input) may reach past the tensor's borders: that part
is padding, filled by the executor, never sent over a network.

Backward mapping of output rows [h0, h1) through a conv/pool with kernel k, stride s,
padding p, dilation d gives the input window::

    [h0 * s - p,  (h1 - 1) * s - p + (k - 1) * d + 1)

Example:
    >>> from partopt.geometry import Box, conv_window_1d
    >>> conv_window_1d(0, 4, kernel=3, stride=1, padding=1, dilation=1)
    (-1, 5)
    >>> Box(0, 2, 0, 4, 0, 4).intersect(Box(1, 3, 2, 6, 0, 4))
    Box(c0=1, c1=2, h0=2, h1=4, w0=0, w1=4)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True, order=True)
class Box:
    """Half-open box [c0, c1) x [h0, h1) x [w0, w1) over a (C, H, W) activation."""

    c0: int
    c1: int
    h0: int
    h1: int
    w0: int
    w1: int

    @staticmethod
    def full(shape: Sequence[int]) -> "Box":
        """The whole tensor of canonical shape (C, H, W)."""
        c, h, w = shape
        return Box(0, c, 0, h, 0, w)

    @property
    def empty(self) -> bool:
        return self.c1 <= self.c0 or self.h1 <= self.h0 or self.w1 <= self.w0

    @property
    def volume(self) -> int:
        """Number of elements per batch item (0 when empty)."""
        if self.empty:
            return 0
        return (self.c1 - self.c0) * (self.h1 - self.h0) * (self.w1 - self.w0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.c1 - self.c0, self.h1 - self.h0, self.w1 - self.w0)

    def intersect(self, other: "Box") -> "Box":
        return Box(max(self.c0, other.c0), min(self.c1, other.c1),
                   max(self.h0, other.h0), min(self.h1, other.h1),
                   max(self.w0, other.w0), min(self.w1, other.w1))

    def contains(self, other: "Box") -> bool:
        return other.empty or (self.c0 <= other.c0 and other.c1 <= self.c1 and self.h0 <= other.h0
                               and other.h1 <= self.h1 and self.w0 <= other.w0 and other.w1 <= self.w1)

    def hull(self, other: "Box") -> "Box":
        """Smallest box holding both (an empty box is ignored)."""
        if self.empty:
            return other
        if other.empty:
            return self
        return Box(min(self.c0, other.c0), max(self.c1, other.c1), min(self.h0, other.h0),
                   max(self.h1, other.h1), min(self.w0, other.w0), max(self.w1, other.w1))

    def subtract(self, other: "Box") -> list["Box"]:
        """Disjoint boxes covering self minus other (at most six)."""
        cut = self.intersect(other)
        if cut.empty:
            return [] if self.empty else [self]
        out = []
        c0, c1, h0, h1, w0, w1 = self.c0, self.c1, self.h0, self.h1, self.w0, self.w1
        if c0 < cut.c0:
            out.append(Box(c0, cut.c0, h0, h1, w0, w1))
        if cut.c1 < c1:
            out.append(Box(cut.c1, c1, h0, h1, w0, w1))
        c0, c1 = cut.c0, cut.c1
        if h0 < cut.h0:
            out.append(Box(c0, c1, h0, cut.h0, w0, w1))
        if cut.h1 < h1:
            out.append(Box(c0, c1, cut.h1, h1, w0, w1))
        h0, h1 = cut.h0, cut.h1
        if w0 < cut.w0:
            out.append(Box(c0, c1, h0, h1, w0, cut.w0))
        if cut.w1 < w1:
            out.append(Box(c0, c1, h0, h1, cut.w1, w1))
        return out

    def to_list(self) -> list[int]:
        return [self.c0, self.c1, self.h0, self.h1, self.w0, self.w1]

    @staticmethod
    def from_list(v: Sequence[int]) -> "Box":
        if len(v) != 6:
            raise ValueError(f"a box has 6 integers, got {list(v)}")
        return Box(*(int(x) for x in v))


def disjoint(boxes: Iterable[Box]) -> list[Box]:
    """Disjoint boxes covering the union of ``boxes`` (empty ones dropped)."""
    result: list[Box] = []
    for b in boxes:
        pieces = [] if b.empty else [b]
        for r in result:
            pieces = [q for p in pieces for q in p.subtract(r)]
            if not pieces:
                break
        result.extend(pieces)
    return result


def subtract_all(boxes: Iterable[Box], holes: Iterable[Box]) -> list[Box]:
    """Disjoint boxes covering union(boxes) minus union(holes)."""
    pieces = disjoint(boxes)
    for h in holes:
        pieces = [q for p in pieces for q in p.subtract(h)]
    return pieces


def union_volume(boxes: Iterable[Box]) -> int:
    """Number of elements in the union of boxes (coordinate compression, exact)."""
    bs = [b for b in boxes if not b.empty]
    if not bs:
        return 0
    if len(bs) == 1:
        return bs[0].volume
    axes = []
    for lo, hi in ((0, 1), (2, 3), (4, 5)):
        axes.append(sorted({v for b in bs for v in (b.to_list()[lo], b.to_list()[hi])}))
    grid = np.zeros([len(a) - 1 for a in axes], dtype=bool)
    for b in bs:
        idx = [int(np.searchsorted(axes[i // 2], v)) for i, v in enumerate(b.to_list())]
        grid[idx[0]:idx[1], idx[2]:idx[3], idx[4]:idx[5]] = True
    sizes = [np.diff(a) for a in axes]
    cell = sizes[0][:, None, None] * sizes[1][None, :, None] * sizes[2][None, None, :]
    return int((cell * grid).sum())


def conv_window_1d(lo: int, hi: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Input index window [a, b) needed for output indices [lo, hi) of a conv or pool.

    May reach below 0 or past the input size: that part is padding.
    """
    if hi <= lo:
        return (0, 0)
    return (lo * stride - padding, (hi - 1) * stride - padding + (kernel - 1) * dilation + 1)


def deconv_taps_1d(out: int, kernel: int, stride: int, padding: int, dilation: int, in_size: int) -> list[int]:
    """Input indices that transposed-conv output index ``out`` reads: ``i`` with
    ``i * stride - padding + k * dilation == out`` for some tap ``k``, inside the input."""
    taps = []
    for k in range(kernel):
        num = out + padding - k * dilation
        if num % stride == 0 and 0 <= num // stride < in_size:
            taps.append(num // stride)
    return taps


def deconv_window_1d(lo: int, hi: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple[int, int]:
    """Input window [a, b) a transposed conv reads for output indices [lo, hi) (may reach past
    the input: that part contributes nothing)."""
    if hi <= lo:
        return (0, 0)
    return (-((padding + (kernel - 1) * dilation - lo) // stride), (hi - 1 + padding) // stride + 1)


def upsample_window_1d(lo: int, hi: int, scale: int, in_size: int, mode: str) -> tuple[int, int]:
    """Input window [a, b) of nearest or bilinear (align_corners=False) upsampling by an
    integer ``scale``, for output indices [lo, hi)."""
    if hi <= lo:
        return (0, 0)
    if mode == "nearest":
        return (lo // scale, (hi - 1) // scale + 1)
    a, _, _ = bilinear_source_1d(lo, scale, in_size)
    _, b, _ = bilinear_source_1d(hi - 1, scale, in_size)
    return (a, b + 1)


def bilinear_source_1d(out: int, scale: int, in_size: int) -> tuple[int, int, float]:
    """The two input indices bilinear upsampling (align_corners=False) blends for output index
    ``out``, and the weight of the second, as PyTorch computes them."""
    src = max((out + 0.5) / scale - 0.5, 0.0)
    i0 = min(int(math.floor(src)), in_size - 1)
    i1 = min(i0 + 1, in_size - 1)
    return i0, i1, src - i0


def adaptive_window_1d(lo: int, hi: int, in_size: int, out_size: int) -> tuple[int, int]:
    """Input window [a, b) of adaptive pooling output indices [lo, hi) (PyTorch's bins)."""
    if hi <= lo:
        return (0, 0)
    return (math.floor(lo * in_size / out_size), math.ceil(hi * in_size / out_size))


def split_proportional(n: int, weights: Sequence[float]) -> list[int]:
    """Split ``n`` integer units in proportion to ``weights`` (largest remainder).

    >>> split_proportional(10, [1, 1, 2])
    [3, 2, 5]
    """
    total = float(sum(weights))
    if n < 0 or total <= 0 or any(w < 0 for w in weights):
        raise ValueError("split_proportional needs n >= 0 and non-negative weights with a positive sum")
    raw = [n * w / total for w in weights]
    base = [int(math.floor(r)) for r in raw]
    rest = n - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return base


def ranges_from_counts(counts: Sequence[int], start: int = 0) -> list[tuple[int, int]]:
    """Consecutive half-open ranges of the given lengths.

    >>> ranges_from_counts([2, 0, 3])
    [(0, 2), (2, 2), (2, 5)]
    """
    out, a = [], start
    for c in counts:
        out.append((a, a + c))
        a += c
    return out


def grid_boxes(shape: Sequence[int], rows: Sequence[int], cols: Sequence[int]) -> list[Box]:
    """Boxes of a rows x cols grid over a (C, H, W) map (all channels), row-major."""
    c = shape[0]
    return [Box(0, c, h0, h1, w0, w1)
            for (h0, h1), (w0, w1) in product(ranges_from_counts(rows), ranges_from_counts(cols))]
