"""Converters from PyTorch StyleGAN2 checkpoints (NVIDIA pickles, rosinality .pt) to chunkygan_jax."""

from converters.torch_pickle import PersistentObject, read_nvidia_pickle, read_torch_zip, sniff_format

__all__ = ["PersistentObject", "read_nvidia_pickle", "read_torch_zip", "sniff_format"]
