"""Read TensorFlow checkpoints (V2 tensor bundles and V1 TensorSlice files) without TensorFlow.

* V2 (TF >= 0.12 default): ``prefix.index`` is an SSTable of ``name -> BundleEntryProto``; the
  tensors are raw little-endian bytes in ``prefix.data-0000i-of-0000N`` (:mod:`.bundle`).
* V1 (the public 2016 slim tarballs): one SSTable of SavedTensorSlices (:mod:`.v1`).

Partitioned variables are stored as slices in both formats and are assembled into the full
tensor. bfloat16 has no NumPy dtype: it is returned upcast to float32 (exact). Modules:
:mod:`.protos` (shapes, slices, values, keys), :mod:`.base` (the checkpoint object),
:mod:`.locate` (prefix / file / folder -> checkpoint).
"""

from classzoo.formats.tf_checkpoint.base import TFCheckpoint, format_variables
from classzoo.formats.tf_checkpoint.locate import is_tf_checkpoint, open_tf_checkpoint
from classzoo.formats.tf_checkpoint.protos import slice_key

__all__ = [
    "TFCheckpoint",
    "format_variables",
    "is_tf_checkpoint",
    "open_tf_checkpoint",
    "slice_key",
]
