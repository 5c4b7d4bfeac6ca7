import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from partopt.geometry import (Box, adaptive_window_1d, conv_window_1d, disjoint, ranges_from_counts,
                              split_proportional, subtract_all, union_volume)


def boxes(n=6, lim=8):
    coord = st.tuples(st.integers(0, lim), st.integers(0, lim)).map(sorted)
    return st.lists(st.tuples(coord, coord, coord).map(lambda t: Box(t[0][0], t[0][1], t[1][0], t[1][1], t[2][0], t[2][1])),
                    max_size=n)


def mask(bs, lim=8):
    m = np.zeros((lim, lim, lim), bool)
    for b in bs:
        if not b.empty:
            m[b.c0:b.c1, b.h0:b.h1, b.w0:b.w1] = True
    return m


@settings(max_examples=150, deadline=None)
@given(boxes())
def test_union_volume_matches_mask(bs):
    assert union_volume(bs) == mask(bs).sum()


@settings(max_examples=150, deadline=None)
@given(boxes(), boxes(3))
def test_disjoint_and_subtract_cover_exactly(bs, holes):
    d = disjoint(bs)
    assert sum(b.volume for b in d) == mask(bs).sum()          # pairwise disjoint
    assert (mask(d) == mask(bs)).all()
    rest = subtract_all(bs, holes)
    assert (mask(rest) == (mask(bs) & ~mask(holes))).all()
    assert sum(b.volume for b in rest) == mask(rest).sum()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), st.integers(1, 3), st.integers(0, 3), st.integers(1, 2), st.integers(0, 20),
       st.integers(1, 6))
def test_conv_window_is_the_receptive_field(k, s, p, d, lo, n):
    """The window holds exactly the input indices that the outputs [lo, lo+n) read."""
    read = {o * s - p + j * d for o in range(lo, lo + n) for j in range(k)}
    a, b = conv_window_1d(lo, lo + n, k, s, p, d)
    assert min(read) == a and max(read) == b - 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12), st.data())
def test_adaptive_window_is_union_of_bins(insize, outsize, data):
    lo = data.draw(st.integers(0, outsize - 1))
    hi = data.draw(st.integers(lo + 1, outsize))
    a, b = adaptive_window_1d(lo, hi, insize, outsize)
    starts = [(i * insize) // outsize for i in range(lo, hi)]
    ends = [-((-(i + 1) * insize) // outsize) for i in range(lo, hi)]
    assert (a, b) == (min(starts), max(ends))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), st.lists(st.floats(0.0, 100.0), min_size=1, max_size=9))
def test_split_proportional(n, w):
    if sum(w) <= 0:
        with pytest.raises(ValueError):
            split_proportional(n, w)
        return
    parts = split_proportional(n, w)
    assert sum(parts) == n and all(p >= 0 for p in parts)
    for p, wi in zip(parts, w):
        assert abs(p - n * wi / sum(w)) < 1 + 1e-9      # largest remainder: off by less than one


def test_box_basics():
    b = Box(0, 4, 0, 4, 0, 4)
    assert b.volume == 64 and not b.empty
    assert Box(0, 0, 0, 1, 0, 1).empty and Box(0, 0, 0, 1, 0, 1).volume == 0
    assert b.contains(Box(1, 2, 1, 2, 1, 2)) and not b.contains(Box(1, 5, 1, 2, 1, 2))
    assert sum(p.volume for p in b.subtract(Box(1, 2, 1, 2, 1, 2))) == 63
    assert Box.from_list(b.to_list()) == b
    assert ranges_from_counts([1, 2]) == [(0, 1), (1, 3)]
    with pytest.raises(ValueError):
        Box.from_list([1, 2, 3])
