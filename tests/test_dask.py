"""partopt bench --scheduler: a sweep on a real Dask distributed cluster (a scheduler and two
workers on 127.0.0.1, started here), its rows equal to a local run's, and a worker killed
mid-sweep costing nothing but a rerun."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

distributed = pytest.importorskip("distributed")

from partopt.bench import instances, load_config, read_rows, run_bench  # noqa: E402
from partopt.errors import PartoptError  # noqa: E402

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
SWEEP = """
name = "dask"
out = "out/{name}.csv"
time_limit_s = 30
threads = 1
verify = true
models = ["lenet5"]
clusters = ["pi4x2", "hetero3"]
solvers = ["highs"]
[[method]]
name = "single"
[[method]]
name = "coedge"
[[method]]
name = "iop"
"""


def _wait(cond, what, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(0.2)


@pytest.fixture
def cluster(tmp_path):
    """A dask scheduler and two single-threaded workers (no nanny, so killing one kills it) on
    127.0.0.1; yields (address, worker processes); stops them all afterwards."""
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env, start_new_session=True)]
    try:
        _wait(lambda: sched_file.exists() and sched_file.read_text().strip(), "scheduler file")
        addr = json.loads(sched_file.read_text())["address"]
        workers = [subprocess.Popen([DASK, "worker", addr, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
                                     "--no-dashboard", "--death-timeout", "30"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env, start_new_session=True) for _ in range(2)]
        procs += workers
        with distributed.Client(addr, timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield addr, workers
    finally:
        for p in reversed(procs):           # workers first, then the scheduler; no graceful exit needed
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=20)


def _config(tmp_path, name, extra=""):
    f = tmp_path / f"{name}.toml"
    f.write_text(SWEEP.replace("{name}", name) + extra)
    return load_config(str(f))


# a few seconds per instance, so that a worker can die while it holds some
SLOW = """
[[method]]
name = "dn2pciot"
modes = ["heuristic"]
clusters = ["dn2pciot-1", "dn2pciot-2", "dn2pciot-3"]
"""


def test_sweep_on_a_dask_cluster_equals_the_local_run(tmp_path, cluster):
    addr, _ = cluster
    local = _config(tmp_path, "local")
    run_bench(local, progress=False)
    remote = _config(tmp_path, "remote")
    res = run_bench(remote, progress=False, scheduler=addr)
    assert res.computed == len(instances(remote)) and not res.errors
    lrows, rrows = read_rows(local.out), read_rows(remote.out)
    assert {r["key"]: r["status"] for r in lrows} == {r["key"]: r["status"] for r in rrows}
    assert all(r["verified"] == "True" and r["host"] for r in rrows)
    # plans travel back with their rows and are written beside the client's CSV, as locally
    for a in lrows:
        b = next(r for r in rrows if r["key"] == a["key"])
        pa, pb = (pathlib.Path(c.out).parent / r["plan_file"] for c, r in ((local, a), (remote, b)))
        plan_a, plan_b = json.loads(pa.read_text()), json.loads(pb.read_text())
        for p in (plan_a, plan_b):
            p.pop("meta")           # solve times and the like
        assert a["plan_file"] and plan_a == plan_b
    for a, b in zip(sorted(lrows, key=lambda r: r["key"]), sorted(rrows, key=lambda r: r["key"])):
        assert float(a["latency_s"]) == pytest.approx(float(b["latency_s"]), rel=1e-12)
    # resume works the same way: nothing left to do
    again = run_bench(remote, progress=False, scheduler=addr)
    assert (again.computed, again.skipped) == (0, len(rrows))


def test_a_killed_worker_costs_only_a_rerun(tmp_path, cluster):
    addr, workers = cluster
    cfg = _config(tmp_path, "killed", SLOW)
    import threading
    at_kill = []

    def kill_when_a_row_lands():
        _wait(lambda: pathlib.Path(cfg.out).exists() and len(read_rows(cfg.out)) >= 1, "first row", 120)
        at_kill.append(len(read_rows(cfg.out)))
        workers[0].kill()
    t = threading.Thread(target=kill_when_a_row_lands, daemon=True)
    t.start()
    first = run_bench(cfg, progress=False, scheduler=addr)
    t.join(timeout=5)
    assert workers[0].poll() is not None and at_kill[0] < len(instances(cfg))   # it died mid-sweep
    done = {r["key"] for r in read_rows(cfg.out)}
    assert first.computed + len(first.errors) == len(instances(cfg))
    second = run_bench(cfg, progress=False, scheduler=addr)
    assert not second.errors and second.skipped == len(done)
    assert {r["key"] for r in read_rows(cfg.out)} == {i.key for i in instances(cfg)}


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    cfg = _config(tmp_path, "nowhere")
    with pytest.raises(PartoptError, match="cannot reach the dask scheduler"):
        run_bench(cfg, progress=False, scheduler="tcp://127.0.0.1:1", scheduler_timeout_s=1.0)
