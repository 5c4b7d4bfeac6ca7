"""The model zoo: classic CNNs defined here, with random weights from a fixed seed.

No downloads: every model is built from code, its weights drawn with ``torch.manual_seed``,
and its batch-norm statistics randomised too so that verification exercises them. The
architectures follow the published ones (torchvision's layouts for AlexNet, VGG, ResNet-18
and MobileNetV2); ``yolov2_tiny`` follows Darknet's yolov2-tiny-voc, with its stride-1 max
pool written as ``MaxPool2d(3, 1, padding=1)`` (Darknet pads asymmetrically; the map size and
the role of the layer are the same).

A user model is accepted wherever a zoo name is: ``path/to/file.py:factory`` where
``factory()`` returns an ``nn.Module``; it then needs an input shape.

Example:
    >>> from partopt.zoo import load_model
    >>> net, shape, name = load_model("lenet5")
    >>> shape, name
    ((1, 1, 32, 32), 'lenet5')
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn

from . import zoo_edge
from .errors import InputShapeError, ModelLoadError, UnknownModelError


def lenet5() -> nn.Module:
    """LeNet-5 (LeCun 1998) on 32x32 grey images: conv-pool-conv-pool-fc-fc-fc."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


def alexnet(num_classes: int = 1000) -> nn.Module:
    """AlexNet as in torchvision (one-tower variant)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d((6, 6)), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )


_VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(cfg: list, num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
        nn.Linear(4096, num_classes),
    )


def vgg11() -> nn.Module:
    """VGG-11 (configuration A), torchvision layout without batch norm."""
    return _vgg(_VGG_CFG["vgg11"])


def vgg16() -> nn.Module:
    """VGG-16 (configuration D), torchvision layout without batch norm."""
    return _vgg(_VGG_CFG["vgg16"])


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016), torchvision layout."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, c = [], 64
        for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
            blocks.append(BasicBlock(c, cout, stride))
            c = cout
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def resnet18() -> nn.Module:
    return ResNet18()


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), width 1.0, torchvision layout."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True)]
        c = 32
        for t, cout, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        layers += [nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2() -> nn.Module:
    return MobileNetV2()


def yolov2_tiny(num_outputs: int = 125) -> nn.Module:
    """YOLOv2-tiny (VOC: 5 anchors x (20 classes + 5) = 125 outputs per cell) for 416x416 input."""
    layers: list[nn.Module] = []
    c = 3
    for i, cout in enumerate([16, 32, 64, 128, 256, 512]):
        layers += [nn.Conv2d(c, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        layers.append(nn.MaxPool2d(2, 2) if i < 5 else nn.MaxPool2d(3, 1, padding=1))
        c = cout
    for cout in (1024, 1024):
        layers += [nn.Conv2d(c, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]
        c = cout
    layers.append(nn.Conv2d(c, num_outputs, 1))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]
    description: str


ZOO: dict[str, ZooEntry] = {
    "lenet5": ZooEntry(lenet5, (1, 1, 32, 32), "LeNet-5, 32x32 grey"),
    "alexnet": ZooEntry(alexnet, (1, 3, 224, 224), "AlexNet, 224x224"),
    "vgg11": ZooEntry(vgg11, (1, 3, 224, 224), "VGG-11, 224x224"),
    "vgg16": ZooEntry(vgg16, (1, 3, 224, 224), "VGG-16, 224x224"),
    "resnet18": ZooEntry(resnet18, (1, 3, 224, 224), "ResNet-18, 224x224"),
    "mobilenet_v2": ZooEntry(mobilenet_v2, (1, 3, 224, 224), "MobileNetV2, 224x224"),
    "yolov2_tiny": ZooEntry(yolov2_tiny, (1, 3, 416, 416), "YOLOv2-tiny detector, 416x416"),
    # edge CNNs (partopt/zoo_edge.py)
    "mobilenet_v3_small": ZooEntry(zoo_edge.mobilenet_v3_small, (1, 3, 224, 224),
                                   "MobileNetV3-Small, 224x224 (squeeze-excite, hard-swish)"),
    "efficientnet_b0": ZooEntry(zoo_edge.efficientnet_b0, (1, 3, 224, 224),
                                "EfficientNet-B0, 224x224 (MBConv, squeeze-excite, SiLU)"),
    "shufflenet_v2": ZooEntry(zoo_edge.shufflenet_v2, (1, 3, 224, 224),
                              "ShuffleNetV2 1.0x, 224x224 (channel split and shuffle)"),
    "squeezenet": ZooEntry(zoo_edge.squeezenet, (1, 3, 224, 224), "SqueezeNet v1.1, 224x224 (fire modules)"),
    "yolov5n": ZooEntry(zoo_edge.yolov5n, (1, 3, 640, 640),
                        "YOLOv5n detector, 640x640 (CSP, SPPF, upsample + concat neck, 3 heads)"),
    "unet": ZooEntry(zoo_edge.unet, (1, 3, 512, 512), "small U-Net, 512x512 (transposed-conv decoder, skips)"),
}
#: the zoo's classic CNNs (the first seven), which the results files and most benchmarks cover
CLASSIC = ("lenet5", "alexnet", "vgg11", "vgg16", "resnet18", "mobilenet_v2", "yolov2_tiny")
#: the edge CNNs of partopt/zoo_edge.py
EDGE = tuple(n for n in ZOO if n not in CLASSIC)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random weights (He init for convs) and non-trivial BN statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, (1.0 / m.in_features) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
    return module.eval()


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'1,3,224,224' -> (1, 3, 224, 224); raises InputShapeError on anything else."""
    try:
        shape = tuple(int(p) for p in str(text).replace("x", ",").split(","))
    except ValueError:
        raise InputShapeError(f"input shape {text!r}: expected four integers like 1,3,224,224") from None
    if len(shape) != 4 or any(s <= 0 for s in shape):
        raise InputShapeError(f"input shape {text!r}: expected four positive integers N,C,H,W")
    return shape  # type: ignore[return-value]


def load_model(spec: str, input_shape: Optional[tuple[int, ...]] = None, seed: int = 0
               ) -> tuple[nn.Module, tuple[int, int, int, int], str]:
    """Resolve a zoo name, ``file.py:factory`` or ``file.onnx`` to (module in eval mode,
    input shape, name).

    Zoo models take their default input shape unless ``input_shape`` is given; a user model
    must be given one; an ONNX file's shape comes from the file, ``input_shape`` filling its
    dynamic dimensions (:func:`partopt.onnx_import.load_onnx`).
    """
    if spec.endswith(".onnx"):
        from .onnx_import import load_onnx
        return load_onnx(spec, input_shape)
    if spec in ZOO:
        e = ZOO[spec]
        torch.manual_seed(seed)
        module = randomize(e.factory(), seed)
        return module, tuple(input_shape or e.input_shape), spec  # type: ignore[return-value]
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        path, factory = spec.rsplit(":", 1)
        if not os.path.isfile(path):
            raise ModelLoadError(f"model file {path!r} does not exist")
        if input_shape is None:
            raise InputShapeError(f"model {spec!r} is not in the zoo: give --input-shape N,C,H,W")
        try:
            modspec = importlib.util.spec_from_file_location("partopt_user_model", path)
            mod = importlib.util.module_from_spec(modspec)
            modspec.loader.exec_module(mod)  # type: ignore[union-attr]
        except Exception as e:
            raise ModelLoadError(f"cannot import {path!r}: {type(e).__name__}: {e}") from None
        fn = getattr(mod, factory, None)
        if not callable(fn):
            raise ModelLoadError(f"{path!r} has no callable {factory!r}")
        torch.manual_seed(seed)
        try:
            module = fn()
        except Exception as e:
            raise ModelLoadError(f"{spec!r}: factory raised {type(e).__name__}: {e}") from None
        if not isinstance(module, nn.Module):
            raise ModelLoadError(f"{spec!r}: factory returned {type(module).__name__}, not an nn.Module")
        return module.eval(), tuple(input_shape), spec  # type: ignore[return-value]
    raise UnknownModelError(f"unknown model {spec!r}; zoo models: {', '.join(ZOO)}; "
                            "or give path/to/file.py:factory")


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The deterministic example input used for shape propagation and verification."""
    g = torch.Generator().manual_seed(seed + 12345)
    return torch.randn(*shape, generator=g)


@functools.cache
def summary(name: str) -> dict:
    """A zoo model's figures, traced once per process: ``input_shape``, ``ops``, ``flops``
    (FLOPs), ``param_bytes`` and ``activation_bytes`` (bytes), and its ``description``
    (``partopt models`` and the README's model table)."""
    from .graph import LayerGraph
    if name not in ZOO:
        raise UnknownModelError(f"unknown model {name!r}; zoo models: {', '.join(ZOO)}")
    net, shape, _ = load_model(name)
    g = LayerGraph.from_module(net, example_input(shape))
    return {"model": name, "input_shape": list(shape), "ops": len(g), "flops": g.total_flops,
            "param_bytes": g.total_param_bytes, "activation_bytes": g.total_activation_bytes,
            "description": ZOO[name].description}
