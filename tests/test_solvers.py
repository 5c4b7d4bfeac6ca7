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
