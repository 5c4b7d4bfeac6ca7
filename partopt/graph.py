"""LayerGraph: a CNN traced with torch.fx into a networkx DiGraph of :class:`Op` nodes.

Every op records its kind, input and output shapes, kernel/stride/padding/dilation/groups,
FLOPs (2 x MACs for conv and linear, see :func:`partopt.cost.region_flops`), parameter bytes
and output activation bytes (float32 unless the model says otherwise). Shapes come from
``torch.fx.passes.shape_prop.ShapeProp`` on an example input.

Example:
    >>> import torch
    >>> from partopt.graph import LayerGraph
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    >>> g = LayerGraph.from_module(net, torch.zeros(1, 3, 16, 16))
    >>> [(op.name, op.kind, op.out_shape) for op in g.ops]
    [('_0', 'conv', (1, 8, 16, 16)), ('_1', 'act', (1, 8, 16, 16))]
    >>> g.total_flops == 2 * 3 * 9 * 8 * 16 * 16 + 8 * 16 * 16
    True
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import networkx as nx
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from .errors import InputShapeError, UnsupportedOpError
from .geometry import Box, adaptive_window_1d, conv_window_1d, deconv_window_1d, upsample_window_1d

#: op kinds whose output channel c depends only on input channel c at the same place (or window)
CHANNEL_LOCAL = {"bn", "act", "dropout", "maxpool", "avgpool", "adaptive_avgpool", "add", "mul", "upsample", "pad"}
#: op kinds that start a new layer when a plan splits a model layer by layer
LAYER_KINDS = {"conv", "deconv", "maxpool", "avgpool", "adaptive_avgpool", "upsample", "linear", "flatten"}
#: every op kind partopt plans, executes and prices (README, "Models")
KINDS = {
    "conv": "Conv2d (any kernel, stride, padding, dilation, groups)",
    "deconv": "ConvTranspose2d (groups=1, zero padding, output_padding)",
    "bn": "BatchNorm2d (eval statistics)",
    "act": "element-wise activations (ReLU, ReLU6, LeakyReLU, Sigmoid, Hardsigmoid, Hardswish, SiLU, GELU, ...)",
    "dropout": "Dropout (identity in eval)",
    "maxpool": "MaxPool2d / F.max_pool2d (stride 1 too, as SPPF)",
    "avgpool": "AvgPool2d / F.avg_pool2d",
    "adaptive_avgpool": "AdaptiveAvgPool2d / F.adaptive_avg_pool2d, and x.mean((2, 3), keepdim=...)",
    "upsample": "nearest or bilinear (align_corners=False) upsampling by an integer factor "
                "(nn.Upsample, F.interpolate)",
    "pad": "ZeroPad2d / F.pad with zeros",
    "add": "sum of two tensors, or of a map and an [N, C, 1, 1] tensor (broadcast)",
    "mul": "product of two tensors, or of a map and an [N, C, 1, 1] gate (squeeze-excite)",
    "concat": "torch.cat along channels (4-D) or features (N, F)",
    "slice": "one part of torch.chunk / torch.split along channels",
    "shuffle": "channel shuffle: view(N, g, C/g, H, W) -> transpose(1, 2) -> reshape(N, C, H, W)",
    "flatten": "flatten / view / reshape to (N, F)",
    "linear": "Linear on (N, F)",
}

_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
                nn.SiLU, nn.GELU, nn.Hardtanh, nn.ELU, nn.Mish, nn.Identity)
_ACT_FUNCS = {torch.relu, F.relu, F.relu6, F.leaky_relu, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
              F.hardswish, F.hardsigmoid, F.silu, F.gelu, F.hardtanh, F.elu, F.mish}
_ACT_METHODS = {"relu", "sigmoid", "tanh", "relu_", "sigmoid_", "tanh_"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def canonical(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) view of an activation shape (N, C, H, W) or (N, F) -> (F, 1, 1)."""
    if len(shape) == 4:
        return (shape[1], shape[2], shape[3])
    if len(shape) == 2:
        return (shape[1], 1, 1)
    raise UnsupportedOpError(f"activation of shape {tuple(shape)}: only (N,C,H,W) and (N,F) are supported")


@dataclass
class Op:
    """One node of a LayerGraph. Sizes in elements, bytes or FLOPs as named."""

    name: str
    kind: str                       # one of KINDS
    inputs: tuple[str, ...]         # producer op names, or the graph's input name
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    target: Optional[str] = None    # qualified module name for call_module ops
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: Optional[int] = None
    eps: float = 1e-5
    scale: tuple[int, int] = (1, 1)     # upsample: integer factor (rows, columns)
    mode: str = ""                      # upsample: "nearest" | "bilinear"
    offset: int = 0                     # slice: first input channel of the part
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)     # pad: (left, right, top, bottom)
    output_padding: tuple[int, int] = (0, 0)            # deconv
    flops: int = 0                  # FLOPs of the whole op (batch included)
    param_bytes: int = 0            # weights + bias (+ BN statistics)
    out_bytes: int = 0              # output activation bytes (batch included)
    elem_bytes: int = 4
    fn: Optional[Callable] = field(default=None, repr=False, compare=False)  # element-wise function

    @property
    def out_chw(self) -> tuple[int, int, int]:
        return canonical(self.out_shape)

    @property
    def in_chw(self) -> tuple[int, int, int]:
        return canonical(self.in_shapes[0])

    @property
    def batch(self) -> int:
        return int(self.out_shape[0])

    def input_windows(self, box: Box, in_channels: Optional[tuple[int, int]] = None) -> list[Box]:
        """Per input, the window (may reach past the borders) needed to compute ``box`` of the output.

        ``in_channels`` restricts a groups=1 conv to an input-channel range (a partial sum).
        """
        if box.empty:
            return [Box(0, 0, 0, 0, 0, 0) for _ in self.inputs]
        k = self.kind
        if k in ("bn", "act", "dropout"):
            return [box]
        if k in ("add", "mul"):     # an [N, C, 1, 1] operand is broadcast over the map
            oc, oh, ow = self.out_chw
            return [Box(box.c0, box.c1, 0, 1, 0, 1) if canonical(s)[1:] == (1, 1) and (oh, ow) != (1, 1) else box
                    for s in self.in_shapes]
        if k == "slice":
            return [Box(box.c0 + self.offset, box.c1 + self.offset, box.h0, box.h1, box.w0, box.w1)]
        if k == "shuffle":          # the hull of the input channels the output channels come from
            src = [self.shuffle_source(c) for c in range(box.c0, box.c1)]
            return [Box(min(src), max(src) + 1, box.h0, box.h1, box.w0, box.w1)]
        if k == "pad":
            left, _, top, _ = self.pads
            return [Box(box.c0, box.c1, box.h0 - top, box.h1 - top, box.w0 - left, box.w1 - left)]
        if k == "upsample":
            _, ih, iw = self.in_chw
            h = upsample_window_1d(box.h0, box.h1, self.scale[0], ih, self.mode)
            w = upsample_window_1d(box.w0, box.w1, self.scale[1], iw, self.mode)
            return [Box(box.c0, box.c1, h[0], h[1], w[0], w[1])]
        if k == "deconv":
            h = deconv_window_1d(box.h0, box.h1, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
            w = deconv_window_1d(box.w0, box.w1, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
            return [Box(0, self.in_chw[0], h[0], h[1], w[0], w[1])]
        if k in ("conv", "maxpool", "avgpool"):
            h = conv_window_1d(box.h0, box.h1, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
            w = conv_window_1d(box.w0, box.w1, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
            if k == "conv":
                c = in_channels if in_channels is not None else self.conv_in_channels(box.c0, box.c1)
            else:
                c = (box.c0, box.c1)
            return [Box(c[0], c[1], h[0], h[1], w[0], w[1])]
        if k == "adaptive_avgpool":
            ic, ih, iw = self.in_chw
            oc, oh, ow = self.out_chw
            h = adaptive_window_1d(box.h0, box.h1, ih, oh)
            w = adaptive_window_1d(box.w0, box.w1, iw, ow)
            return [Box(box.c0, box.c1, h[0], h[1], w[0], w[1])]
        if k in ("flatten", "linear"):
            return [Box.full(canonical(self.in_shapes[0]))]
        if k == "concat":
            out, off = [], 0
            for s in self.in_shapes:
                c = canonical(s)[0]
                lo, hi = max(box.c0, off), min(box.c1, off + c)
                out.append(Box(lo - off, hi - off, box.h0, box.h1, box.w0, box.w1) if lo < hi
                           else Box(0, 0, 0, 0, 0, 0))
                off += c
            return out
        raise UnsupportedOpError(f"op {self.name}: no window rule for kind {k}")

    def shuffle_source(self, c: int) -> int:
        """The input channel that channel-shuffle output channel ``c`` copies (``groups`` groups)."""
        per = self.in_chw[0] // self.groups
        return (c % self.groups) * per + c // self.groups

    def conv_in_channels(self, c0: int, c1: int) -> tuple[int, int]:
        """Input-channel range a conv needs for output channels [c0, c1) (groups aware)."""
        cin = self.in_chw[0]
        cout = self.out_chw[0]
        if self.groups == 1:
            return (0, cin)
        og, ig = cout // self.groups, cin // self.groups
        return ((c0 // og) * ig, ((c1 - 1) // og + 1) * ig)


class LayerGraph:
    """A traced CNN: ``ops`` in topological order and ``g``, a networkx DiGraph over op names.

    ``input_name`` is the placeholder's name, ``output`` the name of the op that produces the
    model's output, ``input_shape`` the example input's (N, C, H, W).
    """

    def __init__(self, ops: list[Op], input_name: str, input_shape: tuple[int, ...], output: str):
        self.ops = ops
        self.op = {o.name: o for o in ops}
        self.input_name = input_name
        self.input_shape = tuple(input_shape)
        self.output = output
        self.g = nx.DiGraph()
        self.g.add_node(input_name, kind="input")
        for o in ops:
            self.g.add_node(o.name, kind=o.kind, flops=o.flops, param_bytes=o.param_bytes, out_bytes=o.out_bytes)
            for i in o.inputs:
                self.g.add_edge(i, o.name, bytes=self.tensor_bytes(i))
        self.consumers: dict[str, list[str]] = {n: list(self.g.successors(n)) for n in self.g.nodes}

    # -- sizes ---------------------------------------------------------------------------
    def tensor_chw(self, name: str) -> tuple[int, int, int]:
        """Canonical (C, H, W) of a tensor named by its producer (or the input)."""
        if name == self.input_name:
            return canonical(self.input_shape)
        return self.op[name].out_chw

    def tensor_bytes(self, name: str) -> int:
        if name == self.input_name:
            return int(math.prod(self.input_shape)) * 4
        return self.op[name].out_bytes

    @property
    def batch(self) -> int:
        return int(self.input_shape[0])

    @property
    def total_flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def total_param_bytes(self) -> int:
        return sum(o.param_bytes for o in self.ops)

    @property
    def total_activation_bytes(self) -> int:
        return sum(o.out_bytes for o in self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, example_input: torch.Tensor) -> "LayerGraph":
        """Trace ``module`` (put in eval mode) with torch.fx and propagate ``example_input``'s shape.

        Raises UnsupportedOpError naming the node for anything partopt cannot plan.
        """
        if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
            raise InputShapeError("the example input must be a 4-D tensor (N, C, H, W)")
        module.eval()
        try:
            gm = torch.fx.symbolic_trace(module)
        except Exception as e:  # fx raises many kinds on untraceable control flow
            raise UnsupportedOpError(f"torch.fx cannot trace the model: {type(e).__name__}: {e}") from None
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example_input)
        except Exception as e:
            raise InputShapeError(f"the model does not run on input shape {tuple(example_input.shape)}: "
                                  f"{type(e).__name__}: {e}") from None
        mods = dict(gm.named_modules())
        ops: list[Op] = []
        alias: dict[str, str] = {}     # inert nodes (dropout-free reshapes etc.) -> their source
        pending: dict[str, tuple] = {}  # nodes that are not tensors partopt plans: splits, shuffle steps
        input_name = None
        output = None
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                if input_name is not None:
                    raise UnsupportedOpError(f"node {node.name}: models with more than one input are not supported")
                input_name = node.name
                continue
            if node.op == "output":
                arg = node.args[0]
                if not isinstance(arg, torch.fx.Node):
                    raise UnsupportedOpError("the model must return a single tensor")
                if arg.name in pending:
                    raise UnsupportedOpError(f"the model returns {arg.name}, an intermediate of a split or shuffle")
                output = alias.get(arg.name, arg.name)
                continue
            if node.op == "get_attr":
                raise UnsupportedOpError(f"node {node.name}: direct parameter access ({node.target}) is not supported")
            op = _make_op(node, mods, alias, pending)
            if op is None:
                continue
            ops.append(op)
        if input_name is None or output is None:
            raise UnsupportedOpError("the traced model has no input or no output")
        if output == input_name:
            raise UnsupportedOpError("the model returns its input unchanged")
        graph = cls(ops, input_name, tuple(example_input.shape), output)
        dead = [o.name for o in ops if o.name != output and not graph.consumers[o.name]]
        if dead:
            raise UnsupportedOpError(f"ops whose result is never used: {', '.join(dead)}")
        return graph


def _tensor_meta_shape(node: torch.fx.Node) -> Optional[tuple[int, ...]]:
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        return None
    return tuple(int(s) for s in tm.shape)


_MUL_FUNCS = {operator.mul, operator.imul, torch.mul}
_SCALAR_FUNCS = {operator.add: "add", operator.iadd: "add", torch.add: "add", operator.mul: "mul",
                 operator.imul: "mul", torch.mul: "mul", operator.sub: "sub", operator.truediv: "div"}
_SCALAR_METHODS = {"add": "add", "mul": "mul", "sub": "sub", "div": "div"}


def _scalar_fn(name: str, c: float, tensor_first: bool) -> Callable:
    """Element-wise ``x <name> c`` (or ``c <name> x``) for a Python number ``c``."""
    f = {"add": operator.add, "mul": operator.mul, "sub": operator.sub, "div": operator.truediv}[name]
    return (lambda x: f(x, c)) if tensor_first else (lambda x: f(c, x))


def _arg(node: torch.fx.Node, i: int, name: str, default: Any) -> Any:
    """Argument ``name`` of a call, given positionally at ``i`` (after the tensor) or by keyword."""
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _split_ranges(node: torch.fx.Node, where: str) -> Optional[list[tuple[int, int]]]:
    """Channel ranges of the parts of a torch.chunk / torch.split along channels, or None when
    ``node`` is not such a call."""
    t = node.target
    is_split = ((node.op == "call_function" and t in (torch.chunk, torch.split))
                or (node.op == "call_method" and t in ("chunk", "split")))
    if not is_split:
        return None
    dim = _arg(node, 2, "dim", 0)
    metas = node.meta.get("tensor_meta")
    if dim not in (1, -3) or not isinstance(metas, (tuple, list)) or any(len(m.shape) != 4 for m in metas):
        raise UnsupportedOpError(f"{where}: only chunk/split of a 4-D tensor along channels (dim=1)")
    out, c = [], 0
    for m in metas:
        out.append((c, c + int(m.shape[1])))
        c += int(m.shape[1])
    return out


def _make_op(node: torch.fx.Node, mods: dict[str, nn.Module], alias: dict[str, str],
             pending: Optional[dict[str, tuple]] = None) -> Optional[Op]:
    """Map one fx node to an Op (or None for a node that only aliases another, or that is one
    step of a channel split or shuffle, remembered in ``pending`` until it yields a tensor)."""
    from .cost import region_flops  # the one FLOP count, shared with the cost model

    pending = {} if pending is None else pending
    where = f"node {node.name} ({node.op} {getattr(node.target, '__name__', node.target)})"
    out_shape = _tensor_meta_shape(node)
    if node.op == "call_method" and node.target == "size":
        pending[node.name] = ("scalar",)
        return None  # used only as an argument of view/reshape; checked there
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        pending[node.name] = ("scalar",)      # x.shape, for sizes
        return None
    if out_shape is None and node.op in ("call_function", "call_method") and node.all_input_nodes and all(
            pending.get(a.name, ("",))[0] == "scalar" for a in node.all_input_nodes):
        pending[node.name] = ("scalar",)      # arithmetic on sizes (c // groups), for a view's arguments
        return None
    tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node) and pending.get(a.name, ("",))[0] != "scalar"]

    def src(n: torch.fx.Node) -> str:
        if n.name in pending:
            raise UnsupportedOpError(f"{where}: reads {n.name}, which partopt supports only as a step of a "
                                     f"channel split (chunk/split then [i]) or a channel shuffle "
                                     f"(view -> transpose(1, 2) -> reshape)")
        return alias.get(n.name, n.name)

    # -- channel splits: chunk/split remembered, each [i] a "slice" op ----------------------
    ranges = _split_ranges(node, where)
    if ranges is not None:
        pending[node.name] = ("split", src(tensor_args[0]), _tensor_meta_shape(tensor_args[0]), ranges)
        return None
    if (node.op == "call_function" and node.target is operator.getitem and tensor_args
            and pending.get(tensor_args[0].name, ("",))[0] == "split"):
        _, source, shape, rngs = pending[tensor_args[0].name]
        i = node.args[1]
        if not isinstance(i, int) or not -len(rngs) <= i < len(rngs):
            raise UnsupportedOpError(f"{where}: index {i!r} of a channel split")
        c0, _ = rngs[i]
        return _finish(Op(name=node.name, kind="slice", inputs=(source,), in_shapes=(shape,), out_shape=out_shape,
                          offset=c0), region_flops)
    # -- channel shuffle: view to (N, g, C/g, H, W) -> transpose(1, 2) -> reshape to (N, C, H, W)
    t = node.target
    first = tensor_args[0] if tensor_args else None
    step = pending.get(first.name, ("",)) if first is not None else ("",)
    if node.op == "call_method" and t in ("view", "reshape") and out_shape is not None and len(out_shape) == 5:
        in_shape = _tensor_meta_shape(first)
        if (in_shape is None or len(in_shape) != 4 or out_shape[0] != in_shape[0]
                or out_shape[1] * out_shape[2] != in_shape[1] or tuple(out_shape[3:]) != tuple(in_shape[2:])):
            raise UnsupportedOpError(f"{where}: {t} to {out_shape}; only a channel shuffle's (N, g, C/g, H, W)")
        pending[node.name] = ("grouped", src(first), in_shape, int(out_shape[1]))
        return None
    if step[0] == "grouped" and ((node.op == "call_method" and t == "transpose" and sorted(node.args[1:3]) == [1, 2])
                                 or (node.op == "call_function" and t is torch.transpose
                                     and sorted(node.args[1:3]) == [1, 2])):
        pending[node.name] = ("transposed",) + step[1:]
        return None
    if step[0] in ("grouped", "transposed") and node.op == "call_method" and t == "contiguous":
        pending[node.name] = step
        return None
    if step[0] == "transposed" and ((node.op == "call_method" and t in ("view", "reshape", "flatten"))
                                    or (node.op == "call_function" and t is torch.flatten)):
        _, source, in_shape, groups = step
        if out_shape is None or tuple(out_shape) != tuple(in_shape):
            raise UnsupportedOpError(f"{where}: a channel shuffle must end in the shape it started from, "
                                     f"{in_shape}, not {out_shape}")
        return _finish(Op(name=node.name, kind="shuffle", inputs=(source,), in_shapes=(in_shape,),
                          out_shape=out_shape, groups=groups), region_flops)
    if step[0]:
        raise UnsupportedOpError(f"{where}: after {step[0]} channels, only "
                                 + ("[i]" if step[0] == "split" else "transpose(1, 2) and reshape") + " is supported")

    if out_shape is None:
        raise UnsupportedOpError(f"{where}: does not produce a single tensor")
    if len(out_shape) not in (2, 4):
        raise UnsupportedOpError(f"{where}: output shape {out_shape} is neither (N,C,H,W) nor (N,F)")

    inputs = tuple(src(a) for a in tensor_args)
    in_shapes = tuple(_tensor_meta_shape(a) for a in tensor_args)
    kw: dict[str, Any] = {}
    kind = None
    params = 0
    elem = 4
    if node.op == "call_module":
        m = mods[node.target]
        kw["target"] = node.target
        params = sum(p.numel() * p.element_size() for p in m.parameters(recurse=False))
        params += sum(b.numel() * b.element_size() for n_, b in m.named_buffers(recurse=False)
                      if b.is_floating_point())
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise UnsupportedOpError(f"{where}: padding_mode={m.padding_mode!r}; only 'zeros' is supported")
            kind = "conv"
            pad = m.padding
            if isinstance(pad, str):
                if pad == "valid":
                    pad = (0, 0)
                else:  # 'same' (stride 1)
                    tot = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
                    if any(t % 2 for t in tot):
                        raise UnsupportedOpError(f"{where}: padding='same' with an asymmetric pad")
                    pad = (tot[0] // 2, tot[1] // 2)
            kw.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(pad),
                      dilation=_pair(m.dilation), groups=int(m.groups), bias=m.bias is not None)
        elif isinstance(m, nn.BatchNorm2d):
            if m.running_mean is None:
                raise UnsupportedOpError(f"{where}: BatchNorm2d without running statistics")
            kind = "bn"
            kw["eps"] = float(m.eps)
        elif isinstance(m, _ACT_MODULES):
            kind = "act"
            kw["fn"] = m
        elif isinstance(m, nn.Dropout):
            kind = "dropout"
        elif isinstance(m, nn.MaxPool2d):
            if m.return_indices:
                raise UnsupportedOpError(f"{where}: MaxPool2d(return_indices=True)")
            kind = "maxpool"
            kw.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
                      padding=_pair(m.padding), dilation=_pair(m.dilation), ceil_mode=bool(m.ceil_mode))
        elif isinstance(m, nn.AvgPool2d):
            kind = "avgpool"
            kw.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
                      padding=_pair(m.padding), ceil_mode=bool(m.ceil_mode),
                      count_include_pad=bool(m.count_include_pad), divisor_override=m.divisor_override)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            kind = "adaptive_avgpool"
        elif isinstance(m, nn.ConvTranspose2d):
            if m.padding_mode != "zeros" or m.groups != 1:
                raise UnsupportedOpError(f"{where}: ConvTranspose2d with groups={m.groups}, padding_mode="
                                         f"{m.padding_mode!r}; only groups=1 with zero padding is supported")
            kind = "deconv"
            kw.update(kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=_pair(m.padding),
                      dilation=_pair(m.dilation), output_padding=_pair(m.output_padding), bias=m.bias is not None)
        elif isinstance(m, nn.ZeroPad2d):
            kind = "pad"
            kw["pads"] = _pads(m.padding, where)
        elif isinstance(m, nn.Upsample):
            kind = "upsample"
            kw.update(_upsample(m.mode, m.align_corners, in_shapes[0], out_shape, where))
        elif isinstance(m, nn.Flatten):
            kind = "flatten"
        elif isinstance(m, nn.Linear):
            kind = "linear"
            kw["bias"] = m.bias is not None
        else:
            raise UnsupportedOpError(f"{where}: module type {type(m).__name__} is not supported")
    elif node.op == "call_function":
        t = node.target
        if t in _ACT_FUNCS:
            kind = "act"
            rest = node.args[1:]
            kwargs = dict(node.kwargs)
            if any(isinstance(a, torch.fx.Node) for a in rest) or any(
                    isinstance(v, torch.fx.Node) for v in kwargs.values()):
                raise UnsupportedOpError(f"{where}: element-wise op with tensor arguments")
            kwargs.pop("inplace", None)
            kw["fn"] = lambda x, _t=t, _r=rest, _k=kwargs: _t(x, *_r, **_k)
        elif t in _SCALAR_FUNCS and len(tensor_args) == 1 and len(node.args) == 2 and not node.kwargs \
                and isinstance(node.args[1 - node.args.index(tensor_args[0])], (int, float)):
            kind = "act"        # x + 3, x * 0.5, 6 - x, x / 6: element-wise with a number
            i = node.args.index(tensor_args[0])
            kw["fn"] = _scalar_fn(_SCALAR_FUNCS[t], float(node.args[1 - i]), i == 0)
        elif t in _ADD_FUNCS or t in _MUL_FUNCS:
            what = "sum" if t in _ADD_FUNCS else "product"
            if len(tensor_args) != 2 or len(node.args) != 2 or node.kwargs:
                raise UnsupportedOpError(f"{where}: only the {what} of two tensors is supported")
            kind = "add" if t in _ADD_FUNCS else "mul"
            _check_broadcast(in_shapes, out_shape, where)
        elif t in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean, F.interpolate, F.pad):
            kind, more = _function_op(node, t, in_shapes[0], out_shape, where)
            kw.update(more)
        elif t is torch.cat:
            seq = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(seq, (list, tuple)) or not ((len(out_shape) == 4 and dim in (1, -3))
                                                          or (len(out_shape) == 2 and dim in (1, -1))):
                raise UnsupportedOpError(f"{where}: only concatenation along channels (dim=1) of 4-D tensors, "
                                         f"or along features of (N, F) tensors")
            tensor_args = list(seq)
            inputs = tuple(src(a) for a in tensor_args)
            in_shapes = tuple(_tensor_meta_shape(a) for a in tensor_args)
            kind = "concat"
        elif t is torch.flatten:
            kind = "flatten"
        elif t is F.dropout:
            kind = "dropout"
        else:
            raise UnsupportedOpError(f"{where}: function {getattr(t, '__name__', t)} is not supported")
    elif node.op == "call_method":
        t = node.target
        if t in _ACT_METHODS:
            kind = "act"
            kw["fn"] = lambda x, _t=t.rstrip("_"): getattr(x, _t)()
        elif t in ("view", "reshape", "flatten"):
            if len(out_shape) != 2 or out_shape[0] != in_shapes[0][0]:
                raise UnsupportedOpError(f"{where}: {t} to shape {out_shape}; only flattening to (N, F) is supported")
            kind = "flatten"
            inputs, in_shapes = inputs[:1], in_shapes[:1]   # the other args are sizes
        elif t == "contiguous":
            alias[node.name] = src(tensor_args[0])
            return None
        elif t in ("add", "mul") and len(tensor_args) == 2:
            kind = t
            _check_broadcast(in_shapes, out_shape, where)
        elif t in _SCALAR_METHODS and len(tensor_args) == 1 and len(node.args) == 2 and not node.kwargs \
                and isinstance(node.args[1], (int, float)):
            kind = "act"
            kw["fn"] = _scalar_fn(_SCALAR_METHODS[t], float(node.args[1]), True)
        elif t == "mean":
            kind, more = _function_op(node, torch.mean, in_shapes[0], out_shape, where)
            kw.update(more)
        else:
            raise UnsupportedOpError(f"{where}: method {t} is not supported")
    else:
        raise UnsupportedOpError(f"{where}: node kind {node.op} is not supported")

    if kind in ("flatten",) and in_shapes and len(in_shapes[0]) == 2:
        alias[node.name] = inputs[0]   # flattening an (N, F) tensor is a no-op
        return None
    if kind not in ("concat", "add", "mul") and len(inputs) != 1:
        raise UnsupportedOpError(f"{where}: expected one tensor input, got {len(inputs)}")
    if kind in ("conv", "deconv", "bn", "maxpool", "avgpool", "adaptive_avgpool", "upsample", "pad") \
            and len(in_shapes[0]) != 4:
        raise UnsupportedOpError(f"{where}: expects a 4-D input, got {in_shapes[0]}")
    if kind == "linear" and len(in_shapes[0]) != 2:
        raise UnsupportedOpError(f"{where}: Linear on a {len(in_shapes[0])}-D input; flatten it first")
    return _finish(Op(name=node.name, kind=kind, inputs=inputs, in_shapes=in_shapes, out_shape=out_shape,
                      param_bytes=int(params), elem_bytes=elem, **kw), region_flops)


def _finish(op: Op, region_flops: Callable) -> Op:
    """``op`` with its output bytes and FLOPs filled in."""
    op.out_bytes = int(math.prod(op.out_shape)) * op.elem_bytes
    op.flops = region_flops(op, Box.full(op.out_chw))
    return op


def _check_broadcast(in_shapes, out_shape, where: str) -> None:
    """Two operands of equal shape, or a map and an [N, C, 1, 1] tensor (a gate)."""
    a, b = in_shapes
    if a == b:
        return
    gate = lambda s: len(s) == 4 and s[2:] == (1, 1)          # noqa: E731
    if len(out_shape) == 4 and {len(a), len(b)} == {4} and a[:2] == b[:2] and (gate(a) or gate(b)):
        return
    raise UnsupportedOpError(f"{where}: broadcasting {a} with {b}; only equal shapes or a map with an "
                             f"[N, C, 1, 1] tensor are supported")


def _pads(p: Any, where: str) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) of a ZeroPad2d / F.pad spec (last dimension first)."""
    p = (p,) * 4 if isinstance(p, int) else tuple(int(v) for v in p)
    if len(p) == 2:
        p = p + (0, 0)
    if len(p) != 4 or min(p) < 0:
        raise UnsupportedOpError(f"{where}: padding {p}; only 4 non-negative sizes (left, right, top, bottom)")
    return p  # type: ignore[return-value]


def _upsample(mode: str, align_corners: Optional[bool], in_shape, out_shape, where: str) -> dict[str, Any]:
    """Op fields of nearest / bilinear upsampling by an integer factor."""
    if mode not in ("nearest", "bilinear") or (mode == "bilinear" and align_corners):
        raise UnsupportedOpError(f"{where}: upsampling mode={mode!r}, align_corners={align_corners}; only "
                                 f"'nearest' and 'bilinear' with align_corners=False are supported")
    (ih, iw), (oh, ow) = in_shape[2:], out_shape[2:]
    if oh % ih or ow % iw:
        raise UnsupportedOpError(f"{where}: upsampling {ih}x{iw} to {oh}x{ow} is not by an integer factor")
    return {"scale": (oh // ih, ow // iw), "mode": mode}


def _function_op(node: torch.fx.Node, t: Callable, in_shape, out_shape, where: str) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of the functional pools, mean over H and W, F.interpolate and F.pad."""
    if t is F.max_pool2d:
        if _arg(node, 6, "return_indices", False):
            raise UnsupportedOpError(f"{where}: max_pool2d(return_indices=True)")
        k = _pair(_arg(node, 1, "kernel_size", None))
        return "maxpool", {"kernel": k, "stride": _pair(_arg(node, 2, "stride", None) or k),
                           "padding": _pair(_arg(node, 3, "padding", 0)), "dilation": _pair(_arg(node, 4, "dilation", 1)),
                           "ceil_mode": bool(_arg(node, 5, "ceil_mode", False))}
    if t is F.avg_pool2d:
        k = _pair(_arg(node, 1, "kernel_size", None))
        return "avgpool", {"kernel": k, "stride": _pair(_arg(node, 2, "stride", None) or k),
                           "padding": _pair(_arg(node, 3, "padding", 0)), "ceil_mode": bool(_arg(node, 4, "ceil_mode", False)),
                           "count_include_pad": bool(_arg(node, 5, "count_include_pad", True)),
                           "divisor_override": _arg(node, 6, "divisor_override", None)}
    if t is F.adaptive_avg_pool2d:
        return "adaptive_avgpool", {}
    if t is torch.mean:
        dims = _arg(node, 1, "dim", None)
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if len(in_shape) != 4 or sorted(d % 4 for d in dims) != [2, 3] or node.kwargs.get("dtype") is not None:
            raise UnsupportedOpError(f"{where}: mean over {dims}; only the mean over H and W, dims (2, 3)")
        return "adaptive_avgpool", {}
    if t is F.interpolate:
        return "upsample", _upsample(_arg(node, 3, "mode", "nearest"), _arg(node, 4, "align_corners", None),
                                     in_shape, out_shape, where)
    if t is F.pad:
        if _arg(node, 2, "mode", "constant") != "constant" or (_arg(node, 3, "value", None) or 0) != 0:
            raise UnsupportedOpError(f"{where}: F.pad other than with zeros")
        return "pad", {"pads": _pads(_arg(node, 1, "pad", None), where)}
    raise UnsupportedOpError(f"{where}: function {getattr(t, '__name__', t)} is not supported")
