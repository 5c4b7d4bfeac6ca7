"""The one cost model: FLOPs of a region, compute time, transfer time, weight bytes.

Every method, every solver and :func:`partopt.plan.evaluate` use these functions, so a gap
between a heuristic and an exact model is never an artefact of two cost models.

Formulas (batch N, an output region of V elements per batch item, float32 = 4 bytes):

- conv: ``2 * (C_in_used / groups_in_region) * kh * kw * V * N`` FLOPs (2 x MACs; the bias
  add is not counted). A partial-sum conv over input channels [a, b) uses ``b - a``.
- linear: ``2 * F_in * V * N``; batch norm: ``2 * V * N``; element-wise activation and add:
  ``V * N`` (an add of two tensors); max/avg pool: ``kh * kw * V * N``; adaptive average
  pool: the sum of its bins' sizes; element-wise product (a gate): ``V * N``; transposed
  conv: ``2 * C_in * (taps that land on the region) * N`` per output channel, counted exactly
  per output row and column; bilinear upsampling: 7 per output element (four weighted taps);
  flatten, dropout, concat, channel slice and shuffle, zero padding, nearest upsampling: 0.
- compute time (s) of a device = the sum over op kinds (:func:`rate_kind`) of the kind's FLOPs /
  the device's FLOP/s for that kind (``Device.rate``; its ``flops_per_s`` unless the cluster
  file gives one per kind), plus the cluster's ``task_overhead_s`` per task it runs and its
  ``stage_overhead_s`` once if it runs any.
- transfer time (s) = latency_s + bytes / bandwidth (bytes/s) of the ordered pair.
- weights a device holds for an op (bytes): the union of the weight slices its tasks touch
  (conv: output-channel rows x input-channel columns of W plus those bias entries; batch norm:
  4 vectors over its channels; linear: rows of W and bias), each counted once per device.

Example:
    >>> from partopt.cost import transfer_time
    >>> round(transfer_time(1_000_000, bandwidth_bytes_per_s=10e6, latency_s=0.002), 6)
    0.102
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from .geometry import Box, adaptive_window_1d, deconv_taps_1d, union_volume

if TYPE_CHECKING:
    from .cluster import Device
    from .graph import Op


def rate_kind(op: "Op") -> str:
    """The compute-rate kind of ``op`` (a key of :data:`partopt.cluster.RATE_KINDS`): the
    device's FLOP/s for that kind prices the op's FLOPs. Ops without FLOPs map to ``eltwise``."""
    k = op.kind
    if k == "conv":
        return "dwconv" if op.groups > 1 and op.groups == op.in_chw[0] else "conv"
    if k in ("deconv", "linear"):
        return k
    if k in ("maxpool", "avgpool", "adaptive_avgpool"):
        return "pool"
    return "eltwise"


def region_flops(op: "Op", box: Box, in_channels: Optional[tuple[int, int]] = None) -> int:
    """FLOPs to compute ``box`` of ``op``'s output (whole batch)."""
    v = box.volume
    if v == 0:
        return 0
    n = op.batch
    k = op.kind
    if k == "conv":
        kh, kw = op.kernel
        if in_channels is not None:
            cin_used = in_channels[1] - in_channels[0]
            return 2 * cin_used * kh * kw * v * n
        cin = op.in_chw[0]
        return 2 * (cin // op.groups) * kh * kw * v * n
    if k == "linear":
        return 2 * op.in_chw[0] * v * n
    if k == "bn":
        return 2 * v * n
    if k == "act":
        return v * n
    if k == "add":
        return (len(op.inputs) - 1) * v * n
    if k in ("maxpool", "avgpool"):
        return op.kernel[0] * op.kernel[1] * v * n
    if k == "adaptive_avgpool":
        _, ih, iw = op.in_chw
        _, oh, ow = op.out_chw
        hs = sum(b - a for a, b in (adaptive_window_1d(i, i + 1, ih, oh) for i in range(box.h0, box.h1)))
        ws = sum(b - a for a, b in (adaptive_window_1d(j, j + 1, iw, ow) for j in range(box.w0, box.w1)))
        return (box.c1 - box.c0) * hs * ws * n
    if k == "mul":
        return v * n
    if k == "upsample":
        return 7 * v * n if op.mode == "bilinear" else 0
    if k == "deconv":
        return deconv_flops(op, range(box.h0, box.h1), range(box.w0, box.w1), box.c1 - box.c0)
    return 0  # flatten, dropout, concat, slice, shuffle, pad move no arithmetic


def deconv_flops(op: "Op", rows: Iterable[int], cols: Iterable[int], channels: int) -> int:
    """FLOPs of a transposed conv's output ``rows`` x ``cols`` (any sets of indices) over
    ``channels`` output channels: 2 x input channels per tap that lands there (whole batch)."""
    _, ih, iw = op.in_chw
    th = sum(len(deconv_taps_1d(i, op.kernel[0], op.stride[0], op.padding[0], op.dilation[0], ih)) for i in rows)
    tw = sum(len(deconv_taps_1d(j, op.kernel[1], op.stride[1], op.padding[1], op.dilation[1], iw)) for j in cols)
    return 2 * op.in_chw[0] * th * tw * channels * op.batch


def weight_bytes(op: "Op", rects: Iterable[tuple[int, int, int, int]]) -> int:
    """Bytes of ``op``'s parameters a device holds, given the (c_out0, c_out1, c_in0, c_in1)
    slices its tasks use; overlapping slices are counted once."""
    rects = [r for r in rects if r[1] > r[0] and r[3] > r[2]]
    if not rects or op.param_bytes == 0:
        return 0
    e = op.elem_bytes
    if op.kind in ("conv", "deconv"):       # deconv: groups=1, the same (out, in) slices of W
        kh, kw = op.kernel
        cin_g = op.in_chw[0] // op.groups
        if op.groups == 1:
            area = union_volume(Box(a, b, c, d, 0, 1) for a, b, c, d in rects)
        else:  # each output channel has cin/groups weights; slicing inputs is a groups=1 notion
            area = union_volume(Box(a, b, 0, 1, 0, 1) for a, b, _, _ in rects) * cin_g
        bias = union_volume(Box(a, b, 0, 1, 0, 1) for a, b, _, _ in rects) if op.bias else 0
        return (area * kh * kw + bias) * e
    if op.kind == "linear":
        rows = union_volume(Box(a, b, 0, 1, 0, 1) for a, b, _, _ in rects)
        return (rows * op.in_chw[0] + (rows if op.bias else 0)) * e
    if op.kind == "bn":
        chans = union_volume(Box(a, b, 0, 1, 0, 1) for a, b, _, _ in rects)
        return min(op.param_bytes, 4 * chans * e)
    return 0


def compute_time(device: "Device", flops_by_kind, tasks: int = 0, task_overhead_s: float = 0.0,
                 stage_overhead_s: float = 0.0) -> float:
    """Seconds ``device`` computes ``flops_by_kind`` ((kind, FLOPs) pairs or a mapping) in
    ``tasks`` tasks of one stage: each kind's FLOPs over the device's FLOP/s for it, plus
    ``tasks`` x ``task_overhead_s``, plus ``stage_overhead_s`` if ``tasks`` >= 1. Every
    schedule and exact model prices compute with this rule."""
    return device.seconds(flops_by_kind) + tasks * task_overhead_s + (stage_overhead_s if tasks else 0.0)


def transfer_time(nbytes: float, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Seconds for one message of ``nbytes`` bytes: latency + bytes / bandwidth."""
    return latency_s + nbytes / bandwidth_bytes_per_s
