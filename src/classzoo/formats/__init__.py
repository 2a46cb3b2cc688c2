"""Byte-level formats shared by the TFRecord and TF checkpoint readers (no TensorFlow needed)."""
