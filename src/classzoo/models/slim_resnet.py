"""TF-slim ResNet-v1 (resnet_v1_50/101/152) in PyTorch, layer for layer as slim builds it.

Why not timm's or torchvision's ResNet: they stride the first unit of the next stage and pad
pool1 symmetrically. slim (tensorflow/models research/slim/nets/resnet_v1.py, resnet_utils.py)
strides the 3x3 conv of each block's *last* unit, gives that unit a subsampling shortcut
``x[::s, ::s]``, and pads pool1 TF-'SAME' (odd pixel after). Same weights, different network:
only this layout reproduces the published slim checkpoints' logits.
Facts: shared/reference/tf_slim_compat.md sections 0, 1 and 6.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.layers.pool2d_same import MaxPool2dSame
from timm.models._features import feature_take_indices  # what timm's own resnet.py uses
from torch import nn
from torch.nn import functional as F

__all__ = [
    "SLIM_RESNET_DEFAULTS",
    "slim_resnet_pretrained_cfg",
    "SlimBottleneck",
    "SlimResNetV1",
    "slim_resnet_v1_50",
    "slim_resnet_v1_101",
    "slim_resnet_v1_152",
]

# VGG preprocessing; ResNet-v1 checkpoints have 1000 logits, logit i <-> dataset label i + 1
# (slim README: "ResNet and VGG models have 1000 classes", --labels_offset=1).
SLIM_RESNET_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "preset": "vgg",
    "num_classes": 1000,
    "label_offset": 1,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    # vgg_preprocessing: 0-255 pixels minus _R_MEAN, _G_MEAN, _B_MEAN, no scaling; in timm's
    # units ((x / 255 - mean) / std) that is mean = means / 255, std = 1 / 255.
    "mean": (123.68 / 255, 116.78 / 255, 103.94 / 255),
    "std": (1 / 255, 1 / 255, 1 / 255),
}


def slim_resnet_pretrained_cfg(num_classes: int = 1000) -> dict[str, Any]:
    """timm ``pretrained_cfg`` (timm/models/_pretrained.py ``PretrainedCfg`` fields) describing
    the real input: vgg_preprocessing eval = aspect-preserving bilinear resize of the short side
    to 256 then a central 224 crop, i.e. timm's ``crop_mode='center'`` with crop_pct 224 / 256.
    ``label_offset`` in timm's sense (extra leading classes in the head) is 0: logit i is
    ImageNet class i; slim's TFRecords store i + 1 (classzoo's ``data.label_offset`` 1)."""
    d = SLIM_RESNET_DEFAULTS
    return {
        "input_size": d["input_size"],
        "pool_size": (7, 7),
        "crop_pct": d["crop_pct"],
        "crop_mode": "center",
        "interpolation": d["interpolation"],
        "mean": d["mean"],
        "std": d["std"],
        "num_classes": num_classes,
        "label_offset": 0,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        "origin_url": "https://github.com/tensorflow/models/tree/master/research/slim",
        "notes": (
            "TF-slim resnet_v1 layout (stride on each block's last unit); weights: convert a "
            "TF-slim checkpoint with `classzoo convert slim`",
            "slim ImageNet TFRecords label classes 1..1000: subtract 1 for this head",
        ),
    }


BN_EPS = 1e-5  # slim resnet_utils.resnet_arg_scope: batch_norm_epsilon=1e-5
BN_MOMENTUM = 1.0 - 0.997  # resnet_arg_scope: batch_norm_decay=0.997; torch momentum = 1 - decay
EXPANSION = 4  # resnet_v1_block: depth = base_depth * 4


def _bn(channels: int) -> nn.BatchNorm2d:
    # resnet_arg_scope: batch_norm_scale=True, so gamma exists (unlike Inception).
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def check_global_pool(num_classes: int, pool: str) -> str:
    """timm's ``reset_classifier(num_classes, global_pool="avg")`` for slim's mean pooling:
    "avg", or "" (unpooled feature maps) only without a classifier, as timm's create_classifier
    asserts."""
    if pool not in ("avg", ""):
        raise ValueError(
            f"global_pool={pool!r}: slim networks pool by their mean ('avg') or not ('')"
        )
    if pool == "" and num_classes > 0:
        raise ValueError(
            "global_pool='' (no pooling) needs num_classes=0 (no classifier), as timm's"
        )
    return pool


def slim_variance_scaling_(weight: torch.Tensor) -> torch.Tensor:
    """slim ``variance_scaling_initializer()`` (factor 2, FAN_IN, truncated normal).

    tf_slim layers/initializers.py: ``stddev = sqrt(1.3 * factor / fan_in)`` of a normal
    truncated at 2 stddev; fan_in = kh * kw * in (= weight[0].numel() in OIHW / [out, in]).
    """
    std = math.sqrt(1.3 * 2.0 / weight[0].numel())
    return nn.init.trunc_normal_(weight, 0.0, std, -2.0 * std, 2.0 * std)


class SlimBottleneck(nn.Module):
    """slim ``resnet_v1.bottleneck`` (scope ``bottleneck_v1``): BN after every conv.

    The stride sits on the 3x3 conv; slim's ``conv2d_same`` pads it explicitly by (k-1)//2 on
    both sides then convolves VALID, which is exactly PyTorch's symmetric ``padding=1``
    (for stride 1 it is TF 'SAME', also symmetric for an odd kernel).
    """

    def __init__(self, in_chs: int, depth_bottleneck: int, stride: int = 1) -> None:
        super().__init__()
        depth = depth_bottleneck * EXPANSION
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chs, depth_bottleneck, 1, bias=False)
        self.bn1 = _bn(depth_bottleneck)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(depth_bottleneck, depth_bottleneck, 3, stride, padding=1, bias=False)
        self.bn2 = _bn(depth_bottleneck)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(depth_bottleneck, depth, 1, bias=False)
        self.bn3 = _bn(depth)  # conv3: activation_fn=None
        # depth_in == depth -> subsample (max_pool 1x1 stride s = x[::s, ::s]); else a
        # projection: conv 1x1 stride s + BN, no ReLU (scope 'shortcut').
        self.downsample: nn.Module | None = None
        if in_chs != depth:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, depth, 1, stride, bias=False), _bn(depth)
            )
        self.act3 = nn.ReLU(inplace=True)

    def forward_unstrided(self, x: torch.Tensor) -> torch.Tensor:
        """This unit at stride 1 (slim's ``store_non_strided_activations``)."""
        shortcut = x
        if self.downsample is not None:
            conv, bn = self.downsample
            shortcut = bn(F.conv2d(x, conv.weight, conv.bias))
        out = self.act1(self.bn1(self.conv1(x)))
        out = F.conv2d(out, self.conv2.weight, None, 1, self.conv2.padding)
        out = self.bn3(self.conv3(self.act2(self.bn2(out))))
        return self.act3(out + shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            shortcut = self.downsample(x)
        elif self.stride > 1:
            shortcut = x[:, :, :: self.stride, :: self.stride]
        else:
            shortcut = x
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + shortcut)


class SlimResNetV1(nn.Module):
    """slim ``resnet_v1`` with ``global_pool=True``; ``layers`` = units per block.

    Module names follow timm's ResNet (conv1/bn1/layer1../fc) so tools that know timm work;
    ``classzoo.models.slim_names`` maps them to slim's variable names.
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 8, 36, 3),
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must give the units of 4 blocks, got {layers}")
        self.layers = tuple(int(n) for n in layers)
        self.global_pool = "avg"  # slim's mean over the map; timm's reset_classifier(0, '')
        self.num_classes = num_classes
        self.drop_rate = drop_rate  # slim has no dropout here; 0 reproduces it
        self.pretrained_cfg = self.default_cfg = slim_resnet_pretrained_cfg(num_classes)

        # conv1 = conv2d_same(x, 64, 7, stride=2): explicit pad 3/3 + VALID == padding=3.
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, padding=3, bias=False)
        self.bn1 = _bn(64)
        self.act1 = nn.ReLU(inplace=True)
        # pool1 = max_pool2d 3x3/2 with padding='SAME' (resnet_arg_scope): on 112 px TF pads
        # 0 before and 1 after, which nn.MaxPool2d(3, 2, padding=1) does not reproduce.
        self.maxpool = MaxPool2dSame(3, 2)

        # resnet_v1_block(scope, base_depth, num_units, stride): stride on the LAST unit.
        strides = (2, 2, 2, 1)
        bases = (64, 128, 256, 512)
        in_chs = 64
        for index, (units, base, stride) in enumerate(zip(self.layers, bases, strides), start=1):
            blocks = []
            for unit in range(units):
                blocks.append(SlimBottleneck(in_chs, base, stride if unit == units - 1 else 1))
                in_chs = base * EXPANSION
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.num_features = self.head_hidden_size = in_chs  # 2048
        # timm feature_info, with slim's `store_non_strided_activations=True` end points
        # (resnet_utils.stack_blocks_dense): each block's output before its last unit subsamples,
        # so the reductions are 2, 4, 8, 16, 32 (see forward_intermediates).
        self.feature_info = [
            {"num_chs": 64, "reduction": 2, "module": "act1"},
            *(
                {"num_chs": base * EXPANSION, "reduction": 4 * 2**i, "module": f"layer{i + 1}"}
                for i, base in enumerate(bases)
            ),
        ]

        self.head_drop = nn.Dropout(drop_rate)
        # slim logits: conv2d 1x1 with biases, no BN/ReLU, on the 1x1 pooled map == Linear.
        self.fc: nn.Module = self._make_fc(num_classes)
        self._init_weights()

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(self.num_features, num_classes)
        slim_variance_scaling_(fc.weight)  # the logits conv is under resnet_arg_scope too
        nn.init.zeros_(fc.bias)
        return fc

    def _init_weights(self) -> None:
        # resnet_arg_scope: conv weights variance_scaling_initializer(); BN beta 0, gamma 1,
        # moving mean 0, moving variance 1 (PyTorch's BN defaults already).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                slim_variance_scaling_(module.weight)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.global_pool = check_global_pool(num_classes, global_pool)
        self.num_classes = num_classes
        device = next(self.parameters()).device
        self.fc = self._make_fc(num_classes).to(device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":  # '': unpooled maps (reset_classifier(0, ''))
            x = x.mean((2, 3))  # slim 'pool5': reduce_mean over H, W
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature interface: act1 and the four blocks (``feature_info``).

        A block's feature is slim's non-strided activation: its last unit run at stride 1. The
        network then continues from that map subsampled ``[::s, ::s]``, which equals the strided
        unit (a symmetric-padded stride-s conv samples the stride-1 conv's outputs), so the final
        features are those of ``forward_features`` up to float rounding.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be NCHW, got {output_fmt}")
        take, max_index = feature_take_indices(5, indices)
        feats = []
        x = self.act1(self.bn1(self.conv1(x)))
        if 0 in take:
            feats.append(x)
        x = self.maxpool(x)
        names = ("layer1", "layer2", "layer3", "layer4")
        for index, name in enumerate(names[:max_index] if stop_early else names, start=1):
            x, unstrided = _run_layer(getattr(self, name), x)
            if index in take:
                feats.append(unstrided)
        if intermediates_only:
            return feats
        return x, feats

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last feature taken (and the head); timm's FeatureGetterNet."""
        take, max_index = feature_take_indices(5, indices)
        for name in ("layer1", "layer2", "layer3", "layer4")[max_index:]:
            setattr(self, name, nn.Sequential())
        if prune_head:
            self.reset_classifier(0)
        return take


def _run_layer(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, non-strided output)`` of one block (an empty block passes x through)."""
    units = list(layer)
    if not units:
        return x, x
    for unit in units[:-1]:
        x = unit(x)
    last = units[-1]
    if last.stride == 1:
        x = last(x)
        return x, x
    full = last.forward_unstrided(x)
    return full[:, :, :: last.stride, :: last.stride], full


def slim_resnet_v1_50(**kwargs: Any) -> SlimResNetV1:
    """slim ``resnet_v1_50``: blocks of 3, 4, 6, 3 units."""
    return SlimResNetV1(layers=(3, 4, 6, 3), **kwargs)


def slim_resnet_v1_101(**kwargs: Any) -> SlimResNetV1:
    """slim ``resnet_v1_101``: blocks of 3, 4, 23, 3 units."""
    return SlimResNetV1(layers=(3, 4, 23, 3), **kwargs)


def slim_resnet_v1_152(**kwargs: Any) -> SlimResNetV1:
    """slim ``resnet_v1_152``: blocks of 3, 8, 36, 3 units."""
    return SlimResNetV1(layers=(3, 8, 36, 3), **kwargs)
