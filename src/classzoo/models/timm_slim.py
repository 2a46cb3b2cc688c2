"""classzoo's TF-slim networks in timm's registry: ``timm.create_model("slim_resnet_v1_50")``.

Importing classzoo registers them (see ``classzoo/__init__.py``). The names carry a ``slim_``
prefix because timm has its own ``inception_v4`` (another head, 1000 classes); inside classzoo
the plain names (``resnet_v1_50``, ``inception_v4``) keep meaning the slim layouts.

Each model's ``pretrained_cfg`` describes its real input, so ``timm.data.resolve_data_config``
gives slim's preprocessing; ``features_only=True`` gives timm's feature extraction. timm hosts no
weights for these layouts: ``pretrained=True`` is refused with the way to get them.
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from classzoo.errors import UserError
from classzoo.models.slim_inception_v4 import SlimInceptionV4, slim_inception_v4_pretrained_cfg
from classzoo.models.slim_resnet import SlimResNetV1, slim_resnet_pretrained_cfg

# classzoo name -> timm name
TIMM_NAMES = {
    "resnet_v1_50": "slim_resnet_v1_50",
    "resnet_v1_101": "slim_resnet_v1_101",
    "resnet_v1_152": "slim_resnet_v1_152",
    "inception_v4": "slim_inception_v4",
}

# timm's register_model reads this module's ``default_cfgs`` (timm/models/_registry.py)
default_cfgs = generate_default_cfgs(
    {
        **{TIMM_NAMES[f"resnet_v1_{d}"]: slim_resnet_pretrained_cfg(1000) for d in (50, 101, 152)},
        "slim_inception_v4": slim_inception_v4_pretrained_cfg(1001),
    }
)


def _build(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise UserError(
            f"timm hosts no weights for {variant} (the TF-slim layout): convert the TF-slim "
            f"checkpoint with `classzoo convert slim --model {variant.removeprefix('slim_')} "
            f"--checkpoint CKPT --output OUT.pt` and load OUT.pt (model.checkpoint)"
        )
    # slim ResNet's block features (non-strided, see SlimResNetV1.forward_intermediates) come
    # from forward_intermediates, not from module outputs: timm's getter wrapper
    feature_cfg = {"feature_cls": "getter"} if cls is SlimResNetV1 else {"flatten_sequential": True}
    return build_model_with_cfg(cls, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


@register_model
def slim_resnet_v1_50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """TF-slim resnet_v1_50 (classzoo ``resnet_v1_50``)."""
    return _build(SlimResNetV1, "slim_resnet_v1_50", pretrained, layers=(3, 4, 6, 3), **kwargs)


@register_model
def slim_resnet_v1_101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """TF-slim resnet_v1_101 (classzoo ``resnet_v1_101``)."""
    return _build(SlimResNetV1, "slim_resnet_v1_101", pretrained, layers=(3, 4, 23, 3), **kwargs)


@register_model
def slim_resnet_v1_152(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """TF-slim resnet_v1_152 (classzoo ``resnet_v1_152``)."""
    return _build(SlimResNetV1, "slim_resnet_v1_152", pretrained, layers=(3, 8, 36, 3), **kwargs)


@register_model
def slim_inception_v4(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """TF-slim inception_v4 with AuxLogits, 1001 logits (classzoo ``inception_v4``)."""
    return _build(SlimInceptionV4, "slim_inception_v4", pretrained, **kwargs)
