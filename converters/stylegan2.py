"""Foreign StyleGAN2 checkpoint file -> our `StyleGAN2` plus a provenance record.

Handles NVIDIA stylegan2-ada-pytorch network pickles (conditional ones included), NVIDIA's TensorFlow
StyleGAN2 / StyleGAN2-ADA network pickles and rosinality `.pt` files (torch.save zip or legacy). The
file readers live in `torch_pickle.py` and `tf_pickle.py`, and the name mappings in
`chunkygan_jax.generators.statedict`; this module only decides which network to take, which
constructor options the file implies, and what to record about where the weights came from.
Saving and caching our own format is `chunkygan_jax.checkpoints`' job.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError
from ..files import sha256_file
from ..generators.statedict import (compute_class_w_avg, compute_w_avg, stylegan2_from_nvidia,
                                    stylegan2_from_rosinality, tf_to_nvidia_names)
from ..generators.stylegan2 import StyleGAN2
from .tf_pickle import read_tf_pickle
from .torch_pickle import read_nvidia_pickle, read_torch_zip, sniff_format

__all__ = ["CLASS_W_AVG_COMPUTED", "W_AVG_COMPUTED", "convert_file", "from_nvidia_networks",
           "from_rosinality_checkpoint", "from_tf_network"]

W_AVG_SAMPLES, W_AVG_SEED = 10_000, 123
W_AVG_COMPUTED = f"computed from {W_AVG_SAMPLES} mapped z, seed {W_AVG_SEED}"
# A conditional checkpoint holds one w_avg (over all classes); each class's mean is computed.
CLASS_W_AVG_COMPUTED = f"per class: computed from {W_AVG_SAMPLES} mapped z with that class, seed {W_AVG_SEED}"


def _is_stylegan3(state) -> bool:
    # StyleGAN3's synthesis starts from a Fourier-feature `input` layer and names layers L<i>_<size>_<ch>.
    return any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in state)


def from_nvidia_networks(nets: dict) -> tuple[StyleGAN2, dict]:
    """`read_nvidia_pickle` output -> (generator, partial source record: network, w_avg_source[, note])."""
    network = "G_ema" if "G_ema" in nets else "G" if "G" in nets else None
    if network is None:
        raise CheckpointError(f"no generator (G_ema or G) in this pickle, only {sorted(nets)}")
    net = nets[network]
    state, kwargs = net["state"], net["init_kwargs"]
    if _is_stylegan3(state):
        raise CheckpointError("StyleGAN3 generators are not supported (only StyleGAN2 / StyleGAN2-ADA)")
    synthesis_kwargs = kwargs.get("synthesis_kwargs") or {}
    architecture = synthesis_kwargs.get("architecture", "skip")  # 'skip' is NVIDIA's default for G
    if architecture != "skip":
        raise CheckpointError(f"the '{architecture}' synthesis architecture is not supported; only 'skip' "
                              "(NVIDIA config-f, rosinality) is")
    clamp = synthesis_kwargs.get("conv_clamp")
    lr_mult = (kwargs.get("mapping_kwargs") or {}).get("lr_multiplier", 0.01)
    generator = stylegan2_from_nvidia(state, conv_clamp=None if clamp is None else float(clamp),
                                      mapping_lr_multiplier=float(lr_mult))
    # Shapes decide the config; the constructor kwargs must agree, or the pickle is not what it claims.
    cfg = generator.config
    for key, got in (("img_resolution", cfg.resolution), ("z_dim", cfg.z_dim), ("w_dim", cfg.w_dim),
                     ("img_channels", cfg.img_channels), ("c_dim", cfg.c_dim)):
        if key in kwargs and kwargs[key] != got:
            raise CheckpointError(f"{network}'s init_kwargs say {key}={kwargs[key]} but its weights imply {got}")
    generator, record = _with_class_w_avg(generator, {"network": network, "w_avg_source": "checkpoint"})
    if network == "G":
        record["note"] = "no G_ema in the pickle; converted G (the raw training weights, not the moving average)"
    return generator, record


def _with_class_w_avg(generator: StyleGAN2, record: dict) -> tuple[StyleGAN2, dict]:
    """A conditional generator gets each class's mean w (no NVIDIA file holds them), and the record says so."""
    if not generator.num_classes:
        return generator, record
    class_w_avg = compute_class_w_avg(generator, num_samples=W_AVG_SAMPLES, seed=W_AVG_SEED)
    params = dict(generator.params, mapping=dict(generator.params["mapping"], class_w_avg=class_w_avg))
    return generator.replace(params=params), {**record, "class_w_avg_source": CLASS_W_AVG_COMPUTED}


# What NVIDIA's TensorFlow generators may say in static_kwargs, and what each must be to be read here.
_TF_MUST_BE = {"architecture": "skip", "nonlinearity": "lrelu", "mapping_nonlinearity": "lrelu",
               "resample_kernel": [1, 3, 3, 1], "use_noise": True, "normalize_latents": True}
_TF_FROM_WEIGHTS = ("latent_size", "label_size", "dlatent_size", "resolution", "num_channels", "mapping_layers",
                    "mapping_fmaps", "label_fmaps", "fmap_base", "fmap_max", "fmap_min", "fmap_decay")
# Training-time or sampling-time options that do not change what the weights compute.
_TF_IGNORED = ("truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "w_avg_beta",
               "dlatent_avg_beta", "num_fp16_res", "dtype")


def from_tf_network(net: dict) -> tuple[StyleGAN2, dict]:
    """`read_tf_pickle` output -> (generator, partial source record)."""
    kwargs = net["static_kwargs"]
    unknown = sorted(k for k in kwargs if k not in (*_TF_MUST_BE, *_TF_FROM_WEIGHTS, *_TF_IGNORED,
                                                   "conv_clamp", "mapping_lrmul"))
    if unknown:
        raise CheckpointError("this TensorFlow generator has options this converter does not know: "
                              + ", ".join(unknown[:8]) + " (StyleGAN2 config-e/f and StyleGAN2-ADA are supported)")
    for key, want in _TF_MUST_BE.items():
        got = kwargs.get(key, want)
        if got is not None and (list(got) if isinstance(got, (list, tuple)) else got) != want:
            raise CheckpointError(f"this TensorFlow generator has {key}={got!r:.40}; only {want!r} is supported")
    clamp = kwargs.get("conv_clamp")
    generator = stylegan2_from_nvidia(tf_to_nvidia_names(net["variables"]),
                                      conv_clamp=None if clamp is None else float(clamp),
                                      mapping_lr_multiplier=float(kwargs.get("mapping_lrmul", 0.01)))
    cfg = generator.config
    for key, got in (("resolution", cfg.resolution), ("latent_size", cfg.z_dim), ("dlatent_size", cfg.w_dim),
                     ("num_channels", cfg.img_channels), ("label_size", cfg.c_dim)):
        if kwargs.get(key) is not None and kwargs[key] != got:
            raise CheckpointError(f"the TensorFlow generator's static_kwargs say {key}={kwargs[key]!r:.20} but "
                                  f"its variables imply {got}")
    return _with_class_w_avg(generator, {"network": "Gs", "w_avg_source": "checkpoint"})


def _with_computed_w_avg(generator: StyleGAN2) -> StyleGAN2:
    w_avg = compute_w_avg(generator, num_samples=W_AVG_SAMPLES, seed=W_AVG_SEED)
    params = dict(generator.params, mapping=dict(generator.params["mapping"], w_avg=w_avg))
    return generator.replace(params=params)


def from_rosinality_checkpoint(ckpt) -> tuple[StyleGAN2, dict]:
    """rosinality `torch.load` result ({"g_ema": state_dict, ["latent_avg": ...]}) -> (generator, partial record)."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"not a rosinality checkpoint: the file holds a {type(ckpt).__name__}, not a dict")
    network = "g_ema" if "g_ema" in ckpt else "g" if "g" in ckpt else None
    if network is None or not isinstance(ckpt[network], dict):
        raise CheckpointError(f"not a rosinality StyleGAN2 checkpoint: no 'g_ema' state dict (keys: {sorted(map(str, ckpt))})")
    latent_avg = ckpt.get("latent_avg")
    generator = stylegan2_from_rosinality(ckpt[network], latent_avg=latent_avg)
    record = {"network": network, "w_avg_source": "checkpoint"}
    if latent_avg is None:  # train.py checkpoints have no latent_avg; truncation needs one
        generator = _with_computed_w_avg(generator)
        record["w_avg_source"] = W_AVG_COMPUTED
    if network == "g":
        record["note"] = "no g_ema in the checkpoint; converted g (the raw training weights, not the moving average)"
    return generator, record


def convert_file(path, *, sha256: str | None = None) -> tuple[StyleGAN2, dict]:
    """Convert an NVIDIA `.pkl` (PyTorch or TensorFlow) or rosinality `.pt` file. Returns (generator, source record) where the
    record is {"format", "file", "sha256", "network", "w_avg_source"[, "class_w_avg_source"][, "note"]}. `sha256` may be passed
    when the caller already hashed the file."""
    path = Path(path)
    fmt = sniff_format(path)  # raises CheckpointError for missing files and unknown formats
    if fmt == "nvidia-pkl":
        generator, partial = from_nvidia_networks(read_nvidia_pickle(path))
    elif fmt == "nvidia-tf-pkl":
        generator, partial = from_tf_network(read_tf_pickle(path))
    elif fmt in ("torch-zip", "torch-legacy"):
        generator, partial = from_rosinality_checkpoint(read_torch_zip(path))
        fmt = "rosinality-pt"
    else:
        raise CheckpointError(f"{path} is an orbax directory, not a foreign checkpoint file")
    source = {"format": fmt, "file": path.name, "sha256": sha256 or sha256_file(path)}
    return generator, {**source, **partial}
