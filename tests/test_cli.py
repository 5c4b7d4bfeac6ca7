import json
import os
import subprocess
import sys

import pytest

from partopt.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_and_clusters(capsys):
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["model"] for r in rows} >= {"lenet5", "vgg16", "yolov2_tiny"}
    assert next(r for r in rows if r["model"] == "lenet5")["flops"] == 845_852
    code, out, _ = run(capsys, "clusters", "--json")
    assert code == 0 and {r["cluster"] for r in json.loads(out)} >= {"pi4x4", "hetero3"}
    code, out, _ = run(capsys, "models")
    assert code == 0 and "lenet5" in out


def test_solve_json_fields_and_verify(capsys, tmp_path):
    plan = tmp_path / "p.json"
    code, out, _ = run(capsys, "solve", "resnet18", "--cluster", "hetero3", "--method", "coedge", "--verify",
                       "--json", "--out", str(plan))
    rec = json.loads(out)
    assert code == 0
    for key in ("model", "cluster", "method", "mode", "status", "latency_s", "throughput_per_s",
                "peak_memory_bytes", "comm_bytes", "bound", "gap", "solve_s", "verified", "max_abs_err",
                "max_rel_err"):
        assert key in rec
    assert rec["verified"] is True and rec["mode"] == "heuristic" and rec["status"] == "heuristic"
    code, out, _ = run(capsys, "verify", str(plan), "--json")
    assert code == 0 and json.loads(out)["verified"] is True
    code, out, _ = run(capsys, "solve", "lenet5", "--method", "layerwise")
    assert code == 0 and "latency" in out


def test_cluster_file_and_infeasible(capsys, tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"name": "tiny", "bandwidth_bytes_per_s": 1e6, "devices": [
        {"name": "a", "flops_per_s": 1e9, "memory_bytes": 1000}, {"name": "b", "flops_per_s": 1e9, "memory_bytes": 1000}]}))
    code, out, _ = run(capsys, "solve", "lenet5", "--cluster", str(f), "--method", "single", "--json")
    rec = json.loads(out)
    assert code == 0 and rec["status"] == "infeasible" and "lacks" in rec["reason"]


def test_demo_small(capsys, tmp_path):
    fig = tmp_path / "demo.png"
    code, out, _ = run(capsys, "demo", "--model", "lenet5", "--cluster", "pi4x2", "--figure", str(fig))
    assert code == 0 and fig.exists() and "coedge" in out and "True" in out


@pytest.mark.parametrize("argv,match", [
    (["solve", "nosuchmodel"], "unknown model"),
    (["solve", "lenet5", "--cluster", "nosuch"], "unknown cluster"),
    (["solve", "lenet5", "--method", "nosuch"], "unknown method"),
    (["solve", "lenet5", "--exact"], "no exact model"),
    (["solve", "lenet5", "--time-limit", "3"], "only with --exact"),
    (["solve", "x.py:make", "--input-shape", "1,3,8,8"], "does not exist"),
    (["verify", "missing-plan.json"], "does not exist"),
    (["solve", "lenet5", "--input-shape", "1,3"], "input shape"),
])
def test_bad_input_exit_2(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2 and match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_cluster_file_exit_2(capsys, tmp_path):
    for content in ("{broken", json.dumps({"bandwidth_bytes_per_s": 1e6, "devices": [
            {"name": "a", "flops_per_s": 0, "memory_bytes": 10}]})):
        f = tmp_path / "c.json"
        f.write_text(content)
        code, _, err = run(capsys, "solve", "lenet5", "--cluster", str(f))
        assert code == 2 and err.startswith("partopt: error:")


def test_unsupported_op_exit_2(capsys, tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import torch.nn as nn\ndef make():\n    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.PixelShuffle(2))\n")
    code, _, err = run(capsys, "solve", f"{f}:make", "--input-shape", "1,3,8,8")
    assert code == 2 and "PixelShuffle" in err


def test_console_script_no_traceback():
    exe = os.path.join(os.path.dirname(sys.executable), "partopt")
    p = subprocess.run([exe, "solve", "nosuchmodel"], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "unknown model" in p.stderr
    p = subprocess.run([exe, "solve"], capture_output=True, text=True)     # argparse usage error
    assert p.returncode == 2 and "Traceback" not in p.stderr


@pytest.mark.parametrize("solver", ["cbc", "highs", "cpsat"])
def test_solve_exact_dpfp(capsys, solver):
    code, out, _ = run(capsys, "solve", "alexnet", "--method", "dpfp", "--exact", "--solver", solver,
                       "--time-limit", "30", "--verify", "--json")
    rec = json.loads(out)
    assert code == 0 and rec["mode"] == "exact" and rec["status"] == "optimal" and rec["verified"] is True
    assert rec["gap"] == 0.0 and rec["solver"] == solver
    code, out, _ = run(capsys, "solve", "alexnet", "--method", "dpfp", "--json")
    assert rec["latency_s"] <= json.loads(out)["latency_s"] + 1e-12   # exact rows never lose
