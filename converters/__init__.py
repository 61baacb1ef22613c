"""Converters from PyTorch StyleGAN2 checkpoints (NVIDIA pickles, rosinality .pt) to chunkygan_jax.

This folder sits at the top of the repository and installs as `chunkygan_jax.converters`."""

from .torch_pickle import PersistentObject, read_nvidia_pickle, read_torch_zip, sniff_format

__all__ = ["PersistentObject", "read_nvidia_pickle", "read_torch_zip", "sniff_format"]
