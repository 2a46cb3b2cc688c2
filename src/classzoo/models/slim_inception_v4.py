"""TF-slim Inception-v4 (research/slim/nets/inception_v4.py) in PyTorch, with its AuxLogits head.

The trunk reuses timm's ``timm.models.inception_v4`` blocks: checked against slim line by line,
they match it exactly (branch and concat orders, Mixed_3a pool-first vs Mixed_5a conv-first, the
nested concats of Inception-C, VALID stride-2 ops, stride-1 'SAME' convs with odd kernels, which
TF pads symmetrically like timm's explicit padding, and 3x3 'SAME' avg pools that exclude the
padding, ``count_include_pad=False``). What timm's model lacks and this class adds: slim's BN
momentum and missing gamma, the AuxLogits head on Mixed_6h, 1001 logits, dropout keep 0.8 and
slim's initialisers. Facts: shared/reference/tf_slim_compat.md sections 0, 2 and 6.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import ConvNormAct
from timm.models._features import feature_take_indices  # what timm's own models use
from timm.models.inception_v4 import (
    InceptionA,
    InceptionB,
    InceptionC,
    Mixed3a,
    Mixed4a,
    Mixed5a,
    ReductionA,
    ReductionB,
)
from torch import nn

from classzoo.errors import UserError
from classzoo.models.slim_resnet import check_global_pool, slim_variance_scaling_

__all__ = [
    "SLIM_INCEPTION_V4_DEFAULTS",
    "SlimAuxHead",
    "SlimInceptionV4",
    "slim_inception_v4",
    "slim_inception_v4_pretrained_cfg",
]

# inception preprocessing; 1001 logits, index 0 = background, so dataset labels 1..1000 as is.
SLIM_INCEPTION_V4_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 299, 299),
    "preset": "inception",
    "num_classes": 1001,
    "label_offset": 0,
    "crop_pct": 0.875,
    "interpolation": "bilinear",
    # inception_preprocessing: convert_image_dtype to [0, 1], then (x - 0.5) * 2, i.e. [-1, 1]
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}


def slim_inception_v4_pretrained_cfg(num_classes: int = 1001) -> dict[str, Any]:
    """timm ``pretrained_cfg`` describing the real input. inception_preprocessing eval:
    ``central_crop(central_fraction=0.875)`` of each side, then a bilinear resize to 299 x 299
    (aspect ratio not kept): timm's ``crop_mode='squash'`` (resize both edges to size / crop_pct,
    then a centre crop). With 1001 logits, index 0 is slim's background class:
    ``label_offset`` 1 in timm's sense (ImageNet class k is logit k + 1)."""
    d = SLIM_INCEPTION_V4_DEFAULTS
    return {
        "input_size": d["input_size"],
        "pool_size": (8, 8),
        "crop_pct": d["crop_pct"],
        "crop_mode": "squash",
        "interpolation": d["interpolation"],
        "mean": d["mean"],
        "std": d["std"],
        "num_classes": num_classes,
        "label_offset": 1 if num_classes == 1001 else 0,
        "first_conv": "features.0.conv",
        "classifier": "last_linear",
        "license": "apache-2.0",
        "origin_url": "https://github.com/tensorflow/models/tree/master/research/slim",
        "notes": (
            "TF-slim inception_v4 with AuxLogits (forward_with_aux); weights: convert a "
            "TF-slim checkpoint with `classzoo convert slim`",
        ),
    }


BN_EPS = 1e-3  # inception_utils.inception_arg_scope: batch_norm_epsilon=0.001
BN_MOMENTUM = 1.0 - 0.9997  # inception_arg_scope: batch_norm_decay=0.9997
MIN_AUX_SIZE = 107  # the smallest input whose Mixed_6h map is 5x5 (mixed_6h_size)
MIXED_6H = 17  # index of Mixed_6h in ``features`` (3 stem convs, 3a, 4a, 5a, 4 x A, 6a, 7 x B)
NUM_FEATURES = 1536  # Mixed_7d channels


def _valid(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def mixed_6h_size(image_size: int) -> int:
    """Spatial size of Mixed_6h for a square input (17 for 299): the stride-2 ops are VALID."""
    s = _valid(image_size, 3, 2)  # Conv2d_1a_3x3
    s = _valid(s, 3, 1)  # Conv2d_2a_3x3 (Conv2d_2b_3x3 is SAME)
    s = _valid(s, 3, 2)  # Mixed_3a
    s = _valid(s, 3, 1)  # Mixed_4a
    s = _valid(s, 3, 2)  # Mixed_5a
    return _valid(s, 3, 2)  # Mixed_6a


def _check_aux_size(img_size: int, aux_kernel: int) -> None:
    if aux_kernel < 1:  # slim's graph fails too ("negative dimension")
        raise UserError(
            f"inception_v4 takes images of at least {MIN_AUX_SIZE} px ({img_size} given): its "
            "AuxLogits 5x5/3 VALID pool needs a 5x5 Mixed_6h map"
        )


class SlimAuxHead(nn.Module):
    """slim scope ``AuxLogits`` on Mixed_6h.

    AvgPool_1a_5x5 5x5/3 VALID -> Conv2d_1b_1x1 128 -> Conv2d_2a 768 with a kernel as large as
    the map (slim reads it from the graph: 5x5 at 299 px), VALID -> flatten -> Aux_logits FC.
    """

    def __init__(self, conv_block: Any, kernel: int, fc: nn.Module, in_chs: int = 1024) -> None:
        super().__init__()
        self.kernel = kernel
        self.pool = nn.AvgPool2d(5, stride=3)  # VALID: no padding, nothing to exclude
        self.conv1 = conv_block(in_chs, 128, kernel_size=1)
        self.conv2 = conv_block(128, 768, kernel_size=kernel)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        if tuple(x.shape[-2:]) != (self.kernel, self.kernel):
            raise ValueError(
                f"AuxLogits was built for a {self.kernel}x{self.kernel} pooled map but got "
                f"{tuple(x.shape[-2:])}; build the model with img_size equal to the input size"
            )
        x = self.conv2(self.conv1(x))
        return self.fc(torch.flatten(x, 1))


class SlimInceptionV4(nn.Module):
    """slim ``inception_v4`` under ``inception_arg_scope``.

    ``forward(x)`` gives the logits, or ``(logits, aux_logits)`` while training with the aux head
    enabled (slim's train_image_classifier adds 0.4 x the aux loss). ``img_size`` only sizes the
    aux head's Conv2d_2a kernel, which slim derives from the graph's static shape.
    ``bn_scale=False`` (slim: no BN gamma) keeps gamma at 1 and frozen, so training matches too.
    """

    def __init__(
        self,
        num_classes: int = 1001,
        drop_rate: float = 0.2,  # inception_v4(dropout_keep_prob=0.8)
        aux_logits: bool = True,  # inception_v4(create_aux_logits=True)
        img_size: int = 299,
        bn_scale: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.global_pool = "avg"  # slim's mean over the map; timm's reset_classifier(0, '')
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.num_features = self.head_hidden_size = NUM_FEATURES
        self.pretrained_cfg = self.default_cfg = slim_inception_v4_pretrained_cfg(num_classes)
        conv_block = partial(
            ConvNormAct,
            padding=0,  # VALID unless a block passes its symmetric 'SAME' padding
            norm_layer="batchnorm2d",
            act_layer="relu",
            norm_kwargs=dict(eps=BN_EPS, momentum=BN_MOMENTUM),
            act_kwargs=dict(inplace=True),
        )
        features: list[nn.Module] = [
            conv_block(in_chans, 32, kernel_size=3, stride=2),  # Conv2d_1a_3x3, VALID
            conv_block(32, 32, kernel_size=3),  # Conv2d_2a_3x3, VALID
            conv_block(32, 64, kernel_size=3, padding=1),  # Conv2d_2b_3x3, SAME
            Mixed3a(conv_block),
            Mixed4a(conv_block),
            Mixed5a(conv_block),
        ]
        features += [InceptionA(conv_block) for _ in range(4)]  # Mixed_5b..5e
        features += [ReductionA(conv_block)]  # Mixed_6a
        features += [InceptionB(conv_block) for _ in range(7)]  # Mixed_6b..6h
        features += [ReductionB(conv_block)]  # Mixed_7a
        features += [InceptionC(conv_block) for _ in range(3)]  # Mixed_7b..7d
        self.features = nn.Sequential(*features)
        # timm feature_info: the same trunk as timm's InceptionV4, so the same taps
        # (Conv2d_2b, Mixed_3a, Mixed_5e, Mixed_6h, Mixed_7d)
        self.feature_info = [
            {"num_chs": chs, "reduction": red, "module": f"features.{i}"}
            for chs, red, i in (
                (64, 2, 2),
                (160, 4, 3),
                (384, 8, 9),
                (1024, 16, 17),
                (1536, 32, 21),
            )
        ]

        self.aux_kernel = _valid(mixed_6h_size(img_size), 5, 3)
        self.aux_head: SlimAuxHead | None = None
        if aux_logits and num_classes > 0:  # slim: `if create_aux_logits and num_classes`
            _check_aux_size(img_size, self.aux_kernel)
            fc = self._make_fc(768, num_classes)
            self.aux_head = SlimAuxHead(conv_block, self.aux_kernel, fc)
        self.aux_logits_enabled = self.aux_head is not None

        self.head_drop = nn.Dropout(drop_rate)  # Logits/Dropout_1b
        self.last_linear: nn.Module = self._make_fc(NUM_FEATURES, num_classes)  # Logits/Logits
        self._init_weights(bn_scale)

    @staticmethod
    def _make_fc(in_features: int, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        fc = nn.Linear(in_features, num_classes)
        # fully_connected is outside inception_arg_scope's initializer: slim's default
        # xavier_initializer() (uniform) and zero biases.
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
        return fc

    def _init_weights(self, bn_scale: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                slim_variance_scaling_(module.weight)  # inception_arg_scope
            elif isinstance(module, nn.BatchNorm2d) and not bn_scale:
                module.weight.requires_grad_(False)  # slim batch_norm scale=False: gamma == 1

    @property
    def aux_classifier_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the aux classifier (sized by num_classes, like the head)."""
        return ("aux_head.fc.",) if self.aux_head is not None else ()

    def get_classifier(self) -> nn.Module:
        return self.last_linear

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.global_pool = check_global_pool(num_classes, global_pool)
        """New Logits and Aux_logits layers; ``num_classes=0`` drops the aux head, as slim does."""
        device = next(self.parameters()).device
        self.num_classes = num_classes
        self.last_linear = self._make_fc(NUM_FEATURES, num_classes).to(device)
        if num_classes <= 0:
            self.aux_head = None
        elif self.aux_head is not None:
            self.aux_head.fc = self._make_fc(768, num_classes).to(device)
        self.aux_logits_enabled = self.aux_logits_enabled and self.aux_head is not None

    def _trunk(self, x: torch.Tensor, tap_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        tapped = None
        for index, block in enumerate(self.features):
            x = block(x)
            if tap_aux and index == MIXED_6H:
                tapped = x
        return x, tapped

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's feature interface: the outputs of the ``feature_info`` blocks."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be NCHW, got {output_fmt}")
        ends = [int(f["module"].split(".")[-1]) for f in self.feature_info]
        take, max_index = feature_take_indices(len(ends), indices)
        wanted = {ends[i] for i in take}
        blocks = self.features[: ends[max_index] + 1] if stop_early else self.features
        feats = []
        for index, block in enumerate(blocks):
            x = block(x)
            if index in wanted:
                feats.append(x)
        if intermediates_only:
            return feats
        return x, feats

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the trunk up to the last feature taken; drop the heads (timm's getter)."""
        ends = [int(f["module"].split(".")[-1]) for f in self.feature_info]
        take, max_index = feature_take_indices(len(ends), indices)
        self.features = self.features[: ends[max_index] + 1]
        if max_index < len(ends) - 1 or prune_head:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.reset_classifier(0)
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":  # '': unpooled maps (reset_classifier(0, ''))
            x = x.mean((2, 3))  # Logits/AvgPool_1a: kernel = the whole map, VALID
        x = self.head_drop(x)
        return x if pre_logits else self.last_linear(x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, aux_logits)`` whatever the mode (slim's end_points['AuxLogits'])."""
        if self.aux_head is None:
            raise RuntimeError("this SlimInceptionV4 has no AuxLogits head (aux_logits=False)")
        x, tapped = self._trunk(x, tap_aux=True)
        return self.forward_head(x), self.aux_head(tapped)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.training and self.aux_logits_enabled:
            return self.forward_with_aux(x)
        return self.forward_head(self.forward_features(x))


def slim_inception_v4(**kwargs: Any) -> SlimInceptionV4:
    """slim ``inception_v4``: 299 px, 1001 logits, aux logits, dropout keep 0.8."""
    return SlimInceptionV4(**kwargs)
