"""The registry of planning methods: name -> heuristic (and exact model, where one exists).

Every entry's ``heuristic(graph, cluster, model=..., source=...)`` returns a
:class:`~partopt.solvers.Solution`; ``exact`` is None for methods without an exact model, and
``model(graph, cluster, solver=...)`` builds that exact model itself (for export).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UnknownMethodError
from . import baselines, best, dn2pciot, dpfp, iop, nptp


@dataclass(frozen=True)
class Method:
    name: str
    heuristic: Callable
    exact: Optional[Callable]
    description: str
    demo: bool = True           # run by `partopt demo` (the DN2PCIoT family is for small chains only)
    options: tuple[str, ...] = ()   # extra keyword options the CLI may pass
    model: Optional[Callable] = None  # the exact model itself (PuLP or CP-SAT), for export


METHODS: dict[str, Method] = {
    "single": Method("single", baselines.single, None, "whole model on the fastest device that fits"),
    "layerwise": Method("layerwise", baselines.layerwise, None,
                        "MoDNN-style: rows of each layer by speed, gathered at the master after every layer"),
    "coedge": Method("coedge", baselines.coedge, None,
                     "CoEdge-style: rows of each layer by speed, halo exchange only, memory-aware shares"),
    "coedge-concat": Method("coedge-concat", baselines.coedge_concat, None,
                            "CoEdge as the IOP paper frames it: output channels of each layer by speed, "
                            "activations all-gathered before every conv/linear layer", demo=False),
    "fused": Method("fused", dpfp.fused, None,
                    "DeepThings-style: the whole conv part as one receptive-field block, one scatter, one gather"),
    "dpfp": Method("dpfp", dpfp.heuristic, dpfp.exact,
                   "RFS + DPFP: receptive-field blocks chosen by dynamic programming "
                   "(exact: optimal integer rows per block by a DP, then the blocking with the memory rule)",
                   model=dpfp.model),
    "iop": Method("iop", iop.heuristic, iop.exact,
                  "IOP: conv pairs split by output then input channels, greedy pairing (exact: MILP/CP-SAT)",
                  options=("pairs", "outside"), model=iop.model),
    "nptp": Method("nptp", nptp.heuristic, nptp.exact,
                   "NPTP: non-penetrative (guillotine) tiles by speed, best cut orientations "
                   "(exact: rectangles on a cell grid, CP-SAT/MILP)", options=("grid",), model=nptp.model),
    "ftp": Method("ftp", nptp.ftp, None, "DeepThings-style n x m tile grid, layer by layer"),
    "best": Method("best", best.heuristic, best.exact,
                   "the fastest plan over every method's heuristic, device subsets and segment plans "
                   "(exact: the segment model with memory, MILP/CP-SAT, against every heuristic plan)",
                   model=best.model),
    "dn2pciot": Method("dn2pciot", dn2pciot.heuristic, dn2pciot.exact,
                       "DN2PCIoT: neuron groups of a small chain CNN on IoT devices, for inference rate or bytes "
                       "(exact: MILP/CP-SAT)", demo=False, options=("grouping", "objective"),
                       model=dn2pciot.model),
    "dn2pciot-metis": Method("dn2pciot-metis", dn2pciot.metis, None,
                             "METIS k-way cut of the DN2PCIoT graph (memory-blind)", demo=False,
                             options=("grouping", "objective")),
    "dn2pciot-per-layer": Method("dn2pciot-per-layer", dn2pciot.per_layer, None,
                                 "whole layers on devices in order (framework-style)", demo=False,
                                 options=("grouping", "objective")),
    "dn2pciot-greedy": Method("dn2pciot-greedy", dn2pciot.greedy, None,
                              "DN2PCIoT graph, vertices to the least-loaded device that fits", demo=False,
                              options=("grouping", "objective")),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
