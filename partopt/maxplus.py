"""The schedule of :func:`partopt.plan.evaluate` as linear constraints, for exact models.

``evaluate`` prices a plan with a list schedule whose every start time is a max of sums
(messages served in a fixed order, see :mod:`partopt.plan`). :class:`SymSchedule` states the
same recurrences over *variables*: each ``max`` becomes a variable bounded below by each of its
terms. Minimising the latency then makes every variable on the critical path equal to its
``evaluate`` value, so the optimum of an exact model built with it is the latency that
``evaluate`` gives the optimal plan (to the solver's tolerance).

Choices between alternative stages are *variants*: each stage is run under a literal (a 0/1
variable); under literal 0 its constraints are switched off and the schedule's state passes
through unchanged. Compute times (seconds, read off :func:`partopt.plan.stage_compute_s`, so
per-kind rates and the task and stage overheads come with them) may be affine in integer variables (work
proportional to a device's channel count, say).

Two back-ends share one small interface (:class:`Builder`): :class:`PulpBuilder` (CBC or
HiGHS; switched-off constraints by big-M) and :class:`CpsatBuilder` (CP-SAT; times in integer
ticks of ``1 / tick`` seconds, switched-off constraints by enforcement literals).

Example: two devices, one stage of 2 ms on ``a`` and 4 ms on ``b``; the plan is the model's
input at ``a``, no transfers:

    >>> b = PulpBuilder(big_m=10.0)
    >>> s = SymSchedule(b, ["a", "b"], link="mesh", latency_s=0.0, bw=lambda x, y: 1e6)
    >>> s.stage(SymStage("st", [], "y", {}, {"a": Lin.of(0.002), "b": Lin.of(0.004)}))
    >>> L = s.finish("a", "y", []); b.minimize(L); r = b.solve("cbc")
    >>> r.status, round(r.objective, 6)
    ('optimal', 0.002)
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

from .cost import transfer_time
from .errors import SolverError
from .plan import Transfer
from .solvers import CPSAT_UNITS_PER_S, SolveResult, milp_units_per_s, solve_cpsat, solve_milp


@dataclass
class Lin:
    """An affine expression ``const + sum(coef * variable)`` over variable names."""

    terms: dict[str, float] = field(default_factory=dict)
    const: float = 0.0

    @staticmethod
    def of(c: float) -> "Lin":
        """The constant ``c``."""
        return Lin({}, float(c))

    @staticmethod
    def var(name: str, coef: float = 1.0) -> "Lin":
        return Lin({name: coef}, 0.0)

    def __add__(self, other: "Lin | float") -> "Lin":
        if not isinstance(other, Lin):
            return Lin(dict(self.terms), self.const + float(other))
        t = dict(self.terms)
        for k, v in other.terms.items():
            t[k] = t.get(k, 0.0) + v
        return Lin(t, self.const + other.const)

    def scaled(self, f: float) -> "Lin":
        return Lin({k: v * f for k, v in self.terms.items()}, self.const * f)


class Builder:
    """What :class:`SymSchedule` and the methods need of a back-end.

    Variables are named; ``time`` variables are seconds (>= 0), ``integer`` and ``boolean`` are
    counts and choices, ``quantity`` a non-negative amount that is not a time (bytes).
    ``at_least(v, e, when, big_m)``: ``v >= e`` (only when the boolean ``when`` is 1, if given;
    ``big_m``, seconds: at least any value ``e`` takes, for the PuLP back-end's switch, the
    builder's horizon if not given). ``at_most(e, rhs, when)``: ``e <= rhs`` likewise, for
    quantities that are not times (bytes): pass ``big_m`` for the PuLP back-end.
    ``equal(e, rhs)``: ``e == rhs``. ``bounds(v)``: (lowest, highest) value of a variable
    (a time's highest: the horizon, or a tighter one set by ``time(name, hi)``).
    """

    def time(self, name: str, hi: Optional[float] = None) -> str: ...
    def integer(self, name: str, lo: int, hi: int) -> str: ...
    def boolean(self, name: str) -> str: ...
    def quantity(self, name: str, hi: float) -> str: ...
    def at_least(self, v: str, e: Lin, when: Optional[str] = None, big_m: Optional[float] = None) -> None: ...
    def bounds(self, v: str) -> tuple[float, float]: ...
    def at_most(self, e: Lin, rhs: float, when: Optional[str] = None, big_m: float = 0.0) -> None: ...
    def equal(self, e: Lin, rhs: float) -> None: ...
    def minimize(self, v: str) -> None: ...
    def hint(self, v: str, value: float) -> None: ...
    def solve(self, solver: str, time_limit: Optional[float] = None, threads: Optional[int] = None) -> SolveResult: ...
    def value(self, v: str) -> float: ...


class PulpBuilder(Builder):
    """PuLP (CBC or HiGHS). Times are stated in microseconds, coarser where ``big_m`` is long
    (:func:`partopt.solvers.milp_units_per_s`; the solvers' tolerances are absolute), read back
    in seconds. ``big_m`` (seconds) must exceed any time in any plan of the model."""

    def __init__(self, big_m: float, name: str = "partopt"):
        import pulp

        self.pulp = pulp
        self.prob = pulp.LpProblem(name, pulp.LpMinimize)
        self.scale = milp_units_per_s(float(big_m))
        self.big_m = float(big_m) * self.scale
        self.horizon_s = float(big_m)
        self.vars: dict[str, object] = {}
        self.is_time: set[str] = set()
        self.range: dict[str, tuple[float, float]] = {}
        self.obj_scale = self.scale

    def _new(self, name, is_time=False, **kw):
        if name in self.vars:
            raise SolverError(f"variable {name!r} declared twice")
        v = self.pulp.LpVariable(name, **kw)
        self.vars[name] = v
        if is_time:
            self.is_time.add(name)
        return name

    def time(self, name, hi=None):
        self.range[name] = (0.0, self.horizon_s if hi is None else min(float(hi), self.horizon_s))
        return self._new(name, is_time=True, lowBound=0)

    def integer(self, name, lo, hi):
        self.range[name] = (float(lo), float(hi))
        return self._new(name, lowBound=lo, upBound=hi, cat="Integer")

    def boolean(self, name):
        self.range[name] = (0.0, 1.0)
        return self._new(name, cat="Binary")

    def quantity(self, name, hi):
        self.range[name] = (0.0, float(hi))
        return self._new(name, lowBound=0, upBound=hi)

    def bounds(self, v):
        return self.range[v]

    def _expr(self, e: Lin, scale: float = 1.0):
        """``e`` in model units: a time's constant and the seconds per unit of a count scaled,
        time variables (already in microseconds) as they are."""
        return (self.pulp.lpSum((c if k in self.is_time else c * scale) * self.vars[k] for k, c in e.terms.items() if c)
                + e.const * scale)

    def at_least(self, v, e, when=None, big_m=None):
        scale = self.scale if v in self.is_time else 1.0
        if when is None:
            self.prob += self.vars[v] >= self._expr(e, scale)
        else:
            m = self.big_m if big_m is None else min(self.big_m, float(big_m) * scale)
            self.prob += self.vars[v] >= self._expr(e, scale) - m * (1 - self.vars[when])

    def at_most(self, e, rhs, when=None, big_m=0.0):
        if when is None:
            self.prob += self._expr(e) <= rhs
        else:
            self.prob += self._expr(e) <= rhs + big_m * (1 - self.vars[when])

    def equal(self, e, rhs):
        self.prob += self._expr(e) == rhs

    def minimize(self, v):
        self.prob.setObjective(self.pulp.lpSum([self.vars[v]]))
        self.obj_scale = self.scale if v in self.is_time else 1.0

    def hint(self, v, value):
        pass  # PuLP's warm start reaches CBC only, and a partial start does not help it here

    def solve(self, solver="highs", time_limit=None, threads=None, highs_options=None):
        return solve_milp(self.prob, solver, time_limit=time_limit, threads=threads, scale=self.obj_scale,
                          highs_options=highs_options)

    def value(self, v):
        x = self.vars[v].value()  # type: ignore[attr-defined]
        if x is None:
            return 0.0
        return float(x) / self.scale if v in self.is_time else float(x)


class CpsatBuilder(Builder):
    """CP-SAT. Times are integer ticks of ``1 / tick`` seconds (default: picoseconds,
    :data:`partopt.solvers.CPSAT_UNITS_PER_S`); time constants and coefficients are rounded to
    ticks, so objectives agree with the MILP to a few ticks per message on the critical path."""

    def __init__(self, horizon_s: float, tick: float = CPSAT_UNITS_PER_S):
        from ortools.sat.python import cp_model

        self.cp = cp_model
        self.model = cp_model.CpModel()
        self.tick = float(tick)
        self.horizon = int(horizon_s * tick) + 1
        self.vars: dict[str, object] = {}
        self.is_time: set[str] = set()
        self.range: dict[str, tuple[float, float]] = {}
        self.solver = None

    def _new(self, name, v, is_time=False):
        if name in self.vars:
            raise SolverError(f"variable {name!r} declared twice")
        self.vars[name] = v
        if is_time:
            self.is_time.add(name)
        return name

    def time(self, name, hi=None):
        self.range[name] = (0.0, self.horizon / self.tick if hi is None else min(float(hi), self.horizon / self.tick))
        return self._new(name, self.model.new_int_var(0, self.horizon, name), True)

    def integer(self, name, lo, hi):
        self.range[name] = (float(lo), float(hi))
        return self._new(name, self.model.new_int_var(int(lo), int(hi), name))

    def boolean(self, name):
        self.range[name] = (0.0, 1.0)
        return self._new(name, self.model.new_bool_var(name))

    def quantity(self, name, hi):
        self.range[name] = (0.0, float(hi) + 1)
        return self._new(name, self.model.new_int_var(0, int(hi) + 1, name))

    def bounds(self, v):
        return self.range[v]

    def _expr(self, e: Lin, scale: float):
        out = round(e.const * scale)
        for k, c in e.terms.items():
            coef = c if k in self.is_time else c * scale
            if round(coef):
                out += round(coef) * self.vars[k]
        return out

    def at_least(self, v, e, when=None, big_m=None):      # enforcement literals: no big-M
        ct = self.model.add(self.vars[v] >= self._expr(e, self.tick))
        if when is not None:
            ct.only_enforce_if(self.vars[when])

    def at_most(self, e, rhs, when=None, big_m=0.0):
        ct = self.model.add(self._expr(e, 1.0) <= round(rhs))
        if when is not None:
            ct.only_enforce_if(self.vars[when])

    def equal(self, e, rhs):
        self.model.add(self._expr(e, 1.0) == round(rhs))

    def hint(self, v, value):
        self.model.add_hint(self.vars[v], int(round(value)))

    def minimize(self, v):
        self.model.minimize(self.vars[v])
        self.obj_scale = self.tick if v in self.is_time else 1.0

    def solve(self, solver="cpsat", time_limit=None, threads=None):
        r, self.solver = solve_cpsat(self.model, time_limit=time_limit, workers=threads,
                                     scale=getattr(self, "obj_scale", self.tick))
        return r

    def value(self, v):
        x = self.solver.value(self.vars[v])  # type: ignore[union-attr]
        return x / self.tick if v in self.is_time else float(x)


def builder(solver: str, horizon_s: float) -> Builder:
    """The back-end for ``solver`` (cbc | highs | cpsat); ``horizon_s`` bounds every time."""
    if solver in ("cbc", "highs"):
        return PulpBuilder(big_m=horizon_s)
    if solver == "cpsat":
        return CpsatBuilder(horizon_s)
    raise SolverError(f"unknown solver {solver!r}; choose from cbc, highs, cpsat")


M_SLACK_REL, M_SLACK_S = 1e-9, 1e-6     # a switched-off row's big-M: the term's largest value, and this much more


@dataclass
class SymStage:
    """One routed stage as the schedule sees it: its transfers, output tensor, the tensors each
    device reads from outside the stage, and each computing device's compute seconds (affine;
    :func:`partopt.plan.stage_compute_s` of a concrete stage)."""

    label: str
    transfers: list[Transfer]
    output: str
    needs: dict[str, list[str]]
    seconds: dict[str, Lin]


class SymSchedule:
    """:class:`partopt.plan.Schedule` over variables (no gathers: the methods using it have none)."""

    def __init__(self, b: Builder, order: list[str], *, link: str, latency_s: float,
                 bw: Callable[[str, str], float]):
        self.b, self.link, self.latency_s, self.bw = b, link, latency_s, bw
        self.rank = {d: i for i, d in enumerate(order)}
        self.dev_free: dict[str, Optional[str]] = {d: None for d in order}
        self.link_free: dict[str, Optional[str]] = defaultdict(lambda: None)
        self.ready: dict[tuple[str, str], Optional[str]] = {}
        self._n = 0

    def _var(self, tag: str, hi: Optional[float] = None) -> str:
        self._n += 1
        return self.b.time(f"t{tag}_{self._n}", hi)

    def highest(self, e: Lin) -> float:
        """The largest value ``e`` takes (seconds) when every variable in it is within its
        bounds: a time variable of this schedule at most the largest value of its terms, so
        the schedule that sets each variable to the max of its terms (the one ``evaluate``
        runs) keeps them all within. Each switched-off constraint's big-M is this, per
        constraint, instead of one horizon for all (tighter relaxation, smaller coefficients)."""
        total = e.const
        for k, c in e.terms.items():
            lo, hi = self.b.bounds(k)
            total += c * (hi if c > 0 else lo)
        return total

    def _max(self, tag: str, keep: Optional[str], terms: list[Lin], when: Optional[str]) -> str:
        """A new variable >= ``keep`` always and >= each of ``terms`` under ``when``."""
        hi = max([self.highest(t) for t in terms] + ([self.highest(Lin.var(keep))] if keep is not None else [0.0]))
        v = self._var(tag, hi)
        if keep is not None:
            self.b.at_least(v, Lin.var(keep))
        for t in terms:
            self.b.at_least(v, t, when, big_m=max(0.0, self.highest(t)) * (1 + M_SLACK_REL) + M_SLACK_S)
        return v

    @staticmethod
    def _lin(v: Optional[str]) -> Lin:
        return Lin.var(v) if v is not None else Lin()

    def send(self, phase: str, ts: list[Transfer], when: Optional[str]) -> dict[str, str]:
        msgs: dict[tuple[str, str], list[Transfer]] = defaultdict(list)
        for t in ts:
            msgs[(t.src, t.dst)].append(t)
        arrivals: dict[str, list[Lin]] = defaultdict(list)
        for src, dst in sorted(msgs, key=lambda k: (self.rank[k[0]], self.rank[k[1]])):
            group = msgs[(src, dst)]
            nb = sum(t.nbytes for t in group)
            res = "medium" if self.link == "shared" else f"{src}->{dst}"
            before = [Lin.var(r) for r in (self.ready.get((tensor, src)) for tensor in {t.tensor for t in group})
                      if r is not None]
            if self.link_free[res] is not None:
                before.append(Lin.var(self.link_free[res]))
            start = self._var("s", max([self.highest(x) for x in before], default=0.0))
            for x in before:
                self.b.at_least(start, x)
            end = Lin.var(start) + transfer_time(nb, self.bw(src, dst), self.latency_s)
            self.link_free[res] = self._max("lf", self.link_free[res], [end], when)
            arrivals[dst].append(end)
        return {d: self._max("arr", None, es, when) for d, es in arrivals.items()}

    def stage(self, s: SymStage, when: Optional[str] = None) -> None:
        """Run one stage under the literal ``when`` (always, if None)."""
        arrival = self.send(s.label, s.transfers, when)
        for dev in sorted(s.seconds, key=self.rank.__getitem__):
            dur = s.seconds[dev]
            starts = [self._lin(self.dev_free[dev])]
            if dev in arrival:
                starts.append(Lin.var(arrival[dev]))
            starts += [Lin.var(self.ready[(t, dev)]) for t in s.needs.get(dev, []) if self.ready.get((t, dev))]
            fin = self._max("f", self.dev_free[dev], [st + dur for st in starts], when)
            self.dev_free[dev] = fin
            self.ready[(s.output, dev)] = self._max("r", self.ready.get((s.output, dev)), [Lin.var(fin)], when)

    def finish(self, sink: str, output: str, final: list[Transfer]) -> str:
        """The latency variable: the output complete at ``sink``."""
        arr = self.send("final", final, None)
        terms = [Lin.var(arr[sink])] if sink in arr else []
        if self.ready.get((output, sink)):
            terms.append(Lin.var(self.ready[(output, sink)]))
        return self._max("latency", None, terms, None)
