"""The symbolic schedule (partopt/maxplus.py) reproduces evaluate's list schedule exactly."""
import pytest

from partopt.cluster import preset
from partopt.maxplus import Lin, SymSchedule, SymStage, builder
from partopt.methods import iop
from partopt.methods.baselines import coedge
from partopt.plan import evaluate, stage_compute_s, task_needs


def sym_stages(plan, graph, cluster):
    out = []
    for s in plan.stages:
        secs = stage_compute_s(graph, cluster, s)
        needs = {d: sorted(ts) for d, ts in task_needs(graph, s).items()}
        out.append(SymStage(s.ops[0], s.transfers, s.output, needs, {d: Lin.of(f) for d, f in secs.items()}))
    return out


@pytest.mark.parametrize("name, cluster, solver", [
    (n, c, s) for n, c in [("alexnet", "pi4x4"), ("resnet18", "hetero3"), ("mobilenet_v2", "pi4x8")]
    for s in ("highs", "cpsat") if (n, s) != ("mobilenet_v2", "cpsat")]
    + [pytest.param("mobilenet_v2", "pi4x8", "cpsat", marks=pytest.mark.slow)])     # 14-19 s each
def test_symbolic_schedule_equals_evaluate(zoo, rated, solver, name, cluster):
    _, _, g = zoo(name)
    cl = rated(preset(cluster))
    plans = [coedge(g, cl).plan]
    pairs = iop.legal_pairs(g, len(cl.devices))
    if pairs:     # a plan with a partial-sum stage and a reduce-scatter too
        plans.append(iop.plan_of(g, cl, {pairs[0]: iop.speed_counts(pairs[0].channels, cl)}))
    for plan in plans:
        rep = evaluate(plan, g, cl)
        b = builder(solver, horizon_s=10 * rep.latency_s + 1)
        sch = SymSchedule(b, cl.names, link=cl.link, latency_s=cl.latency_s, bw=cl.bw)
        # a literal that is 0 must leave the schedule untouched: add a copy of every stage, switched off
        off = b.boolean("off")
        b.equal(Lin.var(off), 0)
        for st in sym_stages(plan, g, cl):
            sch.stage(st)
            sch.stage(SymStage(st.label, st.transfers, st.output, st.needs,
                               {d: f.scaled(3.0) for d, f in st.seconds.items()}), off)
        lat = sch.finish(plan.sink, plan.output, plan.final)
        b.minimize(lat)
        r = b.solve(solver)
        assert r.status == "optimal"
        tol = 1e-9 if solver == "highs" else 2e-6 * len(plan.stages)
        assert r.objective == pytest.approx(rep.latency_s, rel=tol, abs=tol)
