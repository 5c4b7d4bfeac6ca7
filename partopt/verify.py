"""Execute a plan with real torch ops and compare with the unsplit model.

Each device keeps only what it computed or received. For every stage, the plan's transfers
are carried out literally (the sender must hold the box it sends; the bytes that move are the
sliced tensors' bytes), then each task assembles the input regions its cone needs from its
own pieces and what it received, and runs every op of its block on exact regions: convs and
pools get their windows with zero (or, for max pooling, -inf) padding only where the window
leaves the tensor, channel slices of the real weights, partial sums over input-channel ranges
(summed with the bias by whoever reads them). The assembled output is compared with
``module(x)``.

``max_rel_err`` is ``max |out - ref| / max |ref|`` (normalised by the reference's largest
magnitude, which element-wise relative error near zero would not be). A plan passes when
``max_rel_err <= 1e-4``, every transfer moved exactly its planned bytes, and no device lacked
data.

Example:
    >>> import torch
    >>> from partopt.zoo import load_model, example_input
    >>> from partopt.graph import LayerGraph
    >>> from partopt.cluster import preset
    >>> from partopt.methods.baselines import coedge
    >>> net, shape, _ = load_model("lenet5"); x = example_input(shape)
    >>> g = LayerGraph.from_module(net, x)
    >>> sol = coedge(g, preset("pi4x2"), model="lenet5")
    >>> verify(sol.plan, net, x, g).ok
    True
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cluster import Cluster
from .geometry import Box, adaptive_window_1d, bilinear_source_1d
from .graph import LayerGraph, Op
from .plan import Plan, Transfer, cone, validate

REL_TOL = 1e-4


@dataclass
class Verification:
    """Outcome of executing a plan: errors against the unsplit model and the bytes that moved."""

    ok: bool
    max_abs_err: float
    max_rel_err: float
    bytes_moved: int
    bytes_planned: int
    link_bytes: dict[str, int] = field(default_factory=dict)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``ok`` under ``verified`` (the key ``solve --json`` and ``run --json``
        use for the same fact)."""
        d = asdict(self)
        d["verified"] = d.pop("ok")
        return d


class _Missing(Exception):
    """A device lacks data the plan says it has (reported as a failed verification)."""


@dataclass
class _Piece:
    device: str
    box: Box
    data: torch.Tensor  # (N, c, h, w) for box
    partial: bool = False


def _as4d(t: torch.Tensor) -> torch.Tensor:
    return t if t.dim() == 4 else t.reshape(t.shape[0], t.shape[1], 1, 1)


def _slice(data: torch.Tensor, have: Box, box: Box) -> torch.Tensor:
    """The part ``box`` of ``data``, which holds ``have`` (box must lie inside have)."""
    return data[:, box.c0 - have.c0:box.c1 - have.c0, box.h0 - have.h0:box.h1 - have.h0,
                box.w0 - have.w0:box.w1 - have.w0]


def take(data: torch.Tensor, have: Box, win: Box, full: Box, fill: float) -> torch.Tensor:
    """Window ``win`` of a tensor of extent ``full``, from ``data`` holding ``have``; the part
    of the window outside ``full`` is padding filled with ``fill``."""
    inner = win.intersect(full)
    if inner.empty:  # the whole window is padding: no data needed
        return data.new_full((data.shape[0], win.c1 - win.c0, win.h1 - win.h0, win.w1 - win.w0), fill)
    if not have.contains(inner):
        raise _Missing(f"window {win.to_list()} not inside the held region {have.to_list()}")
    if inner == win:
        return data if have == win else _slice(data, have, win)
    out = data.new_full((data.shape[0], win.c1 - win.c0, win.h1 - win.h0, win.w1 - win.w0), fill)
    out[:, inner.c0 - win.c0:inner.c1 - win.c0, inner.h0 - win.h0:inner.h1 - win.h0,
        inner.w0 - win.w0:inner.w1 - win.w0] = _slice(data, have, inner)
    return out


def _grouped_conv(op: Op, x: torch.Tensor, x_c0: int, w: torch.Tensor, b: Optional[torch.Tensor],
                  c0: int, c1: int) -> torch.Tensor:
    """Output channels [c0, c1) of a grouped conv from input ``x`` whose channel 0 is ``x_c0``."""
    cout, cin = op.out_chw[0], op.in_chw[0]
    og, ig = cout // op.groups, cin // op.groups
    outs, c = [], c0
    while c < c1:
        g = c // og
        if c == g * og and c1 >= (g + 1) * og:       # a run of whole groups: one grouped call
            gl = c1 // og
            xs = x[:, g * ig - x_c0:gl * ig - x_c0]
            outs.append(F.conv2d(xs, w[c:gl * og], None if b is None else b[c:gl * og], op.stride, 0,
                                 op.dilation, gl - g))
            c = gl * og
        else:                                          # part of one group
            e = min(c1, (g + 1) * og)
            xs = x[:, g * ig - x_c0:(g + 1) * ig - x_c0]
            outs.append(F.conv2d(xs, w[c:e], None if b is None else b[c:e], op.stride, 0, op.dilation, 1))
            c = e
    return torch.cat(outs, 1)


def _counts(lo: int, hi: int, k: int, s: int, p: int, size: int, include_pad: bool) -> torch.Tensor:
    """Per output index in [lo, hi): how many window positions count in the average."""
    out = []
    for i in range(lo, hi):
        a, b = i * s - p, i * s - p + k
        lo_ok, hi_ok = (-p, size + p) if include_pad else (0, size)
        out.append(max(0, min(b, hi_ok) - max(a, lo_ok)))
    return torch.tensor(out, dtype=torch.float32)


def _upsample_region(x: torch.Tensor, win: Box, box: Box, scale: tuple[int, int], in_hw: tuple[int, int],
                     mode: str) -> torch.Tensor:
    """Rows and columns ``box`` of an upsampled map from the input window ``x`` (holding ``win``),
    index by index as PyTorch computes them (nearest: ``i // scale``; bilinear with
    align_corners=False: two taps blended, :func:`partopt.geometry.bilinear_source_1d`)."""
    if mode == "nearest":
        rows = torch.tensor([i // scale[0] - win.h0 for i in range(box.h0, box.h1)], dtype=torch.long)
        cols = torch.tensor([j // scale[1] - win.w0 for j in range(box.w0, box.w1)], dtype=torch.long)
        return x.index_select(2, rows).index_select(3, cols)

    def blend(t: torch.Tensor, dim: int, lo: int, hi: int, s: int, size: int, off: int) -> torch.Tensor:
        src = [bilinear_source_1d(i, s, size) for i in range(lo, hi)]
        a = t.index_select(dim, torch.tensor([i0 - off for i0, _, _ in src], dtype=torch.long))
        b = t.index_select(dim, torch.tensor([i1 - off for _, i1, _ in src], dtype=torch.long))
        lam = torch.tensor([w for _, _, w in src], dtype=t.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = len(src)
        lam = lam.reshape(shape)
        return a * (1 - lam) + b * lam
    y = blend(x, 2, box.h0, box.h1, scale[0], in_hw[0], win.h0)
    return blend(y, 3, box.w0, box.w1, scale[1], in_hw[1], win.w0)


def run_op(op: Op, mod: Optional[nn.Module], ins: list[tuple[torch.Tensor, Box]], box: Box,
           in_shapes: list[tuple[int, int, int]], in_channels: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """Compute ``box`` of ``op``'s output from input regions ``ins`` [(data, box it holds)]."""
    k = op.kind
    wins = op.input_windows(box, in_channels)
    fulls = [Box.full(s) for s in in_shapes]
    if k == "conv":
        fill = 0.0
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], fill)
        w, b = mod.weight, mod.bias
        if in_channels is not None:
            return F.conv2d(x, w[box.c0:box.c1, in_channels[0]:in_channels[1]], None, op.stride, 0, op.dilation)
        if op.groups == 1:
            return F.conv2d(x, w[box.c0:box.c1], None if b is None else b[box.c0:box.c1], op.stride, 0, op.dilation)
        return _grouped_conv(op, x, wins[0].c0, w, b, box.c0, box.c1)
    if k == "bn":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        c = slice(box.c0, box.c1)
        return F.batch_norm(x, mod.running_mean[c], mod.running_var[c],
                            None if mod.weight is None else mod.weight[c],
                            None if mod.bias is None else mod.bias[c], False, 0.0, op.eps)
    if k == "act":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        return op.fn(x.clone())  # clone: a module may be inplace=True
    if k == "dropout":
        return take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
    if k == "maxpool":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], float("-inf"))
        return F.max_pool2d(x, op.kernel, op.stride, 0, op.dilation)
    if k == "avgpool":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        sums = F.avg_pool2d(x, op.kernel, op.stride, 0, False, True, 1)
        if op.divisor_override:
            return sums / op.divisor_override
        _, ih, iw = in_shapes[0]
        ch = _counts(box.h0, box.h1, op.kernel[0], op.stride[0], op.padding[0], ih, op.count_include_pad)
        cw = _counts(box.w0, box.w1, op.kernel[1], op.stride[1], op.padding[1], iw, op.count_include_pad)
        div = ch[:, None] * cw[None, :]
        return torch.where(div > 0, sums / div.clamp(min=1), torch.zeros_like(sums))
    if k == "adaptive_avgpool":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        _, ih, iw = in_shapes[0]
        _, oh, ow = op.out_chw
        out = x.new_empty((x.shape[0], box.c1 - box.c0, box.h1 - box.h0, box.w1 - box.w0))
        for i in range(box.h0, box.h1):
            a, b = adaptive_window_1d(i, i + 1, ih, oh)
            for j in range(box.w0, box.w1):
                c, d = adaptive_window_1d(j, j + 1, iw, ow)
                out[:, :, i - box.h0, j - box.w0] = x[:, :, a - wins[0].h0:b - wins[0].h0,
                                                       c - wins[0].w0:d - wins[0].w0].mean((2, 3))
        return out
    if k == "flatten":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        return _as4d(torch.flatten(x, 1)[:, box.c0:box.c1])
    if k == "linear":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        x = x.reshape(x.shape[0], -1)
        b = None if mod.bias is None else mod.bias[box.c0:box.c1]
        return _as4d(F.linear(x, mod.weight[box.c0:box.c1], b))
    if k in ("add", "mul"):        # an [N, C, 1, 1] operand broadcasts over the map
        xs = [take(d, h, w, f, 0.0) for (d, h), w, f in zip(ins, wins, fulls)]
        return xs[0] + xs[1] if k == "add" else xs[0] * xs[1]
    if k in ("slice", "pad"):     # a window of the input; zero padding where it leaves the map
        return take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
    if k == "shuffle":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        idx = torch.tensor([op.shuffle_source(c) - wins[0].c0 for c in range(box.c0, box.c1)], dtype=torch.long)
        return x.index_select(1, idx)
    if k == "upsample":
        x = take(ins[0][0], ins[0][1], wins[0], fulls[0], 0.0)
        _, ih, iw = in_shapes[0]
        return _upsample_region(x, wins[0], box, op.scale, (ih, iw), op.mode)
    if k == "deconv":               # the taps of the input window, added into the box (bias elsewhere)
        n = ins[0][0].shape[0]
        out = torch.zeros((n, box.c1 - box.c0, box.h1 - box.h0, box.w1 - box.w0))
        if mod.bias is not None:
            out += mod.bias[box.c0:box.c1].reshape(1, -1, 1, 1)
        win = wins[0]
        if win.h1 <= win.h0 or win.w1 <= win.w0:
            return out                  # no tap lands in the box
        x = take(ins[0][0], ins[0][1], win, fulls[0], 0.0)
        y = F.conv_transpose2d(x, mod.weight[:, box.c0:box.c1], None, op.stride, 0, 0, 1, op.dilation)
        oy, ox = win.h0 * op.stride[0] - op.padding[0], win.w0 * op.stride[1] - op.padding[1]  # y[0, 0]'s place
        a, b = max(box.h0, oy), min(box.h1, oy + y.shape[2])
        c, d = max(box.w0, ox), min(box.w1, ox + y.shape[3])
        if a < b and c < d:
            out[:, :, a - box.h0:b - box.h0, c - box.w0:d - box.w0] += y[:, :, a - oy:b - oy, c - ox:d - ox]
        return out
    if k == "concat":
        parts = [take(d, h, w, f, 0.0) for (d, h), w, f in zip(ins, wins, fulls) if not w.empty]
        return torch.cat(parts, 1)
    raise _Missing(f"no executor for op kind {k}")


def run_block(graph: LayerGraph, mods: dict[str, nn.Module], ops: list[str], task, ext: dict[str, tuple[torch.Tensor, Box]]
              ) -> torch.Tensor:
    """Run a task's cone through the block ``ops``; ``ext`` holds the external input regions."""
    c = cone(graph, ops, task)
    data = dict(ext)
    last = ops[-1]
    for name in ops:
        box = c.regions[name]
        if box.empty:
            continue
        op = graph.op[name]
        empty = (torch.empty((graph.batch, 0, 0, 0)), Box(0, 0, 0, 0, 0, 0))
        ins = [data.get(i, empty) for i in op.inputs]
        data[name] = (run_op(op, mods.get(op.target) if op.target else None, ins, box,
                             [graph.tensor_chw(i) for i in op.inputs],
                             task.in_channels if name == last else None), box)
    return data[last][0]


def assemble_region(tensor: str, dev: str, need: Box, own: list[tuple[Box, torch.Tensor]],
                    received: list[tuple[str, Box, torch.Tensor]], like: torch.Tensor,
                    holders: Optional[set[str]] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Region ``need`` of ``tensor`` on device ``dev`` from its own pieces ``own`` [(box, data)]
    and the pieces it ``received`` [(sender, box, data)].

    Ordinary tensors: the pieces are copied into place and every element must be covered.
    Partial sums (``holders`` given: every device holding a partial): the pieces are added up,
    every holder must have contributed, and ``bias`` (the channels of ``need``) is added once.
    A received piece's sender may be a frozenset of devices: the sum of their partials, as a
    collective reduce delivers it (:mod:`partopt.runtime`).
    ``like`` gives the batch size and dtype. Raises ``_Missing`` when data is lacking.
    """
    n = like.shape[0]
    if holders is not None:
        out = torch.zeros((n, *need.shape), dtype=like.dtype)
        contributors = set()
        for box, data in own:
            out += _slice(data, box, need)
            contributors.add(dev)
        for src, box, data in received:
            cut = box.intersect(need)
            if not cut.empty:
                out[:, cut.c0 - need.c0:cut.c1 - need.c0, cut.h0 - need.h0:cut.h1 - need.h0,
                    cut.w0 - need.w0:cut.w1 - need.w0] += _slice(data, box, cut)
                contributors.update(src if isinstance(src, frozenset) else {src})
        lacking = holders - contributors
        if lacking:
            raise _Missing(f"{dev} lacks the partial sums of {tensor} from {', '.join(sorted(lacking))}")
        if bias is not None:
            out += bias.view(1, -1, 1, 1)
        return out
    out = torch.empty((n, *need.shape), dtype=like.dtype)
    have = torch.zeros(need.shape, dtype=torch.bool)
    for box, data in [*own, *((b, d) for _, b, d in received)]:
        cut = box.intersect(need)
        if cut.empty:
            continue
        sl = (slice(cut.c0 - need.c0, cut.c1 - need.c0), slice(cut.h0 - need.h0, cut.h1 - need.h0),
              slice(cut.w0 - need.w0, cut.w1 - need.w0))
        out[(slice(None),) + sl] = _slice(data, box, cut)
        have[sl] = True
    if not bool(have.all()):
        raise _Missing(f"{dev} lacks {int((~have).sum())} elements of {tensor} box {need.to_list()}")
    return out


def reference_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output a plan must reproduce: ``onnxruntime``'s for a module read from an ONNX file
    (it carries ``onnx_path``), else ``module(x)``."""
    path = getattr(module, "onnx_path", None)
    if path:
        from .onnx_import import reference_output
        return reference_output(path, x)
    return module(x)


def verify(plan: Plan, module: nn.Module, x: torch.Tensor, graph: Optional[LayerGraph] = None,
           cluster: Optional[Cluster] = None) -> Verification:
    """Execute ``plan`` on ``x`` with ``module``'s weights and compare with the reference:
    ``module(x)``, or for a model read from an ONNX file (:func:`partopt.onnx_import.load_onnx`)
    the file's own output by ``onnxruntime``."""
    module.eval()
    graph = graph or LayerGraph.from_module(module, x)
    cluster = cluster or Cluster.from_dict(plan.cluster)
    validate(plan, graph, cluster)
    mods = dict(module.named_modules())
    with torch.no_grad():
        ref = reference_of(module, x)
        try:
            out, moved, link, bad = _execute(plan, graph, mods, x)
        except _Missing as e:
            return Verification(False, float("nan"), float("nan"), 0, plan.comm_bytes, {}, str(e))
    out = out.reshape(ref.shape)
    abs_err = float((out - ref).abs().max())
    rel = abs_err / max(float(ref.abs().max()), 1e-30)
    reasons = []
    if not rel <= REL_TOL:
        reasons.append(f"relative error {rel:.3g} > {REL_TOL:g}")
    if moved != plan.comm_bytes:
        reasons.append(f"moved {moved} bytes, plan says {plan.comm_bytes}")
    reasons += bad
    return Verification(not reasons, abs_err, rel, moved, plan.comm_bytes, link, "; ".join(reasons))


def _execute(plan: Plan, graph: LayerGraph, mods: dict[str, nn.Module], x: torch.Tensor):
    store: dict[str, list[_Piece]] = {graph.input_name: [_Piece(plan.source, Box.full(graph.tensor_chw(graph.input_name)), x)]}
    moved = 0
    link: dict[str, int] = defaultdict(int)
    bad: list[str] = []

    def deliver(ts: list[Transfer]) -> dict[tuple[str, str], list[tuple[str, Box, torch.Tensor]]]:
        nonlocal moved
        inbox: dict[tuple[str, str], list[tuple[str, Box, torch.Tensor]]] = defaultdict(list)
        for t in ts:
            src_piece = next((p for p in store.get(t.tensor, []) if p.device == t.src and p.partial == t.partial
                              and p.box.contains(t.box)), None)
            if src_piece is None:
                raise _Missing(f"{t.src} does not hold box {t.box.to_list()} of {t.tensor} it must send")
            payload = _slice(src_piece.data, src_piece.box, t.box).clone()
            nb = payload.numel() * payload.element_size()
            moved += nb
            link[f"{t.src}->{t.dst}"] += nb
            if nb != t.nbytes:
                bad.append(f"transfer {t.src}->{t.dst} of {t.tensor} moved {nb} bytes, planned {t.nbytes}")
            inbox[(t.dst, t.tensor)].append((t.src, t.box, payload))
        return inbox

    def assemble(tensor: str, dev: str, need: Box, inbox) -> torch.Tensor:
        pieces = store[tensor]
        partial = bool(pieces) and pieces[0].partial
        own = [(p.box, p.data) for p in pieces if p.device == dev]
        bias = None
        if partial:
            b = mods[graph.op[tensor].target].bias
            bias = None if b is None else b[need.c0:need.c1]
        return assemble_region(tensor, dev, need, own, inbox.get((dev, tensor), []), x,
                               holders={p.device for p in pieces} if partial else None, bias=bias)

    for s in plan.stages:
        inbox = deliver(s.transfers)
        pieces = []
        for task in s.tasks:
            c = cone(graph, s.ops, task)
            ext = {t: (assemble(t, task.device, b, inbox), b) for t, b in c.needs.items() if not b.empty}
            pieces.append(_Piece(task.device, task.box, run_block(graph, mods, s.ops, task, ext), s.partial))
        if s.partial:  # each device adds up its own partial sums before anything is sent
            merged: dict[str, _Piece] = {}
            for p in pieces:
                if p.device in merged:
                    merged[p.device].data = merged[p.device].data + p.data
                else:
                    merged[p.device] = p
            pieces = list(merged.values())
        store[s.output] = pieces
        if s.gather_to:
            gin = deliver(s.gather)
            full = Box.full(graph.tensor_chw(s.output))
            data = assemble(s.output, s.gather_to, full, gin)
            store[s.output] = [_Piece(s.gather_to, full, data)]   # the others drop their pieces
    fin = deliver(plan.final)
    full = Box.full(graph.tensor_chw(plan.output))
    out = assemble(plan.output, plan.sink, full, fin)
    return out, moved, dict(link), bad
