import textwrap

import pytest
import torch
import torch.nn as nn

from partopt.cluster import homogeneous
from partopt.errors import InputShapeError, ModelLoadError, UnknownModelError, UnsupportedOpError
from partopt.graph import LayerGraph
from partopt.methods.baselines import coedge, layerwise
from partopt.verify import verify
from partopt.zoo import ZOO, example_input, load_model, parse_shape


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_extracts(zoo, name):
    module, x, g = zoo(name)
    assert g.ops and g.output == g.ops[-1].name
    with torch.no_grad():
        y = module(x)
    assert g.op[g.output].out_shape == tuple(y.shape)
    assert g.total_param_bytes == sum(p.numel() * 4 for p in module.parameters()) + sum(
        b.numel() * 4 for n, b in module.named_buffers() if b.is_floating_point())


def test_lenet5_flops_by_hand(zoo):
    _, _, g = zoo("lenet5")
    conv1 = 2 * 6 * 28 * 28 * 1 * 25
    conv2 = 2 * 16 * 10 * 10 * 6 * 25
    fcs = 2 * (400 * 120 + 120 * 84 + 84 * 10)
    relus = 6 * 28 * 28 + 16 * 10 * 10 + 120 + 84
    pools = 4 * (6 * 14 * 14 + 16 * 5 * 5)
    assert g.total_flops == conv1 + conv2 + fcs + relus + pools == 845_852
    assert g.total_param_bytes == 4 * (156 + 2416 + 48120 + 10164 + 850)


def test_vgg16_flops_by_hand(zoo):
    _, _, g = zoo("vgg16")
    convs = [(3, 64, 224), (64, 64, 224), (64, 128, 112), (128, 128, 112), (128, 256, 56), (256, 256, 56),
             (256, 256, 56), (256, 512, 28), (512, 512, 28), (512, 512, 28), (512, 512, 14), (512, 512, 14),
             (512, 512, 14)]
    conv_macs = sum(ci * co * 9 * h * h for ci, co, h in convs)
    fc_macs = 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    assert conv_macs + fc_macs == 15_470_264_320          # the published 15.47 GMACs
    got = sum(o.flops for o in g.ops if o.kind in ("conv", "linear"))
    assert got == 2 * (conv_macs + fc_macs)
    assert g.total_param_bytes == 4 * 138_357_544


def test_kinds_and_attributes(zoo):
    _, _, g = zoo("mobilenet_v2")
    dw = [o for o in g.ops if o.kind == "conv" and o.groups > 1]
    assert dw and all(o.groups == o.in_chw[0] == o.out_chw[0] for o in dw)
    assert sum(o.kind == "add" for o in g.ops) == 10
    _, _, r = zoo("resnet18")
    mp = next(o for o in r.ops if o.kind == "maxpool")
    assert (mp.kernel, mp.stride, mp.padding) == ((3, 3), (2, 2), (1, 1))
    assert r.g.number_of_edges() == sum(len(o.inputs) for o in r.ops)


def test_unsupported_op_names_the_node():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PixelShuffle(2))
    with pytest.raises(UnsupportedOpError, match="PixelShuffle"):
        LayerGraph.from_module(net, torch.zeros(1, 3, 8, 8))
    with pytest.raises(UnsupportedOpError, match="padding_mode"):
        LayerGraph.from_module(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")),
                               torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputShapeError):
        LayerGraph.from_module(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.zeros(1, 5, 8, 8))


USER_MODEL = textwrap.dedent('''
    import torch, torch.nn as nn, torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(3, 4, 5, padding=2, bias=False)
            self.c = nn.Conv2d(8, 6, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.fc = nn.Linear(6 * 8 * 8, 5)

        def forward(self, x):
            y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x))], 1)
            z = self.bn(self.c(y))
            z = F.leaky_relu(z, 0.2) + z
            return self.fc(z.view(z.size(0), -1))

    def make():
        return Net()
''')


def test_user_model_file_with_functional_ops(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(USER_MODEL)
    module, shape, name = load_model(f"{f}:make", (1, 3, 16, 16))
    x = example_input(shape)
    g = LayerGraph.from_module(module, x)
    assert {o.kind for o in g.ops} >= {"concat", "add", "act", "flatten", "linear", "bn"}
    for method in (coedge, layerwise):
        sol = method(g, homogeneous(3, link="mesh"), model=name)
        v = verify(sol.plan, module, x, g)
        assert v.ok, v.reason


def test_model_spec_errors(tmp_path):
    with pytest.raises(UnknownModelError):
        load_model("resnet999")
    with pytest.raises(ModelLoadError):
        load_model(f"{tmp_path}/nope.py:make", (1, 3, 8, 8))
    f = tmp_path / "m.py"
    f.write_text("def make():\n    return 3\n")
    with pytest.raises(InputShapeError):
        load_model(f"{f}:make")
    with pytest.raises(ModelLoadError, match="not an nn.Module"):
        load_model(f"{f}:make", (1, 3, 8, 8))
    with pytest.raises(ModelLoadError, match="no callable"):
        load_model(f"{f}:other", (1, 3, 8, 8))
    for bad in ("1,3,224", "a,b,c,d", "1,3,0,4"):
        with pytest.raises(InputShapeError):
            parse_shape(bad)


def test_zoo_weights_are_deterministic():
    a, _, _ = load_model("lenet5")
    b, _, _ = load_model("lenet5")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
