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
from .geometry import Box, adaptive_window_1d, conv_window_1d

#: op kinds whose output channel c depends only on input channel c at the same place (or window)
CHANNEL_LOCAL = {"bn", "act", "dropout", "maxpool", "avgpool", "adaptive_avgpool", "add"}
#: op kinds that start a new layer when a plan splits a model layer by layer
LAYER_KINDS = {"conv", "maxpool", "avgpool", "adaptive_avgpool", "linear", "flatten"}

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
    kind: str                       # conv bn act dropout maxpool avgpool adaptive_avgpool flatten linear add concat
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
        if k == "add":
            return [box for _ in self.inputs]
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
                output = alias.get(arg.name, arg.name)
                continue
            if node.op == "get_attr":
                raise UnsupportedOpError(f"node {node.name}: direct parameter access ({node.target}) is not supported")
            op = _make_op(node, mods, alias)
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


def _make_op(node: torch.fx.Node, mods: dict[str, nn.Module], alias: dict[str, str]) -> Optional[Op]:
    """Map one fx node to an Op (or None for a node that only aliases another)."""
    from .cost import region_flops  # the one FLOP count, shared with the cost model

    where = f"node {node.name} ({node.op} {getattr(node.target, '__name__', node.target)})"
    out_shape = _tensor_meta_shape(node)
    tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
    if node.op == "call_method" and node.target == "size":
        return None  # used only as an argument of view/reshape; checked there
    if out_shape is None:
        raise UnsupportedOpError(f"{where}: does not produce a single tensor")
    if len(out_shape) not in (2, 4):
        raise UnsupportedOpError(f"{where}: output shape {out_shape} is neither (N,C,H,W) nor (N,F)")

    def src(n: torch.fx.Node) -> str:
        return alias.get(n.name, n.name)

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
        elif t in _ADD_FUNCS:
            if len(tensor_args) != 2 or len(node.args) != 2 or node.kwargs:
                raise UnsupportedOpError(f"{where}: only the sum of two tensors of equal shape is supported")
            if in_shapes[0] != in_shapes[1]:
                raise UnsupportedOpError(f"{where}: broadcasting add {in_shapes[0]} + {in_shapes[1]}")
            kind = "add"
        elif t is torch.cat:
            seq = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(seq, (list, tuple)) or dim not in (1, -3) or len(out_shape) != 4:
                raise UnsupportedOpError(f"{where}: only channel concatenation (dim=1) of 4-D tensors")
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
        elif t == "add" and len(tensor_args) == 2:
            kind = "add"
        else:
            raise UnsupportedOpError(f"{where}: method {t} is not supported")
    else:
        raise UnsupportedOpError(f"{where}: node kind {node.op} is not supported")

    if kind in ("flatten",) and in_shapes and len(in_shapes[0]) == 2:
        alias[node.name] = inputs[0]   # flattening an (N, F) tensor is a no-op
        return None
    if kind != "concat" and kind != "add" and len(inputs) != 1:
        raise UnsupportedOpError(f"{where}: expected one tensor input, got {len(inputs)}")
    if kind in ("conv", "bn", "maxpool", "avgpool", "adaptive_avgpool") and len(in_shapes[0]) != 4:
        raise UnsupportedOpError(f"{where}: expects a 4-D input, got {in_shapes[0]}")
    if kind == "linear" and len(in_shapes[0]) != 2:
        raise UnsupportedOpError(f"{where}: Linear on a {len(in_shapes[0])}-D input; flatten it first")
    op = Op(name=node.name, kind=kind, inputs=inputs, in_shapes=in_shapes, out_shape=out_shape,
            param_bytes=int(params), elem_bytes=elem, **kw)
    op.out_bytes = int(math.prod(out_shape)) * elem
    op.flops = region_flops(op, Box.full(op.out_chw))
    return op
