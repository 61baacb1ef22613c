"""Converters from StyleGAN2 checkpoints (NVIDIA PyTorch and TensorFlow pickles, rosinality .pt) to chunkygan_jax.

This folder sits at the top of the repository and installs as `chunkygan_jax.converters`."""

from .tf_pickle import read_tf_pickle
from .torch_pickle import PersistentObject, read_nvidia_pickle, read_torch_zip, sniff_format

__all__ = ["PersistentObject", "read_nvidia_pickle", "read_tf_pickle", "read_torch_zip", "sniff_format"]
