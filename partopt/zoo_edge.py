"""Edge CNNs of the zoo, written from their papers' descriptions (random weights, no downloads).

- :func:`mobilenet_v3_small` (Howard et al. 2019, Table 2): inverted residuals with
  squeeze-excite gates (hard-sigmoid) and hard-swish;
- :func:`efficientnet_b0` (Tan and Le 2019, Table 1): MBConv blocks with squeeze-excite
  (sigmoid) and SiLU;
- :func:`shufflenet_v2` (Ma et al. 2018, 1.0x): channel split (``chunk``) and channel shuffle
  (view -> transpose -> reshape);
- :func:`squeezenet` (Iandola et al. 2016, v1.1): fire modules (squeeze, then two expand
  convs concatenated);
- :func:`yolov5n` (Ultralytics YOLOv5 v6.0, n: depth 0.33, width 0.25): SiLU convs, CSP (C3)
  blocks, SPPF (three chained stride-1 5x5 max pools), an FPN/PAN neck with nearest upsampling
  and concatenation, and 1x1 detection convs on three scales; the three heads' outputs are
  flattened and concatenated into one (N, F) tensor;
- :func:`unet` (Ronneberger et al. 2015, a small one: 16 base channels, four levels): double
  3x3 convs with batch norm, max-pool down, transposed-conv up, skip concatenation.

Stochastic depth and dropout are identities in eval mode and are left out where they are only
that. Every model returns a single tensor.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _divisible(v: float, d: int = 8) -> int:
    """The channel rounding of MobileNet and EfficientNet (to a multiple of ``d``, not below 90 %)."""
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def _cba(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: type | None = nn.ReLU) -> list[nn.Module]:
    """Conv (no bias), batch norm, and the activation (None: none)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + ([act()] if act is not None else [])


class SqueezeExcite(nn.Module):
    """x * gate(fc2(act(fc1(mean over H and W of x)))), the fcs as 1x1 convs."""

    def __init__(self, c: int, squeeze: int, act: type = nn.ReLU, gate: type = nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.act = nn.Conv2d(c, squeeze, 1), act()
        self.fc2, self.gate = nn.Conv2d(squeeze, c, 1), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    """Inverted residual with an optional squeeze-excite gate (MobileNetV3, EfficientNet)."""

    def __init__(self, cin: int, hidden: int, cout: int, k: int, s: int, se: int, act: type, gate: type,
                 se_act: type = nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += _cba(cin, hidden, 1, act=act)
        layers += _cba(hidden, hidden, k, s, groups=hidden, act=act)
        if se:
            layers.append(SqueezeExcite(hidden, se, se_act, gate))
        layers += _cba(hidden, cout, 1, act=None)
        self.block = nn.Sequential(*layers)
        self.res = s == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.res else self.block(x)


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    """MobileNetV3-Small (Howard et al. 2019, Table 2), width 1.0."""
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(3, 16, 16, True, re, 2), (3, 72, 24, False, re, 2), (3, 88, 24, False, re, 1),
           (5, 96, 40, True, hs, 2), (5, 240, 40, True, hs, 1), (5, 240, 40, True, hs, 1),
           (5, 120, 48, True, hs, 1), (5, 144, 48, True, hs, 1), (5, 288, 96, True, hs, 2),
           (5, 576, 96, True, hs, 1), (5, 576, 96, True, hs, 1)]
    layers: list[nn.Module] = _cba(3, 16, 3, 2, act=hs)
    c = 16
    for k, exp, out, se, act, s in cfg:
        layers.append(MBConv(c, exp, out, k, s, _divisible(exp / 4) if se else 0, act, nn.Hardsigmoid))
        c = out
    layers += _cba(c, 576, 1, act=hs)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(576, 1024), nn.Hardswish(),
                         nn.Dropout(0.2), nn.Linear(1024, num_classes))


def efficientnet_b0(num_classes: int = 1000) -> nn.Module:
    """EfficientNet-B0 (Tan and Le 2019, Table 1): MBConv1/6 with squeeze-excite of 1/4 of the
    block's input channels, SiLU."""
    cfg = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
           (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    layers: list[nn.Module] = _cba(3, 32, 3, 2, act=nn.SiLU)
    c = 32
    for t, k, s, out, n in cfg:
        for i in range(n):
            layers.append(MBConv(c, c * t, out, k, s if i == 0 else 1, max(1, c // 4), nn.SiLU, nn.Sigmoid, nn.SiLU))
            c = out
    layers += _cba(c, 1280, 1, act=nn.SiLU)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(1280, num_classes))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view as (N, g, C/g, H, W), swap the two channel axes."""
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: stride 1 splits the channels in two halves, one passes through;
    stride 2 runs two branches on the whole input; then concatenation and a channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(*_cba(cin, cin, 3, stride, groups=cin, act=None), *_cba(cin, half, 1))
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(*_cba(b2_in, half, 1), *_cba(half, half, 3, stride, groups=half, act=None),
                                     *_cba(half, half, 1))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 1.0x (Ma et al. 2018, Table 5)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(*_cba(3, 24, 3, 2), nn.MaxPool2d(3, 2, 1))
        units, c = [], 24
        for out, n in ((116, 4), (232, 8), (464, 4)):
            for i in range(n):
                units.append(ShuffleUnit(c, out, 2 if i == 0 else 1))
                c = out
        self.stages = nn.Sequential(*units)
        self.conv5 = nn.Sequential(*_cba(c, 1024, 1))
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.conv5(self.stages(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def shufflenet_v2() -> nn.Module:
    return ShuffleNetV2()


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze conv, then 1x1 and 3x3 expand convs concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.e1, self.e3 = nn.Conv2d(squeeze, e1, 1), nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.e1(s)), F.relu(self.e3(s))], 1)


def squeezenet(num_classes: int = 1000) -> nn.Module:
    """SqueezeNet v1.1 (Iandola et al. 2016; the v1.1 layout of its repository)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
        nn.Dropout(0.5), nn.Conv2d(512, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class YConv(nn.Sequential):
    """YOLOv5's Conv: conv (no bias), batch norm, SiLU."""

    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, p: int | None = None):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2 if p is None else p, bias=False), nn.BatchNorm2d(cout),
                         nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool):
        super().__init__()
        self.cv1, self.cv2, self.add = YConv(c, c, 1), YConv(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP bottleneck with three convs: two 1x1 branches, n bottlenecks on one, concatenated."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        c = cout // 2
        self.cv1, self.cv2, self.cv3 = YConv(cin, c), YConv(cin, c), YConv(2 * c, cout)
        self.m = nn.Sequential(*(Bottleneck(c, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained stride-1 5x5 max pools, concatenated."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        c = cin // 2
        self.cv1, self.cv2, self.m = YConv(cin, c), YConv(4 * c, cout), nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class YOLOv5n(nn.Module):
    """YOLOv5n v6.0 (yolov5n.yaml: depth 0.33, width 0.25), 80 classes, 3 anchors per scale."""

    def __init__(self, num_outputs: int = 3 * (5 + 80)):
        super().__init__()
        self.b0, self.b1, self.b2 = YConv(3, 16, 6, 2, 2), YConv(16, 32, 3, 2), C3(32, 32, 1)
        self.b3, self.b4 = YConv(32, 64, 3, 2), C3(64, 64, 2)
        self.b5, self.b6 = YConv(64, 128, 3, 2), C3(128, 128, 3)
        self.b7, self.b8, self.b9 = YConv(128, 256, 3, 2), C3(256, 256, 1), SPPF(256, 256)
        self.h10, self.h13 = YConv(256, 128, 1), C3(256, 128, 1, False)
        self.h14, self.h17 = YConv(128, 64, 1), C3(128, 64, 1, False)
        self.h18, self.h20 = YConv(64, 64, 3, 2), C3(128, 128, 1, False)
        self.h21, self.h23 = YConv(128, 128, 3, 2), C3(256, 256, 1, False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.det = nn.ModuleList(nn.Conv2d(c, num_outputs, 1) for c in (64, 128, 256))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        x10 = self.h10(self.b9(self.b8(self.b7(p4))))
        x14 = self.h14(self.h13(torch.cat((self.up(x10), p4), 1)))
        o3 = self.h17(torch.cat((self.up(x14), p3), 1))
        o4 = self.h20(torch.cat((self.h18(o3), x14), 1))
        o5 = self.h23(torch.cat((self.h21(o4), x10), 1))
        heads = [d(o) for d, o in zip(self.det, (o3, o4, o5))]
        return torch.cat([torch.flatten(h, 1) for h in heads], 1)


def yolov5n() -> nn.Module:
    return YOLOv5n()


def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_cba(cin, cout, 3), *_cba(cout, cout, 3))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): four 2x2 max-pool levels down, four 2x2
    transposed-conv levels up, skip connections concatenated, base width ``base``."""

    def __init__(self, cin: int = 3, classes: int = 2, base: int = 16):
        super().__init__()
        w = [base * 2 ** i for i in range(5)]
        self.down = nn.ModuleList([_double(cin, w[0])] + [_double(w[i], w[i + 1]) for i in range(4)])
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in reversed(range(4)))
        self.dec = nn.ModuleList(_double(2 * w[i], w[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(w[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.dec):
            x = dec(torch.cat((skips.pop(), up(x)), 1))
        return self.head(x)


def unet() -> nn.Module:
    return UNet()
