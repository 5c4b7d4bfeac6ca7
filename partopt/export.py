"""One instance's exact model, written for another tool or a paper (``partopt export``).

- ``lp`` / ``mps``: the method's MILP as PuLP builds it, written by PuLP itself
  (``LpProblem.writeLP`` / ``writeMPS``), readable by CBC, HiGHS, Gurobi, CPLEX, SCIP. An
  objective constant, which PuLP would drop, is carried by a variable fixed at 1
  (``objective_constant``), so the file's optimum is the model's. Every MILP states time in
  microseconds (:data:`partopt.solvers.MILP_UNITS_PER_S`; IOP's and DN2PCIoT's coarser where
  the horizon is long, :func:`partopt.solvers.milp_units_per_s`), bytes as bytes.
  DPFP's export is the model ``dpfp.exact`` solves: the blocking with the memory rule over
  blocks priced with their optimal integer rows (found by the row DP first).
  best's export is its segment model, which ``best.exact`` compares with the heuristic plans
  of the union afterwards.
- ``tex``: a LaTeX fragment for a paper: a table of this instance (model, cluster, devices,
  ops, the model's variables by kind and its constraints) followed by the method's general
  formulation from ``formulations/<method>.tex``, so the fragment is self-contained and can be
  ``\\input`` as it is.

Example:
    >>> from partopt.cluster import preset
    >>> from partopt.graph import LayerGraph
    >>> from partopt.zoo import example_input, load_model
    >>> net, shape, _ = load_model("lenet5"); g = LayerGraph.from_module(net, example_input(shape))
    >>> p = export(g, preset("pi4x2"), "iop", "lp", "/tmp/partopt-iop.lp", model="lenet5")
    >>> open(p).readline().startswith("\\\\*")
    True
"""
from __future__ import annotations

import os
from typing import Any

from .cluster import Cluster
from .errors import PartoptError
from .graph import LayerGraph
from .solvers import export_model

FORMATS = ("lp", "mps", "tex")
FORMULATIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "formulations")


def milp(graph: LayerGraph, cluster: Cluster, method: str, solver: str = "highs", **options: Any):
    """The PuLP problem of ``method``'s exact model on this instance."""
    if solver not in ("cbc", "highs"):
        raise PartoptError(f"export writes the MILP build (solver cbc or highs), not {solver!r}")
    from .methods import METHODS, get_method
    build = get_method(method).model
    if build is None:
        known = ", ".join(m.name for m in METHODS.values() if m.model is not None)
        raise PartoptError(f"method {method!r} has no exact model to export; methods with one: {known}")
    prob = build(graph, cluster, solver=solver, **options)
    if not hasattr(prob, "writeLP"):
        raise PartoptError(f"{method}: the exact model is not a PuLP problem")
    return fold_constant(prob)


def fold_constant(prob):
    """Move the objective's constant onto a variable fixed at 1 (``objective_constant``).

    PuLP writes LP and MPS files without the objective's constant term, so a file read back
    would report an optimum off by that constant (DPFP's tail after the last block, for one).
    """
    import pulp
    c = prob.objective.constant
    if c:
        one = pulp.LpVariable("objective_constant", lowBound=1, upBound=1)
        prob.setObjective(prob.objective - c + c * one)
    return prob


def instance_tex(graph: LayerGraph, cluster: Cluster, method: str, prob, model: str) -> str:
    """A ``tabular`` describing this instance and the size of its model."""
    variables = prob.variables()
    binary = sum(v.cat == "Integer" and v.lowBound == 0 and v.upBound == 1 for v in variables)
    integer = sum(v.cat == "Integer" for v in variables) - binary
    rows = [("model", model), ("cluster", cluster.name), ("devices", len(cluster.devices)),
            ("ops", len(graph.ops)), ("method", method), ("binary variables", binary),
            ("integer variables", integer), ("continuous variables", len(variables) - binary - integer),
            ("constraints", len(prob.constraints))]
    from .report import tex_escape
    body = "\n".join(f"{tex_escape(str(k))} & {tex_escape(str(v))} \\\\" for k, v in rows)
    return f"\\begin{{tabular}}{{lr}}\n\\hline\n{body}\n\\hline\n\\end{{tabular}}\n"


def export(graph: LayerGraph, cluster: Cluster, method: str, fmt: str, path: str, *, solver: str = "highs",
           model: str = "model", **options: Any) -> str:
    """Write ``method``'s exact model of this instance to ``path`` as ``fmt`` (lp, mps or tex)."""
    if fmt not in FORMATS:
        raise PartoptError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "tex" and not path.endswith("." + fmt):
        raise PartoptError(f"--format {fmt} writes a .{fmt} file; got {path!r}")
    prob = milp(graph, cluster, method, solver, **options)
    if fmt in ("lp", "mps"):
        return export_model(prob, path)
    src = os.path.join(FORMULATIONS, f"{method}.tex")
    if not os.path.exists(src):
        raise PartoptError(f"{src} not found: --format tex needs partopt's source tree (pip install -e)")
    with open(src) as f:
        general = f.read()
    with open(path, "w") as f:
        f.write(f"% partopt export: {method} on {model} / {cluster.name}\n")
        f.write(instance_tex(graph, cluster, method, prob, model))
        f.write("\n")
        f.write(general)
    return path
