"""Foreign StyleGAN2 checkpoint file -> our `StyleGAN2` plus a provenance record.

Handles NVIDIA stylegan2-ada-pytorch network pickles and rosinality `.pt` files (torch.save zip or
legacy). The file readers live in `torch_pickle.py` and the state-dict name mapping in
`chunkygan_jax.generators.statedict`; this module only decides which network to take, which
constructor options the file implies, and what to record about where the weights came from.
Saving and caching our own format is `chunkygan_jax.checkpoints`' job.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError
from ..files import sha256_file
from ..generators.statedict import compute_w_avg, stylegan2_from_nvidia, stylegan2_from_rosinality
from ..generators.stylegan2 import StyleGAN2
from .torch_pickle import read_nvidia_pickle, read_torch_zip, sniff_format

__all__ = ["W_AVG_COMPUTED", "convert_file", "from_nvidia_networks", "from_rosinality_checkpoint"]

W_AVG_SAMPLES, W_AVG_SEED = 10_000, 123
W_AVG_COMPUTED = f"computed from {W_AVG_SAMPLES} mapped z, seed {W_AVG_SEED}"


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
    if kwargs.get("c_dim", 0):
        raise CheckpointError(f"conditional generators are not supported (c_dim={kwargs['c_dim']}); "
                              "only unconditional StyleGAN2 (c_dim=0) can be converted")
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
                     ("img_channels", cfg.img_channels)):
        if key in kwargs and kwargs[key] != got:
            raise CheckpointError(f"{network}'s init_kwargs say {key}={kwargs[key]} but its weights imply {got}")
    record = {"network": network, "w_avg_source": "checkpoint"}
    if network == "G":
        record["note"] = "no G_ema in the pickle; converted G (the raw training weights, not the moving average)"
    return generator, record


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
    """Convert an NVIDIA `.pkl` or rosinality `.pt` file. Returns (generator, source record) where the
    record is {"format", "file", "sha256", "network", "w_avg_source"[, "note"]}. `sha256` may be passed
    when the caller already hashed the file."""
    path = Path(path)
    fmt = sniff_format(path)  # raises CheckpointError for missing files and unknown formats
    if fmt == "nvidia-pkl":
        generator, partial = from_nvidia_networks(read_nvidia_pickle(path))
    elif fmt in ("torch-zip", "torch-legacy"):
        generator, partial = from_rosinality_checkpoint(read_torch_zip(path))
        fmt = "rosinality-pt"
    else:
        raise CheckpointError(f"{path} is an orbax directory, not a foreign checkpoint file")
    source = {"format": fmt, "file": path.name, "sha256": sha256 or sha256_file(path)}
    return generator, {**source, **partial}
