"""The registry of planning methods: name -> heuristic (and exact model, where one exists).

Every entry's ``heuristic(graph, cluster, model=..., source=...)`` returns a
:class:`~partopt.solvers.Solution`; ``exact`` is None for methods without an exact model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import UnknownMethodError
from . import baselines, dpfp, iop


@dataclass(frozen=True)
class Method:
    name: str
    heuristic: Callable
    exact: Optional[Callable]
    description: str


METHODS: dict[str, Method] = {
    "single": Method("single", baselines.single, None, "whole model on the fastest device that fits"),
    "layerwise": Method("layerwise", baselines.layerwise, None,
                        "MoDNN-style: rows of each layer by speed, gathered at the master after every layer"),
    "coedge": Method("coedge", baselines.coedge, None,
                     "CoEdge-style: rows of each layer by speed, halo exchange only, memory-aware shares"),
    "fused": Method("fused", dpfp.fused, None,
                    "DeepThings-style: the whole conv part as one receptive-field block, one scatter, one gather"),
    "dpfp": Method("dpfp", dpfp.heuristic, dpfp.exact,
                   "RFS + DPFP: receptive-field blocks chosen by dynamic programming (exact: arc ILP)"),
    "iop": Method("iop", iop.heuristic, iop.exact,
                  "IOP: conv pairs split by output then input channels, greedy pairing (exact: MILP/CP-SAT)"),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethodError(f"unknown method {name!r}; methods: {', '.join(METHODS)}")
    return METHODS[name]
