"""The path-with-memory model shared by best and DPFP against brute force."""
import random

import pytest

from partopt.cluster import homogeneous
from partopt.methods import segment_path
from partopt.methods.segment_path import Arc


def random_arcs(seed: int, n: int = 5, scale: float = 1.0):
    """Arcs with times near 1e-4 s x ``scale`` and random weights and activations (bytes)."""
    rng = random.Random(seed)
    arcs = []
    for i in range(n):
        for j in range(i + 1, n + 1):
            # times near 1e-4 s, the scale where tolerances stated in seconds used to leak
            arcs.append(Arc(i, j, rng.uniform(2e-5, 1e-4) * scale * (j - i) ** 0.8,
                            {d: rng.randrange(0, 4000) * (j - i) for d in ("pi0", "pi1")},
                            {d: rng.randrange(0, 3000) for d in ("pi0", "pi1")}))
    return arcs


@pytest.mark.parametrize("scale", [1.0, 1e6], ids=["1e-4s", "100s"])
@pytest.mark.parametrize("solver", ["highs", "cbc", "cpsat"])
def test_path_with_memory_equals_brute_force(solver, scale):
    """Every back-end proves brute force's optimum, with arcs of about 1e-4 s (where tolerances
    stated in seconds leaked) and of about 100 s (a horizon of 1e9 microseconds, where HiGHS
    once proved wrong optima on IOP's MILP)."""
    checked = 0
    for seed in range(6):
        arcs = random_arcs(seed, scale=scale)
        free_value, free = segment_path.shortest(arcs, 5)
        need = max(segment_path.memory_of(arcs, free, ["pi0", "pi1"]).values())
        for cap in (need, need * 3 // 4, need // 2, 10):
            cl = homogeneous(2, memory_bytes=cap)
            bf_value, bf = segment_path.brute_force(arcs, 5, cl)
            res, chosen = segment_path.solve(arcs, 5, cl, solver)
            if not bf:
                assert res.status == "infeasible" and not chosen
                continue
            assert res.status == "optimal"
            assert segment_path.fits(arcs, chosen, cl)
            value = sum(arcs[k].seconds for k in chosen)
            # every back-end to 1e-6 relative of brute force at ~1e-4 s (CP-SAT: whole ns per arc)
            assert value == pytest.approx(bf_value, rel=1e-6, abs=0)
            assert res.objective == pytest.approx(bf_value, rel=1e-6, abs=0)
            checked += 1
    assert checked >= 10          # most caps leave some path that fits


def test_shortest_ignores_memory_and_model_rows_are_stated():
    arcs = random_arcs(0)
    value, chosen = segment_path.shortest(arcs, 5)
    assert value == pytest.approx(segment_path.brute_force(arcs, 5, homogeneous(2, memory_bytes=10 ** 9))[0])
    prob, x = segment_path.build_model(arcs, 5, homogeneous(2), "highs")
    assert len(x) == len(arcs) and "memory_0" in prob.constraints and "flow_5" in prob.constraints
