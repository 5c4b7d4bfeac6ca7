import json

import pytest

from partopt.cluster import PRESETS, Cluster, Device, homogeneous, load_cluster, preset
from partopt.errors import ClusterError, UnknownPresetError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_roundtrip_json_and_toml(name, tmp_path):
    c = preset(name)
    for ext in ("json", "toml"):
        p = tmp_path / f"c.{ext}"
        c.save(str(p))
        d = load_cluster(str(p))
        assert d.to_dict() == c.to_dict() and d.bandwidth == c.bandwidth


GOOD = {"name": "lab", "link": "mesh", "latency_s": 0.001, "bandwidth_bytes_per_s": 1e6,
        "devices": [{"name": "a", "flops_per_s": 1e9, "memory_bytes": 10 ** 9},
                    {"name": "b", "flops_per_s": 2e9, "memory_bytes": 10 ** 9}],
        "links": [{"src": "a", "dst": "b", "bandwidth_bytes_per_s": 5e6}]}


def mutate(path, value):
    d = json.loads(json.dumps(GOOD))
    obj = d
    for k in path[:-1]:
        obj = obj[k]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return d


def test_file_overrides_links():
    c = Cluster.from_dict(GOOD)
    assert c.bw("a", "b") == 5e6 and c.bw("b", "a") == 1e6


@pytest.mark.parametrize("path,value,match", [
    (("devices", 0, "flops_per_s"), -1, "flops_per_s"),
    (("devices", 0, "memory_bytes"), 0, "memory_bytes"),
    (("devices", 1, "flops_per_s"), "fast", "flops_per_s"),
    (("bandwidth_bytes_per_s",), 0, "bandwidth"),
    (("bandwidth_bytes_per_s",), KeyError, "bandwidth"),
    (("links", 0, "dst"), "zz", "unknown device"),
    (("links", 0, "bandwidth_bytes_per_s"), -5, "bandwidth"),
    (("link",), "token-ring", "link"),
    (("latency_s",), -1, "latency"),
    (("devices",), [], "devices"),
    (("devices", 0, "speed"), 3, "unknown keys"),
])
def test_invalid_cluster_files(path, value, match):
    with pytest.raises(ClusterError, match=match):
        Cluster.from_dict(mutate(path, value))


def test_repeated_device_names():
    d = mutate(("links",), [])
    d["devices"][1]["name"] = "a"
    with pytest.raises(ClusterError, match="repeat"):
        Cluster.from_dict(d)


def test_load_errors(tmp_path):
    with pytest.raises(UnknownPresetError):
        load_cluster("no-such-preset")
    with pytest.raises(ClusterError, match="does not exist"):
        load_cluster(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClusterError, match="not valid JSON"):
        load_cluster(str(bad))
    badt = tmp_path / "bad.toml"
    badt.write_text("name = = 3")
    with pytest.raises(ClusterError, match="not valid TOML"):
        load_cluster(str(badt))


def test_constructors():
    c = homogeneous(3, link="mesh")
    assert len(c) == 3 and c.fastest.name == "pi0"
    assert c.scaled(10).bw("pi0", "pi1") == 10 * c.bw("pi0", "pi1")
    with pytest.raises(ClusterError):
        homogeneous(0)
    with pytest.raises(ClusterError):
        Cluster("x", (Device("a", 1.0, 1),), {}, 0.0, "mesh").device("b")


def test_rates_per_kind_and_task_overhead_round_trip_and_validate(tmp_path):
    """Cluster files carry a device's FLOP/s per op kind and the per-task overhead; bad values
    are refused with the key named; files without them read as before."""
    import json
    from partopt.cluster import Cluster, load_cluster
    from partopt.errors import ClusterError
    data = {"name": "k", "link": "mesh", "latency_s": 0.001, "bandwidth_bytes_per_s": 1e7, "task_overhead_s": 0.002,
            "stage_overhead_s": 0.003,
            "devices": [{"name": "a", "flops_per_s": 1e9, "memory_bytes": 2 ** 30,
                         "flops_per_s_by_kind": {"conv": 4e9, "pool": 1e8}},
                        {"name": "b", "flops_per_s": 2e9, "memory_bytes": 2 ** 30}]}
    c = Cluster.from_dict(data)
    a, b = c.devices
    assert (a.rate("conv"), a.rate("pool"), a.rate("linear"), b.rate("conv")) == (4e9, 1e8, 1e9, 2e9)
    assert c.task_overhead_s == 0.002 and not c.uniform_rates
    for ext in ("json", "toml"):
        p = str(tmp_path / f"k.{ext}")
        c.save(p)
        back = load_cluster(p)
        assert back.devices == c.devices and (back.task_overhead_s, back.stage_overhead_s) == (0.002, 0.003)
    plain = Cluster.from_dict({k: v for k, v in data.items() if not k.endswith("overhead_s")}
                              | {"devices": [data["devices"][1]]})
    assert plain.uniform_rates and not {"task_overhead_s", "stage_overhead_s"} & set(plain.to_dict())
    assert "flops_per_s_by_kind" not in plain.to_dict()["devices"][0]
    for bad, msg in [({"task_overhead_s": -1}, "task_overhead_s"), ({"stage_overhead_s": "x"}, "stage_overhead_s"),
                     ({"devices": [dict(data["devices"][0], flops_per_s_by_kind={"gemm": 1e9})]}, "unknown kinds"),
                     ({"devices": [dict(data["devices"][0], flops_per_s_by_kind={"conv": 0})]}, "conv"),
                     ({"devices": [dict(data["devices"][0], flops_per_s_by_kind=[1, 2])]}, "must be an object")]:
        with pytest.raises(ClusterError, match=msg):
            Cluster.from_dict(json.loads(json.dumps(data | bad)))


def test_a_one_device_cluster_round_trips():
    """One device has no links: its file says bandwidth 0 (or nothing), and reads back."""
    c = homogeneous(1, name="solo")
    back = Cluster.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back.names == ["pi0"] and back.bandwidth == {}
    assert Cluster.from_dict({"name": "s", "devices": [{"name": "a", "flops_per_s": 1e9, "memory_bytes": 1}]}).names == ["a"]
    with pytest.raises(ClusterError, match="bandwidth"):
        Cluster.from_dict({"devices": [{"name": "a", "flops_per_s": 1e9, "memory_bytes": 1},
                                       {"name": "b", "flops_per_s": 1e9, "memory_bytes": 1}]})
