"""ONNX models: read a ``.onnx`` file (the ``onnx`` package) into a torch module partopt plans.

:func:`load_onnx` builds a :class:`torch.fx.GraphModule` with the file's weights, one fx node
per ONNX node, from the ops partopt supports, so the file goes through the same
:meth:`partopt.graph.LayerGraph.from_module` as any model, and its plans execute in torch.
:func:`reference_output` runs the file itself with ``onnxruntime``: ``partopt solve --verify``
compares a plan's output with that, not with the converted module, and ``load_onnx`` checks
on the example input that the converted module agrees with ``onnxruntime``.

Supported ONNX ops (opsets 11-18): Conv, ConvTranspose (group 1), BatchNormalization, Relu,
LeakyRelu, Sigmoid, Tanh, HardSigmoid (alpha 1/6, beta 1/2), HardSwish, Clip (constant
bounds), Add and Mul (two tensors, or a tensor and a scalar), Sub and Div by a scalar,
MaxPool, AveragePool, GlobalAveragePool, ReduceMean over H and W, Flatten, Reshape to (N, F),
Gemm, Concat (axis 1), Resize (nearest or linear, integer scales), Pad (zeros), Dropout,
Identity, Constant. Pads must be symmetric. Anything else is refused with the node's name and
type (:class:`~partopt.errors.UnsupportedOpError`, exit 2 on the CLI).

Example:
    >>> import torch, tempfile, os
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> torch.onnx.export(net, torch.randn(1, 3, 8, 8), path, dynamo=False)
    >>> module, shape, name = load_onnx(path)
    >>> shape, name == path
    ((1, 3, 8, 8), True)
"""
from __future__ import annotations

import math
import operator
import os
from typing import Any, Optional

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputShapeError, ModelLoadError, UnsupportedOpError

ACTIVATIONS = {"Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "HardSwish": F.hardswish}
#: the ONNX ops :func:`load_onnx` reads (module doc for their limits)
SUPPORTED_ONNX_OPS = ("Conv", "ConvTranspose", "BatchNormalization", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
                      "HardSigmoid", "HardSwish", "Clip", "Add", "Mul", "Sub", "Div", "MaxPool", "AveragePool",
                      "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Gemm", "Concat", "Resize", "Pad",
                      "Dropout", "Identity", "Constant")
AGREE_TOL = 1e-4        # converted module against onnxruntime, relative to the output's largest magnitude


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:    # pragma: no cover - a dependency of partopt
        raise ModelLoadError(f"reading .onnx files needs the onnx package: {e}") from None
    return onnx, numpy_helper


def _attrs(node) -> dict[str, Any]:
    onnx, _ = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _sym(pads, where: str) -> tuple[int, int]:
    """Symmetric (rows, columns) padding from ONNX pads [top, left, bottom, right]."""
    pads = list(pads or [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise UnsupportedOpError(f"{where}: asymmetric pads {pads}")
    return int(pads[0]), int(pads[1])


def _shape_of(path: str, input_shape: Optional[tuple[int, ...]]) -> tuple[Any, tuple[int, int, int, int]]:
    """The model proto and the input shape (dynamic dimensions filled from ``input_shape``)."""
    onnx, _ = _onnx()
    if not os.path.isfile(path):
        raise ModelLoadError(f"ONNX file {path!r} does not exist")
    try:
        model = onnx.load(path)
    except Exception as e:
        raise ModelLoadError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    inits = {t.name for t in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1 or len(model.graph.output) != 1:
        raise UnsupportedOpError(f"{path}: partopt plans models with one input and one output "
                                 f"(this one has {len(ins)} and {len(model.graph.output)})")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in ins[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise InputShapeError(f"{path}: the input has {len(dims)} dimensions; partopt needs N,C,H,W")
    if input_shape is not None:
        if len(input_shape) != 4:
            raise InputShapeError(f"--input-shape must be N,C,H,W, got {input_shape}")
        clash = [(i, d, s) for i, (d, s) in enumerate(zip(dims, input_shape)) if d is not None and d != s]
        if clash:
            raise InputShapeError(f"{path}: --input-shape {tuple(input_shape)} differs from the file's fixed "
                                  f"dimensions {tuple(dims)}")
        dims = list(input_shape)
    if any(d is None for d in dims):
        raise InputShapeError(f"{path}: the input shape {tuple(dims)} has dynamic dimensions; give --input-shape N,C,H,W")
    return model, tuple(int(d) for d in dims)  # type: ignore[return-value]


def load_onnx(path: str, input_shape: Optional[tuple[int, ...]] = None, check: bool = True
              ) -> tuple[nn.Module, tuple[int, int, int, int], str]:
    """(module, input shape, name) of an ONNX file, like :func:`partopt.zoo.load_model`; the
    name is ``path`` itself, so a plan's ``model`` finds the file again (``partopt verify``,
    ``partopt run``).
    ``check``: run the converted module and ``onnxruntime`` on a random input and raise
    :class:`~partopt.errors.ModelLoadError` if they differ by more than :data:`AGREE_TOL`."""
    _, numpy_helper = _onnx()
    model, shape = _shape_of(path, input_shape)
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    root = nn.Module()
    g = torch.fx.Graph()
    inits = set(consts)
    inp = next(i for i in model.graph.input if i.name not in inits)
    env: dict[str, torch.fx.Node] = {inp.name: g.placeholder("x")}
    for k, node in enumerate(model.graph.node):
        where = f"ONNX node {node.name or k} ({node.op_type})"
        out = _convert(node, where, env, consts, root, g, f"n{k}")
        if out is not None:
            env[node.output[0]] = out
    name = model.graph.output[0].name
    if name not in env:
        raise UnsupportedOpError(f"{path}: the output {name!r} is a constant")
    g.output(env[name])
    gm = torch.fx.GraphModule(root, g).eval()
    gm.onnx_path = os.path.abspath(path)        # verify's reference is onnxruntime's output of the file
    if check:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = gm(x)
        ref = reference_output(path, x)
        err = float((ours.reshape(ref.shape) - ref).abs().max() / ref.abs().max().clamp(min=1e-30))
        if err > AGREE_TOL:
            raise ModelLoadError(f"{path}: the converted model differs from onnxruntime by {err:.2e} "
                                 f"(relative); partopt reads some op differently")
    return gm, shape, path      # the name a plan records: verify and run load the same file again


def reference_output(path: str, x: torch.Tensor) -> torch.Tensor:
    """The file's own output on ``x``, by ``onnxruntime`` (the reference ``verify`` compares with)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return torch.from_numpy(sess.run(None, {name: x.numpy()})[0])


def _convert(node, where: str, env: dict, consts: dict, root: nn.Module, g: torch.fx.Graph, key: str):
    """The fx node computing ``node``'s output (None for a constant, kept in ``consts``)."""
    op, a = node.op_type, _attrs(node)
    ins = list(node.input)

    def tensor(i: int) -> torch.fx.Node:
        if i >= len(ins) or ins[i] not in env:
            raise UnsupportedOpError(f"{where}: input {i} must be a tensor computed from the model's input")
        return env[ins[i]]

    def const(i: int, what: str) -> Optional[np.ndarray]:
        if i >= len(ins) or not ins[i]:
            return None
        if ins[i] not in consts:
            raise UnsupportedOpError(f"{where}: its {what} must be a constant (an initializer)")
        return consts[ins[i]]

    def module(m: nn.Module, *args) -> torch.fx.Node:
        root.add_module(key, m)
        return g.call_module(key, tuple(args))

    if op == "Constant":
        _, numpy_helper = _onnx()
        consts[node.output[0]] = numpy_helper.to_array(a["value"]) if "value" in a else np.asarray(
            a.get("value_float", a.get("value_int", 0)))
        return None
    if op in ("Dropout", "Identity"):
        return tensor(0)
    if op in ("Conv", "ConvTranspose"):
        w = torch.from_numpy(np.array(const(1, "weight")))
        b = const(2, "bias")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedOpError(f"{where}: auto_pad {a['auto_pad']!r}; give explicit pads")
        k = tuple(w.shape[2:])
        pad = _sym(a.get("pads"), where)
        kw = dict(stride=tuple(a.get("strides", (1, 1))), padding=pad, dilation=tuple(a.get("dilations", (1, 1))),
                  groups=int(a.get("group", 1)), bias=b is not None)
        if op == "Conv":
            m = nn.Conv2d(w.shape[1] * kw["groups"], w.shape[0], k, **kw)
        else:
            if kw["groups"] != 1:
                raise UnsupportedOpError(f"{where}: ConvTranspose with group {kw['groups']}")
            if "output_shape" in a:
                raise UnsupportedOpError(f"{where}: ConvTranspose with output_shape; give output_padding")
            m = nn.ConvTranspose2d(w.shape[0], w.shape[1], k, output_padding=tuple(a.get("output_padding", (0, 0))),
                                   **kw)
        with torch.no_grad():
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(torch.from_numpy(np.array(b)))
        return module(m, tensor(0))
    if op == "BatchNormalization":
        scale, bias, mean, var = (torch.from_numpy(np.array(const(i, n))) for i, n in
                                  ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
        m = nn.BatchNorm2d(scale.shape[0], eps=float(a.get("epsilon", 1e-5)))
        with torch.no_grad():
            m.weight.copy_(scale), m.bias.copy_(bias), m.running_mean.copy_(mean), m.running_var.copy_(var)
        return module(m.eval(), tensor(0))
    if op in ACTIVATIONS:
        return g.call_function(ACTIVATIONS[op], (tensor(0),))
    if op == "LeakyRelu":
        return g.call_function(F.leaky_relu, (tensor(0), float(a.get("alpha", 0.01))))
    if op == "HardSigmoid":
        if not (math.isclose(a.get("alpha", 0.2), 1 / 6, rel_tol=1e-6) and math.isclose(a.get("beta", 0.5), 0.5)):
            raise UnsupportedOpError(f"{where}: HardSigmoid with alpha {a.get('alpha', 0.2)}, beta "
                                     f"{a.get('beta', 0.5)}; only PyTorch's (1/6, 1/2)")
        return g.call_function(F.hardsigmoid, (tensor(0),))
    if op == "Clip":
        lo = const(1, "min") if len(ins) > 1 else a.get("min")
        hi = const(2, "max") if len(ins) > 2 else a.get("max")
        lo = -math.inf if lo is None else float(np.asarray(lo))
        hi = math.inf if hi is None else float(np.asarray(hi))
        return g.call_function(F.hardtanh, (tensor(0), lo, hi))
    if op in ("Add", "Mul", "Sub", "Div"):
        fn = {"Add": operator.add, "Mul": operator.mul, "Sub": operator.sub, "Div": operator.truediv}[op]
        known = [i for i in (0, 1) if ins[i] in env]
        if len(known) == 2 and op in ("Add", "Mul"):
            return g.call_function(fn, (env[ins[0]], env[ins[1]]))
        if len(known) == 1:
            c = const(1 - known[0], "other operand")
            if c.size != 1:
                raise UnsupportedOpError(f"{where}: {op} with a constant of shape {c.shape}; only a scalar")
            c = float(c.reshape(()))
            return g.call_function(fn, (env[ins[0]], c) if known[0] == 0 else (c, env[ins[1]]))
        raise UnsupportedOpError(f"{where}: {op} of two tensors; only Add and Mul (or with a scalar)")
    if op in ("MaxPool", "AveragePool"):
        k = tuple(a["kernel_shape"])
        kw = dict(kernel_size=k, stride=tuple(a.get("strides", (1, 1))), padding=_sym(a.get("pads"), where),
                  ceil_mode=bool(a.get("ceil_mode", 0)))
        if op == "MaxPool":
            if len(node.output) > 1 and node.output[1]:
                raise UnsupportedOpError(f"{where}: MaxPool with indices")
            return module(nn.MaxPool2d(dilation=tuple(a.get("dilations", (1, 1))), **kw), tensor(0))
        return module(nn.AvgPool2d(count_include_pad=bool(a.get("count_include_pad", 0)), **kw), tensor(0))
    if op == "GlobalAveragePool":
        return g.call_function(F.adaptive_avg_pool2d, (tensor(0), 1))
    if op == "ReduceMean":
        axes = a.get("axes")
        if axes is None and len(ins) > 1:
            axes = const(1, "axes").tolist()
        if sorted(int(x) % 4 for x in (axes or [])) != [2, 3]:
            raise UnsupportedOpError(f"{where}: ReduceMean over axes {axes}; only over H and W (2, 3)")
        return g.call_function(torch.mean, (tensor(0), (2, 3)), {"keepdim": bool(a.get("keepdims", 1))})
    if op == "Flatten":
        if int(a.get("axis", 1)) != 1:
            raise UnsupportedOpError(f"{where}: Flatten with axis {a.get('axis')}; only axis 1")
        return g.call_function(torch.flatten, (tensor(0), 1))
    if op == "Reshape":
        target = [int(v) for v in const(1, "shape")]
        if len(target) != 2:
            raise UnsupportedOpError(f"{where}: Reshape to {target}; only to (N, F)")
        return g.call_function(torch.flatten, (tensor(0), 1))
    if op == "Gemm":
        if a.get("transA", 0) or not math.isclose(a.get("alpha", 1.0), 1.0) or not math.isclose(a.get("beta", 1.0), 1.0):
            raise UnsupportedOpError(f"{where}: Gemm with transA or alpha/beta other than 1")
        w = np.array(const(1, "weight"))
        w = w if a.get("transB", 0) else w.T
        b = const(2, "bias")
        m = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            if b is not None:
                m.bias.copy_(torch.from_numpy(np.array(b)).reshape(-1))
        return module(m, tensor(0))
    if op == "Concat":
        if int(a.get("axis", 0)) != 1:
            raise UnsupportedOpError(f"{where}: Concat along axis {a.get('axis')}; only channels (axis 1)")
        return g.call_function(torch.cat, ([tensor(i) for i in range(len(ins))], 1))
    if op == "Resize":
        scales = const(2, "scales") if len(ins) > 2 and ins[2] else None
        if scales is None or len(scales) != 4 or list(scales[:2]) != [1, 1] or any(s % 1 for s in scales[2:]):
            raise UnsupportedOpError(f"{where}: Resize needs constant integer scales (1, 1, s, s), got {scales}")
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        ctm = a.get("coordinate_transformation_mode", b"half_pixel")
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        if mode == "nearest" and ctm in ("asymmetric", "half_pixel", "pytorch_half_pixel"):
            m = "nearest"
        elif mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel"):
            m = "bilinear"
        else:
            raise UnsupportedOpError(f"{where}: Resize mode {mode!r} with {ctm!r} coordinates")
        return module(nn.Upsample(scale_factor=(int(scales[2]), int(scales[3])), mode=m), tensor(0))
    if op == "Pad":
        mode = a.get("mode", b"constant")
        pads = const(1, "pads") if len(ins) > 1 else a.get("pads")
        value = const(2, "value") if len(ins) > 2 and ins[2] else None
        if mode not in (b"constant", "constant") or (value is not None and float(np.asarray(value)) != 0):
            raise UnsupportedOpError(f"{where}: Pad other than with zeros")
        p = [int(v) for v in pads]
        if len(p) != 8 or p[0] or p[1] or p[4] or p[5]:
            raise UnsupportedOpError(f"{where}: Pad {p}; only of H and W")
        return g.call_function(F.pad, (tensor(0), (p[3], p[7], p[2], p[6])))
    raise UnsupportedOpError(f"{where}: ONNX op {op} is not supported (supported: partopt/onnx_import.py)")
