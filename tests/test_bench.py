"""partopt bench / report / export: sweep files, resumable CSV rows, the report's tables and
figures, and exported models that solve to the same optimum."""
import os
import pathlib

import pytest

from partopt import bench
from partopt.bench import BenchConfig, MethodSpec, instances, load_config, read_rows, run_bench
from partopt.cli import main
from partopt.errors import ConfigError
from partopt.report import load_results, markdown_table, latex_table, solver_rows, summary_rows, write_report

from test_formulations import check_fragment

ROOT = pathlib.Path(__file__).resolve().parent.parent

SMALL = """
name = "small"
out = "out/small.csv"
time_limit_s = 30
models = ["lenet5"]
clusters = ["pi4x2"]
solvers = ["highs", "cpsat"]
[[method]]
name = "coedge"
[[method]]
name = "iop"
[[method]]
name = "dpfp"
solvers = ["cbc"]
[[method]]
name = "nptp"
options = { grid = [2, 2] }
solvers = ["cpsat"]
[[method]]
name = "dn2pciot"
clusters = ["dn2pciot-1"]
solvers = ["highs"]
"""


def write(tmp_path, text, name="sweep.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_config_expands_to_instances(tmp_path):
    cfg = load_config(write(tmp_path, SMALL))
    keys = [i.key for i in instances(cfg)]
    assert keys == [
        "lenet5|pi4x2|coedge|heuristic|-|{}",
        "lenet5|pi4x2|iop|heuristic|-|{}", "lenet5|pi4x2|iop|exact|highs|{}", "lenet5|pi4x2|iop|exact|cpsat|{}",
        "lenet5|pi4x2|dpfp|heuristic|-|{}", "lenet5|pi4x2|dpfp|exact|cbc|{}",
        'lenet5|pi4x2|nptp|heuristic|-|{"grid": [2, 2]}', 'lenet5|pi4x2|nptp|exact|cpsat|{"grid": [2, 2]}',
        "lenet5|dn2pciot-1|dn2pciot|heuristic|-|{}", "lenet5|dn2pciot-1|dn2pciot|exact|highs|{}"]
    assert cfg.out == str(tmp_path / "out" / "small.csv")


@pytest.mark.parametrize("text, words", [
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\n[[method]]\nname = \"nope\"", "unknown method"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\n[[method]]\nname = \"coedge\"\nmodes = [\"exact\"]", "no exact"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\n[[method]]\nname = \"coedge\"\noptions = {grid = [2, 2]}",
     "do not apply"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\n[[method]]\nname = \"nptp\"\noptions = {grid = [0, 2]}",
     "grid must be"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\nsolvers = [\"gurobi\"]\n[[method]]\nname = \"iop\"", "solvers"),
    ("models = [\"nonet\"]\nclusters = [\"pi4x2\"]\n[[method]]\nname = \"iop\"", "not in the zoo"),
    ("models = [\"lenet5\"]\nclusters = [\"nowhere.toml\"]\n[[method]]\nname = \"iop\"", "neither a preset"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\ntime_limit_s = -1\n[[method]]\nname = \"iop\"", "time_limit_s"),
    ("models = [\"lenet5\"]\nclusters = [\"pi4x2\"]\ncolour = 1\n[[method]]\nname = \"iop\"", "unknown keys"),
    ("models = [\"lenet5\"]\n[[method]]\nname = \"iop\"", "missing 'clusters'"),
    ("models = [\"lenet5\"\n", "not valid TOML"),
])
def test_bad_configs_are_refused_with_the_reason(tmp_path, text, words):
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, text))


def test_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_config(str(tmp_path / "none.toml"))


def test_sweep_rows_resume_and_report(tmp_path):
    cfg = load_config(write(tmp_path, SMALL))
    res = run_bench(cfg, progress=False)
    assert (res.computed, res.skipped, res.errors) == (10, 0, [])
    rows = read_rows(cfg.out)
    assert [r["key"] for r in rows] == [i.key for i in instances(cfg)]
    for r in rows:
        assert r["verified"] == "True", r
        assert r["status"] in ("heuristic", "optimal"), r
        if r["mode"] == "exact":
            # the heuristic is never better than the proven optimum, in the exact model's objective
            assert float(r["heuristic_gap"]) >= -1e-6, r
            assert float(r["twin_objective"]) >= float(r["objective"]) * (1 - 1e-6)
        assert os.path.exists(os.path.join(os.path.dirname(cfg.out), r["plan_file"]))
    # resume: nothing recomputed
    again = run_bench(cfg, progress=False)
    assert (again.computed, again.skipped) == (0, 10)
    # an interruption cut the last line short: that row alone is recomputed
    text = pathlib.Path(cfg.out).read_text()
    pathlib.Path(cfg.out).write_text(text[: text.rstrip("\n").rfind("\n") + 12])
    third = run_bench(cfg, progress=False)
    assert (third.computed, third.skipped) == (1, 9)
    assert [r["key"] for r in read_rows(cfg.out)] == [i.key for i in instances(cfg)]

    files = write_report(cfg.out, str(tmp_path / "rep"))
    names = {os.path.basename(f) for f in files}
    assert {"summary.md", "summary.tex", "solvers.md", "solvers.tex", "gaps.png", "solve_time.png", "pareto.png",
            "timeline.png", "tiles.png"} <= names
    for f in files:
        assert os.path.getsize(f) > 0
        if f.endswith(".tex"):
            check_fragment(pathlib.Path(f).read_text())
    loaded = load_results(cfg.out)
    summ = {r["method"]: r for r in summary_rows(loaded)}
    assert set(summ) == {"iop", "dpfp", "nptp", "dn2pciot"}
    assert summ["iop"]["exact runs"] == 2 and summ["iop"]["optimal"] == 2
    solv = solver_rows(loaded)
    assert {(r["method"], r["solver"]) for r in solv} == {("iop", "highs"), ("iop", "cpsat"), ("dpfp", "cbc"),
                                                          ("nptp", "cpsat"), ("dn2pciot", "highs")}


def test_jobs_give_the_same_rows(tmp_path):
    text = SMALL.replace('out = "out/small.csv"', 'out = "out/jobs.csv"')
    cfg = load_config(write(tmp_path, text))
    res = run_bench(cfg, jobs=2, progress=False, limit=5)
    assert res.computed == 5 and not res.errors
    rows = read_rows(cfg.out)
    assert {r["key"] for r in rows} == {i.key for i in instances(cfg)[:5]}
    assert all(r["verified"] == "True" for r in rows)


def test_a_failing_instance_is_reported_not_written(tmp_path, monkeypatch):
    cfg = BenchConfig(name="t", out=str(tmp_path / "t.csv"), models=["lenet5"], clusters=["pi4x2"],
                      methods=[MethodSpec("coedge", modes=("heuristic",)), MethodSpec("single", modes=("heuristic",))])
    real = bench.run_instance

    def flaky(inst, *args):
        if inst.method == "single":
            raise RuntimeError("boom")
        return real(inst, *args)
    monkeypatch.setattr(bench, "run_instance", flaky)
    res = run_bench(cfg, progress=False)
    assert res.computed == 1 and len(res.errors) == 1 and "boom" in res.errors[0]["reason"]
    assert [r["method"] for r in read_rows(cfg.out)] == ["coedge"]
    monkeypatch.setattr(bench, "run_instance", real)
    assert run_bench(cfg, progress=False).computed == 1          # retried on the next run


def test_infeasible_instance_is_a_row(tmp_path):
    cluster = tmp_path / "tiny.toml"
    cluster.write_text('name = "tiny"\nlink = "shared"\nbandwidth_bytes_per_s = 1e6\nlatency_s = 0.001\n'
                       '[[devices]]\nname = "a"\nflops_per_s = 1e9\nmemory_bytes = 1000\n'
                       '[[devices]]\nname = "b"\nflops_per_s = 1e9\nmemory_bytes = 1000\n')
    cfg = load_config(write(tmp_path, 'models = ["lenet5"]\nclusters = ["tiny.toml"]\n'
                                      '[[method]]\nname = "iop"\nsolvers = ["highs"]\n'))
    run_bench(cfg, progress=False)
    rows = read_rows(cfg.out)
    assert [r["status"] for r in rows] == ["infeasible", "infeasible"]
    assert all(r["reason"] for r in rows)
    assert rows[0]["key"].split("|")[1] == "tiny.toml"


def test_instances_differing_in_options_keep_their_own_plans(tmp_path):
    cfg = load_config(write(tmp_path, 'models = ["lenet5"]\nclusters = ["pi4x2"]\nsolvers = ["cpsat"]\n'
                                      '[[method]]\nname = "nptp"\nmodes = ["exact"]\noptions = {grid = [2, 2]}\n'
                                      '[[method]]\nname = "nptp"\nmodes = ["exact"]\noptions = {grid = [3, 3]}\n'))
    run_bench(cfg, progress=False)
    rows = read_rows(cfg.out)
    assert len(rows) == 2 and rows[0]["plan_file"] != rows[1]["plan_file"]
    assert [r["size"] for r in rows] == ["8", "18"]       # cells x devices


def test_tables_escape_and_render():
    rows = [{"method": "dn2pciot_x", "optimal %": 50.0, "median s": None}]
    assert markdown_table(rows).splitlines()[2] == "| dn2pciot_x | 50 | - |"
    tex = latex_table(rows)
    check_fragment(tex)
    assert "dn2pciot\\_x" in tex and "optimal \\%" in tex


def test_report_refuses_a_foreign_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="not a partopt bench CSV"):
        load_results(str(p))
    assert main(["report", str(p)]) == 2
    assert main(["report", str(tmp_path / "none.csv")]) == 2


def test_cli_bench_list_and_errors(tmp_path, capsys):
    path = write(tmp_path, SMALL)
    assert main(["bench", path, "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 10
    assert main(["bench", str(tmp_path / "none.toml")]) == 2
    assert main(["bench", path, "--jobs", "0"]) == 2


def test_default_config_is_valid():
    cfg = load_config(str(ROOT / "benchmarks" / "default.toml"))
    insts = instances(cfg)
    assert len(insts) > 50
    assert {i.solver for i in insts if i.mode == "exact"} == {"cbc", "highs", "cpsat"}
    assert {i.method for i in insts if i.mode == "exact"} == {"iop", "dpfp", "nptp", "dn2pciot", "best"}


# --- export -------------------------------------------------------------------------------

@pytest.mark.parametrize("method, cluster, extra", [
    ("iop", "pi4x2", []), ("dpfp", "pi4x2", []), ("nptp", "pi4x2", ["--grid", "2x2"]),
    ("dn2pciot", "dn2pciot-1", []), ("best", "pi4x2", [])])
def test_exported_mps_solves_to_the_same_optimum(tmp_path, method, cluster, extra):
    """The MPS file, read back by PuLP and solved by HiGHS, has the exact method's optimum."""
    import pulp
    from partopt.cluster import preset
    from partopt.methods import METHODS
    from partopt.graph import LayerGraph
    from partopt.solvers import MILP_UNITS_PER_S
    from partopt.zoo import example_input, load_model
    out = tmp_path / f"{method}.mps"
    assert main(["export", "lenet5", "--method", method, "--cluster", cluster, "--format", "mps",
                 "--out", str(out)] + extra) == 0
    _, prob = pulp.LpProblem.fromMPS(str(out))
    prob.solve(pulp.HiGHS(msg=False))
    assert pulp.LpStatus[prob.status] == "Optimal"
    net, shape, _ = load_model("lenet5")
    g = LayerGraph.from_module(net, example_input(shape))
    opts = {"grid": (2, 2)} if method == "nptp" else {}
    sol = METHODS[method].exact(g, preset(cluster), solver="highs", **opts)
    assert sol.status == "optimal"
    # every MILP states time in microseconds (partopt.solvers.MILP_UNITS_PER_S); on LeNet-5
    # best's optimum is a segment plan (the whole net on the source), so the union's optimum
    # is the model's
    assert pulp.value(prob.objective) / MILP_UNITS_PER_S == pytest.approx(sol.objective, rel=1e-7)


def test_export_lp_and_tex(tmp_path):
    lp = tmp_path / "iop.lp"
    assert main(["export", "lenet5", "--method", "iop", "--cluster", "pi4x2", "--format", "lp", "--out", str(lp)]) == 0
    assert "Subject To" in lp.read_text()
    tex = tmp_path / "iop.tex"
    assert main(["export", "lenet5", "--method", "iop", "--cluster", "pi4x2", "--format", "tex",
                 "--out", str(tex)]) == 0
    text = tex.read_text()
    check_fragment(text)
    assert "constraints" in text and "lenet5" in text and (ROOT / "formulations" / "iop.tex").read_text() in text


@pytest.mark.parametrize("args, words", [
    (["--method", "coedge", "--format", "lp", "--out", "x.lp"], "no exact model"),
    (["--method", "iop", "--format", "lp", "--out", "x.mps"], "writes a .lp file"),
    (["--method", "nptp", "--format", "lp", "--out", "x.lp", "--grid", "0"], "--grid"),
])
def test_export_errors(tmp_path, capsys, args, words):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    assert main(["export", "lenet5", "--cluster", "pi4x2"] + args) == 2
    assert words in capsys.readouterr().err


def test_union_rows_measure_every_method_against_the_union_optimum_and_the_bound():
    from partopt.report import union_rows

    def row(method, mode, model, lat, lb, status="heuristic"):
        return {"method": method, "mode": mode, "model": model, "cluster": "c", "latency_s": lat,
                "lower_bound_s": lb, "status": status}
    rows = [row("best", "exact", "m", 1.0, 0.5, "optimal"), row("coedge", "heuristic", "m", 1.5, 0.5),
            row("coedge", "heuristic", "m2", 2.0, 1.0), row("single", "heuristic", "m", 9.0, 0.5, "infeasible")]
    u = {(r["method"], r["mode"]): r for r in union_rows(rows)}
    assert set(u) == {("best", "exact"), ("coedge", "heuristic")}       # infeasible plans are left out
    c = u[("coedge", "heuristic")]
    assert (c["plans"], c["with union optimum"]) == (2, 1)
    assert c["median gap to union optimum %"] == pytest.approx(50.0)
    assert c["median x lower bound"] == pytest.approx(2.5) and c["max x lower bound"] == pytest.approx(3.0)
    assert u[("best", "exact")]["max gap to union optimum %"] == 0.0


def test_regime_report_marks_where_the_papers_speedup_holds(tmp_path, capsys):
    """A regime CSV (bench_nptp.py --part regime) gets heat maps and a table that says where
    NPTP reaches 1.44x over CoEdge, or "nowhere in the swept range"."""
    import csv as _csv

    from partopt.cli import main
    from partopt.report import REGIME_COLUMNS
    path = tmp_path / "regime.csv"
    fields = list(REGIME_COLUMNS) + ["nptp_s", "coedge_s", "ftp_s"]
    with open(path, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for link, slow in (("mesh", 1.5), ("shared", 1.2)):
            for side in (224, 512):
                for bw in (0.1, 1.0):
                    c = slow if (side, bw) == (224, 0.1) else 1.0
                    w.writerow({"model": "m", "input_side": side, "bandwidth_factor": bw, "devices": 8, "link": link,
                                "nptp_s": 1.0, "coedge_s": c, "ftp_s": 1.1, "speedup_vs_coedge": c,
                                "speedup_vs_ftp": 1.1})
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| m | 8 | mesh | 1.50x (side 224, bw x0.1) | 1.00x | 1.10x | 1/4 cells: side 224-224, bandwidth x0.1-x0.1 |" in out
    assert "| m | 8 | shared | 1.20x (side 224, bw x0.1) | 1.00x | 1.10x | nowhere in the swept range |" in out
    assert (tmp_path / "out" / "regime_m.png").stat().st_size > 0


def test_iop_memory_report_writes_its_table_and_figure(tmp_path, capsys):
    """An IOP memory CSV (bench_iop.py --part memory) gets iop_memory.md and iop_memory.png."""
    import csv as _csv

    from partopt.cli import main
    from partopt.report import IOP_MEMORY_COLUMNS
    path = tmp_path / "mem.csv"
    with open(path, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=list(IOP_MEMORY_COLUMNS))
        w.writeheader()
        for n, red in ((2, 10.0), (4, -5.0)):
            w.writerow({"model": "m", "devices": n, "coedge_peak_mib": 100.0, "all_pairs_peak_mib": 100 - red,
                        "all_pairs_reduction_pct": red, "coedge_min_cap_mib": 100.0, "iop_min_cap_mib": 100 - red,
                        "cap_reduction_pct": red})
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| m | 2 | 100.0 | 90.0 (-10.0 %) | 100.0 | 90.0 (-10.0 %) |" in out
    assert "| m | 4 | 100.0 | 105.0 (+5.0 %) | 100.0 | 105.0 (+5.0 %) |" in out
    assert (tmp_path / "out" / "iop_memory.png").stat().st_size > 0
