"""Devices and the network between them; presets; JSON/TOML files.

A :class:`Cluster` has devices (name, FLOP/s, memory bytes, and optionally a FLOP/s per op
kind), a bandwidth in bytes/s for every ordered pair, a per-message latency in seconds, a
per-task and a per-stage overhead in seconds, and a link model:

- ``mesh``: full-duplex point-to-point links; each ordered pair carries one message at a time,
  different pairs in parallel.
- ``shared``: one shared medium (as one Wi-Fi channel): one message at a time in the whole
  cluster.

File format (JSON, or the same keys in TOML)::

    {"name": "lab", "link": "shared", "latency_s": 0.002, "bandwidth_bytes_per_s": 6.25e6,
     "devices": [{"name": "pi0", "flops_per_s": 8e9, "memory_bytes": 1610612736}, ...],
     "links": [{"src": "pi0", "dst": "pi1", "bandwidth_bytes_per_s": 1.25e7}]}

``links`` is optional and overrides the default bandwidth of single ordered pairs.

Compute rates per op kind (optional): a device may carry ``"flops_per_s_by_kind": {"conv":
1.4e11, "pool": 2e9, ...}`` with keys from :data:`RATE_KINDS`; an op whose kind is not listed
runs at the device's ``flops_per_s`` (:func:`partopt.cost.rate_kind` maps an op to its kind).
``"task_overhead_s"`` and ``"stage_overhead_s"`` (cluster level, default 0) are fixed times a
device adds to its compute: a device that runs k >= 1 tasks in a stage is busy for the sum of
their FLOPs / rate, plus k x task_overhead_s, plus stage_overhead_s once (its share of the
stage's set-up: receiving, assembling, reporting). ``latency_s`` is the fixed time of every
message. ``partopt calibrate`` fits the rates and both overheads on the machine it runs on.

Example:
    >>> from partopt.cluster import preset
    >>> c = preset("pi4x4")
    >>> [d.name for d in c.devices], c.link
    (['pi0', 'pi1', 'pi2', 'pi3'], 'shared')
"""
from __future__ import annotations

import functools

import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .errors import ClusterError, UnknownPresetError

KiB = 1024
GiB = 1024 ** 3
MiB = 1024 ** 2
LINK_MODELS = ("mesh", "shared")
#: the op kinds a device may give its own FLOP/s for (``flops_per_s_by_kind``)
RATE_KINDS = {
    "conv": "Conv2d, groups < input channels (dense and grouped convolutions)",
    "dwconv": "depthwise Conv2d (groups = input channels > 1)",
    "deconv": "ConvTranspose2d",
    "linear": "Linear",
    "pool": "max, average and adaptive average pooling, and spatial means",
    "eltwise": "batch norm, activations, add, mul, bilinear upsampling",
}


@dataclass(frozen=True)
class Device:
    """A device: ``flops_per_s`` (FLOP/s it sustains on CNN ops), ``memory_bytes`` for the model,
    and optionally its own FLOP/s per op kind (``flops_per_s_by_kind``: a mapping from
    :data:`RATE_KINDS`, kept as sorted (kind, FLOP/s) pairs so a device stays hashable).

    Example:
        >>> d = Device("pi", 8e9, 2**30, {"pool": 1e9})
        >>> d.rate("pool"), d.rate("conv")
        (1000000000.0, 8000000000.0)
        >>> d.seconds((("conv", 8e9), ("pool", 1e9)))
        2.0
    """

    name: str
    flops_per_s: float
    memory_bytes: int
    flops_per_s_by_kind: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        by = self.flops_per_s_by_kind
        items = by.items() if isinstance(by, dict) else by
        object.__setattr__(self, "flops_per_s_by_kind", tuple(sorted((str(k), float(v)) for k, v in items)))

    def rate(self, kind: str) -> float:
        """FLOP/s on ops of ``kind`` (one of :data:`RATE_KINDS`): its own rate if listed, else ``flops_per_s``."""
        for k, v in self.flops_per_s_by_kind:
            if k == kind:
                return v
        return self.flops_per_s

    def seconds(self, flops_by_kind) -> float:
        """Seconds to compute ``flops_by_kind`` ((kind, FLOPs) pairs, or a mapping): the sum of
        each kind's FLOPs over this device's rate for it (no task overhead)."""
        items = flops_by_kind.items() if isinstance(flops_by_kind, dict) else flops_by_kind
        by_rate: dict[float, float] = {}       # FLOPs summed per rate first: a device without
        for k, f in items:                     # rates per kind gives exactly FLOPs / flops_per_s
            if f:
                r = self.rate(k)
                by_rate[r] = by_rate.get(r, 0) + f
        return sum(f / r for r, f in by_rate.items())


@dataclass(frozen=True)
class Cluster:
    """Devices, ordered-pair bandwidths (bytes/s), per-message latency (s), the link model, the
    per-task overhead (s) every task adds to its device's compute and the per-stage overhead (s)
    a device adds once in every stage in which it runs a task."""

    name: str
    devices: tuple[Device, ...]
    bandwidth: dict[tuple[str, str], float] = field(hash=False)
    latency_s: float = 0.0
    link: str = "mesh"
    task_overhead_s: float = 0.0
    stage_overhead_s: float = 0.0

    def __post_init__(self):
        _validate(self)

    # -- queries -------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    @functools.cached_property
    def _by_name(self) -> dict[str, Device]:
        return {d.name: d for d in self.devices}

    def device(self, name: str) -> Device:
        d = self._by_name.get(name)
        if d is not None:
            return d
        raise ClusterError(f"cluster {self.name!r} has no device {name!r}; devices: {', '.join(self.names)}")

    def bw(self, src: str, dst: str) -> float:
        """Bandwidth in bytes/s from ``src`` to ``dst``."""
        return self.bandwidth[(src, dst)]

    @property
    def fastest(self) -> Device:
        return max(self.devices, key=lambda d: (d.flops_per_s, d.memory_bytes))

    def __len__(self) -> int:
        return len(self.devices)

    def scaled(self, bandwidth_factor: float = 1.0, name: Optional[str] = None) -> "Cluster":
        """The same cluster with every bandwidth multiplied by ``bandwidth_factor``."""
        return Cluster(name or f"{self.name}-bw{bandwidth_factor:g}", self.devices,
                       {k: v * bandwidth_factor for k, v in self.bandwidth.items()}, self.latency_s, self.link,
                       self.task_overhead_s, self.stage_overhead_s)

    def subset(self, names: list[str]) -> "Cluster":
        devs = tuple(self.device(n) for n in names)
        return Cluster(f"{self.name}[{','.join(names)}]", devs,
                       {(a, b): v for (a, b), v in self.bandwidth.items() if a in names and b in names},
                       self.latency_s, self.link, self.task_overhead_s, self.stage_overhead_s)

    @property
    def uniform_rates(self) -> bool:
        """True when no device has its own rate per kind and tasks cost no overhead: compute
        time is then FLOPs / ``flops_per_s`` alone."""
        return (self.task_overhead_s == 0 and self.stage_overhead_s == 0
                and not any(d.flops_per_s_by_kind for d in self.devices))

    @property
    def one_task_overhead_s(self) -> float:
        """Seconds of overhead of a device that runs one task in a stage: task + stage overhead."""
        return self.task_overhead_s + self.stage_overhead_s

    # -- files ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        bws = sorted(set(self.bandwidth.values()))
        default = max(bws, key=lambda v: list(self.bandwidth.values()).count(v)) if bws else 0.0
        links = [{"src": a, "dst": b, "bandwidth_bytes_per_s": v}
                 for (a, b), v in sorted(self.bandwidth.items()) if v != default]
        out = {"name": self.name, "link": self.link, "latency_s": self.latency_s,
               "bandwidth_bytes_per_s": default,
               "devices": [{"name": d.name, "flops_per_s": d.flops_per_s, "memory_bytes": d.memory_bytes,
                            **({"flops_per_s_by_kind": dict(d.flops_per_s_by_kind)} if d.flops_per_s_by_kind else {})}
                           for d in self.devices],
               "links": links}
        for k in ("task_overhead_s", "stage_overhead_s"):   # written only when set, so files
            if getattr(self, k):                               # without them stay as they were
                out[k] = getattr(self, k)
        return out

    @staticmethod
    def from_dict(data: Any, where: str = "cluster") -> "Cluster":
        """Build and validate a cluster from the file format above (raises ClusterError)."""
        if not isinstance(data, dict):
            raise ClusterError(f"{where}: expected an object with 'devices'")
        unknown = set(data) - {"name", "link", "latency_s", "bandwidth_bytes_per_s", "devices", "links",
                               "task_overhead_s", "stage_overhead_s"}
        if unknown:
            raise ClusterError(f"{where}: unknown keys {sorted(unknown)}")
        devs = data.get("devices")
        if not isinstance(devs, list) or not devs:
            raise ClusterError(f"{where}: 'devices' must be a non-empty list")
        devices = []
        for i, d in enumerate(devs):
            if not isinstance(d, dict):
                raise ClusterError(f"{where}: device {i} must be an object")
            missing = {"name", "flops_per_s", "memory_bytes"} - set(d)
            if missing:
                raise ClusterError(f"{where}: device {i} lacks {sorted(missing)}")
            extra = set(d) - {"name", "flops_per_s", "memory_bytes", "flops_per_s_by_kind"}
            if extra:
                raise ClusterError(f"{where}: device {i} has unknown keys {sorted(extra)}")
            by = d.get("flops_per_s_by_kind", {}) or {}
            if not isinstance(by, dict):
                raise ClusterError(f"{where}: device {d['name']} flops_per_s_by_kind must be an object "
                                   f"{{kind: FLOP/s}}")
            bad = sorted(set(by) - set(RATE_KINDS))
            if bad:
                raise ClusterError(f"{where}: device {d['name']} flops_per_s_by_kind has unknown kinds {bad}; "
                                   f"kinds: {', '.join(RATE_KINDS)}")
            rates = {k: _num(v, f"{where}: device {d['name']} flops_per_s_by_kind[{k}]") for k, v in by.items()}
            devices.append(Device(str(d["name"]), _num(d["flops_per_s"], f"{where}: device {d['name']} flops_per_s"),
                                  int(_num(d["memory_bytes"], f"{where}: device {d['name']} memory_bytes")), rates))
        names = [d.name for d in devices]
        if len(devices) == 1 and not data.get("bandwidth_bytes_per_s"):
            default = 0.0      # one device has no links (to_dict writes 0 for it)
        elif "bandwidth_bytes_per_s" not in data:
            raise ClusterError(f"{where}: 'bandwidth_bytes_per_s' (default link bandwidth) is required")
        else:
            default = _num(data["bandwidth_bytes_per_s"], f"{where}: bandwidth_bytes_per_s")
        bw = {(a, b): default for a in names for b in names if a != b}
        for j, l in enumerate(data.get("links", []) or []):
            if not isinstance(l, dict) or {"src", "dst", "bandwidth_bytes_per_s"} - set(l):
                raise ClusterError(f"{where}: link {j} needs src, dst, bandwidth_bytes_per_s")
            for end in ("src", "dst"):
                if l[end] not in names:
                    raise ClusterError(f"{where}: link {j} names unknown device {l[end]!r}")
            if l["src"] == l["dst"]:
                raise ClusterError(f"{where}: link {j} goes from {l['src']!r} to itself")
            bw[(l["src"], l["dst"])] = _num(l["bandwidth_bytes_per_s"], f"{where}: link {j} bandwidth")
        lat = data.get("latency_s", 0.0)
        if not isinstance(lat, (int, float)) or isinstance(lat, bool) or not math.isfinite(lat) or lat < 0:
            raise ClusterError(f"{where}: latency_s must be a number >= 0, got {lat!r}")
        ovh = {}
        for k in ("task_overhead_s", "stage_overhead_s"):
            v = data.get(k, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ClusterError(f"{where}: {k} must be a number >= 0, got {v!r}")
            ovh[k] = float(v)
        return Cluster(str(data.get("name", "cluster")), tuple(devices), bw, float(lat), str(data.get("link", "mesh")),
                       ovh["task_overhead_s"], ovh["stage_overhead_s"])

    def save(self, path: str) -> None:
        """Write as JSON (``.json``) or TOML (``.toml``)."""
        d = self.to_dict()
        with open(path, "w") as f:
            if path.endswith(".toml"):
                f.write(_to_toml(d))
            else:
                json.dump(d, f, indent=2)


def _num(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ClusterError(f"{what} must be a positive number, got {v!r}")
    return float(v)


def _validate(c: Cluster) -> None:
    if not c.devices:
        raise ClusterError(f"cluster {c.name!r} has no devices")
    names = [d.name for d in c.devices]
    if len(set(names)) != len(names):
        raise ClusterError(f"cluster {c.name!r}: device names repeat: {names}")
    for d in c.devices:
        if not d.name:
            raise ClusterError(f"cluster {c.name!r}: a device has an empty name")
        _num(d.flops_per_s, f"device {d.name} flops_per_s")
        _num(d.memory_bytes, f"device {d.name} memory_bytes")
        for k, v in d.flops_per_s_by_kind:
            if k not in RATE_KINDS:
                raise ClusterError(f"device {d.name}: unknown rate kind {k!r}; kinds: {', '.join(RATE_KINDS)}")
            _num(v, f"device {d.name} flops_per_s_by_kind[{k}]")
    if c.link not in LINK_MODELS:
        raise ClusterError(f"cluster {c.name!r}: link must be one of {LINK_MODELS}, got {c.link!r}")
    if not math.isfinite(c.latency_s) or c.latency_s < 0:
        raise ClusterError(f"cluster {c.name!r}: latency_s must be >= 0")
    for k in ("task_overhead_s", "stage_overhead_s"):
        v = getattr(c, k)
        if not math.isfinite(v) or v < 0:
            raise ClusterError(f"cluster {c.name!r}: {k} must be >= 0")
    for a in names:
        for b in names:
            if a != b:
                if (a, b) not in c.bandwidth:
                    raise ClusterError(f"cluster {c.name!r}: no bandwidth from {a} to {b}")
                _num(c.bandwidth[(a, b)], f"bandwidth {a}->{b}")


def _to_toml(d: dict[str, Any]) -> str:
    def val(v):
        return json.dumps(v)
    lines = [f"{k} = {val(d[k])}" for k in ("name", "link", "latency_s", "bandwidth_bytes_per_s", "task_overhead_s",
                                                "stage_overhead_s")
             if k in d]
    for dev in d["devices"]:
        lines += ["", "[[devices]]"] + [f"{k} = {val(v)}" for k, v in dev.items() if k != "flops_per_s_by_kind"]
        if "flops_per_s_by_kind" in dev:
            lines += ["flops_per_s_by_kind = {" + ", ".join(f"{k} = {val(v)}" for k, v in dev["flops_per_s_by_kind"].items())
                      + "}"]
    for l in d["links"]:
        lines += ["", "[[links]]"] + [f"{k} = {val(v)}" for k, v in l.items()]
    return "\n".join(lines) + "\n"


def homogeneous(n: int, flops_per_s: float = 8e9, memory_bytes: int = int(1.5 * GiB),
                bandwidth_bytes_per_s: float = 6.25e6, latency_s: float = 0.002, link: str = "shared",
                prefix: str = "pi", name: Optional[str] = None) -> Cluster:
    """``n`` identical devices with one bandwidth for every pair."""
    if not isinstance(n, int) or n < 1:
        raise ClusterError(f"a cluster needs at least one device, got {n!r}")
    names = [f"{prefix}{i}" for i in range(n)]
    return Cluster(name or f"{prefix}x{n}", tuple(Device(x, flops_per_s, memory_bytes) for x in names),
                   {(a, b): bandwidth_bytes_per_s for a in names for b in names if a != b}, latency_s, link)


def heterogeneous(specs: list[tuple[str, float, int]], bandwidth_bytes_per_s: float, latency_s: float = 0.001,
                  link: str = "mesh", name: str = "hetero") -> Cluster:
    """Devices from (name, FLOP/s, memory bytes) triples, one bandwidth for every pair."""
    names = [s[0] for s in specs]
    return Cluster(name, tuple(Device(*s) for s in specs),
                   {(a, b): bandwidth_bytes_per_s for a in names for b in names if a != b}, latency_s, link)


# Raspberry Pi 4 (4x Cortex-A72 @ 1.5 GHz): ~8 GFLOP/s sustained on float32 convs with PyTorch,
# 1.5 GiB of a 2 GiB board usable for the model; 802.11ac Wi-Fi at ~50 Mbit/s effective = 6.25e6 B/s.
PI4_FLOPS = 8e9
PI4_MEMORY = int(1.5 * GiB)
WIFI_BPS = 6.25e6

PRESETS: dict[str, tuple[str, Callable[[], Cluster]]] = {
    "pi4x2": ("two Raspberry-Pi-4-class devices (8 GFLOP/s, 1.5 GiB) on one Wi-Fi channel (6.25 MB/s, 2 ms)",
              lambda: homogeneous(2, name="pi4x2")),
    "pi4x4": ("four Raspberry-Pi-4-class devices (8 GFLOP/s, 1.5 GiB) on one Wi-Fi channel (6.25 MB/s, 2 ms)",
              lambda: homogeneous(4, name="pi4x4")),
    "pi4x8": ("eight Raspberry-Pi-4-class devices (8 GFLOP/s, 1.5 GiB) on one Wi-Fi channel (6.25 MB/s, 2 ms)",
              lambda: homogeneous(8, name="pi4x8")),
    "hetero3": ("edge server (100 GFLOP/s, 8 GiB), phone (30 GFLOP/s, 2 GiB), Pi 4 (8 GFLOP/s, 1 GiB); "
                "100 Mbit/s switched Ethernet (12.5 MB/s, 1 ms)",
                lambda: heterogeneous([("server", 100e9, 8 * GiB), ("phone", 30e9, 2 * GiB),
                                       ("pi", 8e9, 1 * GiB)], 12.5e6, 0.001, "mesh", "hetero3")),
    # RFS + DPFP (Li, Iosifidis, Zhang 2022). The stored copy of the paper carries only its
    # abstract, so its testbed is an ASSUMPTION: four Raspberry-Pi-4-class edge servers, as in the
    # same group's HALP prototype (three Raspberry Pi 4), on switched 100 Mbit/s links; es0 is the
    # requester holding the image. benchmarks/bench_dpfp.py sweeps device count and bandwidth.
    "dpfp-paper": ("ASSUMED setup of the RFS+DPFP paper: 4 edge servers (8 GFLOP/s, 1.5 GiB), switched "
                   "100 Mbit/s mesh (12.5 MB/s, 1 ms); es0 holds the input",
                   lambda: homogeneous(4, bandwidth_bytes_per_s=12.5e6, latency_s=0.001, link="mesh", prefix="es",
                                       name="dpfp-paper")),
    # IOP (Liu, Xu et al. 2024). Only the abstract is available: "IoT devices" with limited memory.
    # ASSUMED: three Raspberry-Pi-class devices with 1 GiB each on one shared Wi-Fi channel.
    "iop-paper": ("ASSUMED setup of the IOP paper: 3 IoT devices (8 GFLOP/s, 1 GiB) on one Wi-Fi channel "
                  "(6.25 MB/s, 2 ms)",
                  lambda: homogeneous(3, memory_bytes=GiB, name="iop-paper")),
    # NPTP (Liu, Xu et al. 2025). The stored text gives only the opening ("IoT devices", large
    # images, four DNN models, CoEdge as baseline). ASSUMED: four Raspberry-Pi-4-class devices on
    # one shared Wi-Fi channel, as in pi4x4; benchmarks/bench_nptp.py sweeps the bandwidth.
    "nptp-paper": ("ASSUMED setup of the NPTP paper: 4 IoT devices (8 GFLOP/s, 1.5 GiB) on one Wi-Fi channel "
                   "(6.25 MB/s, 2 ms)",
                   lambda: homogeneous(4, name="nptp-paper")),
    # DN2PCIoT (de Oliveira, Borin 2019) used four setups of constrained IoT devices differing in
    # memory, compute and communication; their numbers are not in the stored copy, so these are
    # ASSUMED: microcontroller-class devices (KiB of RAM, tens to hundreds of MFLOP/s) on one
    # shared low-rate radio. LeNet-5's parameters take 241 KiB, so whole-layer placement cannot
    # fit fc1 (188 KiB) on any device of setups 2-4.
    "dn2pciot-1": ("ASSUMED DN2PCIoT setup 1: 2 devices (100 MFLOP/s, 256 KiB), shared radio 250 kbit/s, 5 ms",
                   lambda: homogeneous(2, flops_per_s=100e6, memory_bytes=256 * KiB, bandwidth_bytes_per_s=31250,
                                       latency_s=0.005, prefix="iot", name="dn2pciot-1")),
    "dn2pciot-2": ("ASSUMED DN2PCIoT setup 2: 4 devices (100 MFLOP/s, 96 KiB), shared radio 1 Mbit/s, 5 ms",
                   lambda: homogeneous(4, flops_per_s=100e6, memory_bytes=96 * KiB, bandwidth_bytes_per_s=125000,
                                       latency_s=0.005, prefix="iot", name="dn2pciot-2")),
    "dn2pciot-3": ("ASSUMED DN2PCIoT setup 3: 2 devices (200 MFLOP/s, 128 KiB) + 2 (50 MFLOP/s, 64 KiB), "
                   "shared radio 1 Mbit/s, 5 ms",
                   lambda: heterogeneous([("iot0", 200e6, 128 * KiB), ("iot1", 200e6, 128 * KiB),
                                          ("iot2", 50e6, 64 * KiB), ("iot3", 50e6, 64 * KiB)], 125000, 0.005,
                                         "shared", "dn2pciot-3")),
    "dn2pciot-4": ("ASSUMED DN2PCIoT setup 4: 8 devices (50 MFLOP/s, 48 KiB), shared radio 250 kbit/s, 5 ms",
                   lambda: homogeneous(8, flops_per_s=50e6, memory_bytes=48 * KiB, bandwidth_bytes_per_s=31250,
                                       latency_s=0.005, prefix="iot", name="dn2pciot-4")),
}


def preset(name: str) -> Cluster:
    """A named preset (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown cluster {name!r}; presets: {', '.join(PRESETS)}; or give a .json/.toml file")
    return PRESETS[name][1]()


def load_cluster(spec: str) -> Cluster:
    """A preset name or a path to a ``.json``/``.toml`` cluster file (validated)."""
    if spec in PRESETS:
        return preset(spec)
    if os.path.isfile(spec):
        try:
            with open(spec, "rb") as f:
                raw = f.read()
            data = tomllib.loads(raw.decode()) if spec.endswith(".toml") else json.loads(raw)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ClusterError(f"{spec}: not valid {'TOML' if spec.endswith('.toml') else 'JSON'}: {e}") from None
        return Cluster.from_dict(data, where=spec)
    if spec.endswith((".json", ".toml")):
        raise ClusterError(f"cluster file {spec!r} does not exist")
    raise UnknownPresetError(f"unknown cluster {spec!r}; presets: {', '.join(PRESETS)}; or give a .json/.toml file")
