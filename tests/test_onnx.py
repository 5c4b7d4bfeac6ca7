"""ONNX files (partopt/onnx_import.py): exported zoo models plan and verify from the file alone,
against onnxruntime's output; unsupported ops and bad shapes are refused with the node."""
import json
import warnings

import pytest
import torch
import torch.nn as nn

from partopt.cli import main
from partopt.cluster import preset
from partopt.errors import InputShapeError, UnsupportedOpError
from partopt.graph import LayerGraph
from partopt.methods import METHODS
from partopt.onnx_import import load_onnx, reference_output
from partopt.verify import verify
from partopt.zoo import example_input, load_model


def export(module, shape, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(shape), str(path), dynamo=False, **kw)
    return str(path)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in ("resnet18", "mobilenet_v3_small"):
        net, shape, _ = load_model(name)
        out[name] = export(net, shape, d / f"{name}.onnx", opset_version=17)
    return out


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_exported_zoo_models_plan_and_verify_from_the_file_alone(onnx_files, name):
    module, shape, nm = load_onnx(onnx_files[name])
    assert shape == (1, 3, 224, 224) and nm == onnx_files[name]
    x = example_input(shape)
    g = LayerGraph.from_module(module, x)
    cl = preset("hetero3")
    for method in ("coedge", "dpfp", "iop", "nptp"):
        sol = METHODS[method].heuristic(g, cl, model=nm)
        v = verify(sol.plan, module, x, g, cl)       # against onnxruntime's output of the file
        assert v.ok and v.max_rel_err <= 1e-4, (method, v.reason)


def test_cli_solves_and_verifies_an_onnx_file(onnx_files, capsys, tmp_path):
    """solve, then verify and run the saved plan: the plan names the file, which they load again."""
    plan = str(tmp_path / "plan.json")
    assert main(["solve", onnx_files["resnet18"], "--method", "best", "--cluster", "pi4x2", "--verify", "--json",
                 "--out", plan]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["verified"] is True and rec["model"] == onnx_files["resnet18"] and rec["lower_bound_s"] <= rec["latency_s"]
    assert main(["verify", plan, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


def test_verify_compares_with_onnxruntime_not_the_converted_module(onnx_files):
    """A converted module whose weights drift is caught: the reference is the file's own output."""
    module, shape, _ = load_onnx(onnx_files["resnet18"])
    x = example_input(shape)
    g = LayerGraph.from_module(module, x)
    cl = preset("pi4x2")
    plan = METHODS["coedge"].heuristic(g, cl).plan
    with torch.no_grad():
        next(m for m in module.modules() if isinstance(m, nn.Conv2d)).weight.mul_(1.5)
    v = verify(plan, module, x, g, cl)
    assert not v.ok and "relative error" in v.reason
    assert torch.equal(reference_output(onnx_files["resnet18"], x), reference_output(onnx_files["resnet18"], x))


def test_dynamic_dimensions_come_from_input_shape(tmp_path, capsys):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = export(net, (1, 3, 16, 16), tmp_path / "dyn.onnx",
                  dynamic_axes={"input": {2: "h", 3: "w"}}, input_names=["input"])
    with pytest.raises(InputShapeError, match="dynamic dimensions; give --input-shape"):
        load_onnx(path)
    _, shape, _ = load_onnx(path, (1, 3, 20, 24))
    assert shape == (1, 3, 20, 24)
    with pytest.raises(InputShapeError, match="differs from the file's fixed"):
        load_onnx(path, (1, 4, 20, 24))
    assert main(["solve", path, "--input-shape", "1,3,20,24", "--method", "coedge", "--verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


def test_unsupported_onnx_ops_are_refused_with_the_node_and_exit_2(tmp_path, capsys):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 2)

    path = export(nn.Sequential(nn.Conv2d(3, 4, 1), Odd()), (1, 3, 8, 8), tmp_path / "odd.onnx")
    with pytest.raises(UnsupportedOpError, match=r"ONNX node .*\(CumSum\).*not supported"):
        load_onnx(path)
    assert main(["solve", path]) == 2
    assert "CumSum" in capsys.readouterr().err
    assert main(["solve", str(tmp_path / "missing.onnx")]) == 2


def test_an_onnx_plan_runs_across_processes_against_onnxruntime(tmp_path):
    """partopt run loads the file the plan names; the sink compares with onnxruntime's output."""
    from partopt.methods.baselines import coedge
    from partopt.runtime import RunOptions, run
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1),
                        nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = export(net, (1, 3, 16, 16), tmp_path / "small.onnx")
    module, shape, name = load_onnx(path)
    g = LayerGraph.from_module(module, example_input(shape))
    plan = coedge(g, preset("pi4x2"), model=name).plan
    res = run(plan, RunOptions(repeat=1, warmup=0, emulate=False, timeout_s=60))
    assert res.ok and res.max_rel_err <= 1e-4
