"""TF-slim's ``vgg_preprocessing`` and ``inception_preprocessing`` without TensorFlow: one import
for the pieces, which live along their seams.

The slim checkpoints were scored on images made by TensorFlow's own kernels; a network sees a
different input through torchvision's ``Resize`` (half-pixel centres, antialiasing); the
ResNet-152 seed's one-point gap was blamed on preprocessing. The pieces re-implement, in float32
like TF, the exact arithmetic of the ops slim calls:

* :mod:`classzoo.data.tf_resize`: the legacy TF1 resize kernels (``LegacyScaler``);
* :mod:`classzoo.data.tf_crop`: slim's size / crop arithmetic and ``sample_distorted_bounding_box``;
* :mod:`classzoo.data.tf_color`: ``adjust_{brightness,saturation,hue,contrast}``, ``distort_color``;
* :mod:`classzoo.data.tf_presets`: the four presets (vgg / inception, train / eval).

Decoding with TF's own pixels (IFAST DCT) is :func:`classzoo.data.decode.decode_tf`.
"""

from __future__ import annotations

from classzoo.data.tf_color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_distortion,
    draw_distortion,
)
from classzoo.data.tf_crop import (
    central_crop_box,
    sample_distorted_bounding_box,
    smallest_size_at_least,
)
from classzoo.data.tf_presets import (
    PRESETS,
    VGG_MEAN_RGB,
    InceptionEval,
    InceptionTrain,
    VggEval,
    VggTrain,
    build_tf_transform,
)
from classzoo.data.tf_resize import RESIZE_METHODS, resize_bilinear_tf1, resize_tf1

__all__ = [
    "PRESETS",
    "RESIZE_METHODS",
    "VGG_MEAN_RGB",
    "InceptionEval",
    "InceptionTrain",
    "VggEval",
    "VggTrain",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_distortion",
    "build_tf_transform",
    "central_crop_box",
    "draw_distortion",
    "resize_bilinear_tf1",
    "resize_tf1",
    "sample_distorted_bounding_box",
    "smallest_size_at_least",
]
