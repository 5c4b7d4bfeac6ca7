import os

import pytest

from partopt.solvers import Solution


def test_ortools_and_highspy_import_in_one_process():
    """OR-Tools 9.15 and highspy 1.15 clash (undefined symbol); the pinned pair must not."""
    from ortools.sat.python import cp_model
    import highspy
    import pulp

    m = cp_model.CpModel()
    x = m.new_int_var(0, 10, "x")
    m.add(2 * x <= 7)
    m.maximize(x)
    s = cp_model.CpSolver()
    assert s.solve(m) == cp_model.OPTIMAL and s.value(x) == 3
    assert highspy.Highs() is not None
    assert "HiGHS" in pulp.listSolvers(onlyAvailable=True)
    assert "PULP_CBC_CMD" in pulp.listSolvers(onlyAvailable=True)


def test_solution_status_is_checked():
    with pytest.raises(ValueError):
        Solution(None, "great", "single")
    assert not Solution(None, "infeasible", "single").feasible


import itertools
import random

import pulp
from hypothesis import given, settings, strategies as st

from partopt.errors import SolverError
from partopt.solvers import export_model, solve_cpsat, solve_milp


def makespan_milp(jobs, speeds):
    """Assign jobs (FLOPs) to devices (FLOP/s) minimising the busiest device's time."""
    p = pulp.LpProblem("makespan", pulp.LpMinimize)
    x = {(j, d): pulp.LpVariable(f"x_{j}_{d}", cat="Binary") for j in range(len(jobs)) for d in range(len(speeds))}
    t = pulp.LpVariable("t", lowBound=0)
    p += t
    for j in range(len(jobs)):
        p += pulp.lpSum(x[j, d] for d in range(len(speeds))) == 1
    for d, s in enumerate(speeds):
        p += pulp.lpSum(jobs[j] / s * x[j, d] for j in range(len(jobs))) <= t
    return p, x


def makespan_cpsat(jobs, speeds, scale=1000):
    from ortools.sat.python import cp_model
    m = cp_model.CpModel()
    x = {(j, d): m.new_bool_var(f"x{j}{d}") for j in range(len(jobs)) for d in range(len(speeds))}
    t = m.new_int_var(0, 10 ** 9, "t")
    for j in range(len(jobs)):
        m.add_exactly_one(x[j, d] for d in range(len(speeds)))
    for d, s in enumerate(speeds):
        m.add(sum(round(jobs[j] * scale) * x[j, d] for j in range(len(jobs))) * (max(speeds) // s) <= t)
    m.minimize(t)
    return m


def brute(jobs, speeds):
    return min(max(sum(jobs[j] for j in range(len(jobs)) if a[j] == d) / s for d, s in enumerate(speeds))
               for a in itertools.product(range(len(speeds)), repeat=len(jobs)))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.sampled_from([(1, 1), (1, 2), (1, 1, 2), (2, 1, 1, 4)]))
def test_milp_backends_match_brute_force(jobs, speeds):
    best = brute(jobs, speeds)
    for solver in ("cbc", "highs"):
        p, _ = makespan_milp(jobs, speeds)
        r = solve_milp(p, solver, time_limit=30)
        assert r.status == "optimal" and abs(r.objective - best) <= 1e-6 * max(1, best)
    # CP-SAT on the same statement in integers (times scaled so speeds divide the fastest)
    r, _ = solve_cpsat(makespan_cpsat(jobs, speeds), time_limit=30, scale=1000 * max(speeds))
    assert r.status == "optimal" and abs(r.objective - best) <= 1e-9 * max(1, best)


def test_time_limit_reports_bound_and_gap():
    rnd = random.Random(4)
    jobs = [rnd.randint(50, 999) for _ in range(40)]
    speeds = (1, 1, 1, 1, 1, 1, 1)
    for solver in ("cbc", "highs"):
        p, _ = makespan_milp(jobs, speeds)
        r = solve_milp(p, solver, time_limit=1)
        assert r.status in ("optimal", "feasible")
        if r.status == "feasible":          # stopped by the limit: a proven bound must come back
            assert r.bound is not None and r.bound <= r.objective + 1e-6 and r.gap >= 0
        assert r.objective >= sum(jobs) / len(speeds) - 1e-6     # never below the trivial bound
    r, _ = solve_cpsat(makespan_cpsat(jobs, speeds), time_limit=1, scale=1000)
    assert r.status in ("optimal", "feasible") and r.bound is not None and r.bound <= r.objective + 1e-9


def test_infeasible_and_errors(tmp_path):
    p = pulp.LpProblem("inf", pulp.LpMinimize)
    x = pulp.LpVariable("x", 0, 1)
    p += x
    p += x >= 2
    for solver in ("cbc", "highs"):
        assert solve_milp(p.deepcopy() if hasattr(p, "deepcopy") else p, solver).status == "infeasible"
    with pytest.raises(SolverError):
        solve_milp(p, "gurobi")
    for ext in ("lp", "mps"):
        assert os.path.getsize(export_model(p, str(tmp_path / f"m.{ext}"))) > 0
    with pytest.raises(SolverError):
        export_model(p, str(tmp_path / "m.txt"))
    m = makespan_cpsat([1, 2], (1, 1))
    assert os.path.getsize(export_model(m, str(tmp_path / "m.pb.txt"))) > 0
