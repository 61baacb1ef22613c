"""The one place where foreign StyleGAN2 state-dict names meet our parameter tree.

Our tree mirrors NVIDIA's stylegan2-ada-pytorch names and layouts (see stylegan2.py), so the NVIDIA
mapping only nests the flat names; rosinality's and NVIDIA TensorFlow's names are first renamed to
NVIDIA's. Conditional generators add `mapping.embed.*` (the label embedding) and our own
`mapping.class_w_avg` [c_dim, w_dim] (each class's mean w; no NVIDIA file holds it).

rosinality:

| rosinality                          | NVIDIA                                         |
|-------------------------------------|------------------------------------------------|
| style.{i+1}.weight / bias           | mapping.fc{i}.weight / bias                    |
| input.input [1, C, 4, 4]            | synthesis.b4.const [C, 4, 4]                   |
| conv1.*                             | synthesis.b4.conv1.*                           |
| convs.{2k} / convs.{2k+1}           | synthesis.b{2^(k+3)}.conv0 / conv1             |
| to_rgb1 / to_rgbs.{k}               | synthesis.b4.torgb / synthesis.b{2^(k+3)}.torgb|
| <conv>.conv.weight [1, O, I, k, k]  | <conv>.weight [O, I, k, k]                     |
| <conv>.conv.modulation.*            | <conv>.affine.*                                |
| <conv>.noise.weight [1]             | <conv>.noise_strength []                       |
| <conv>.activate.bias                | <conv>.bias                                    |
| <rgb>.bias [1, 3, 1, 1]             | <rgb>.bias [3]                                 |
| noises.noise_0 / noise_{j+1} [1,1,R,R] | b4.conv1 / convs.j noise_const [R, R]       |
| (top-level) latent_avg              | mapping.w_avg                                  |

NVIDIA TensorFlow (the variables of Gs and its mapping/synthesis components, TF layouts):

| TensorFlow                                 | NVIDIA                                            |
|--------------------------------------------|---------------------------------------------------|
| dlatent_avg                                | mapping.w_avg                                     |
| mapping/Dense{i}/weight [in, out]          | mapping.fc{i}.weight, transposed                  |
| mapping/LabelEmbed/weight [c_dim, E]       | mapping.embed.weight, transposed                  |
| synthesis/4x4/Const/const [1, C, 4, 4]     | synthesis.b4.const [C, 4, 4]                      |
| synthesis/4x4/Conv/*                       | synthesis.b4.conv1.*                              |
| synthesis/{r}x{r}/Conv0_up, Conv1, ToRGB   | synthesis.b{r}.conv0, conv1, torgb                |
| <layer>/weight [k, k, in, out]             | <layer>.weight [out, in, k, k] (Conv0_up: the     |
|                                            | kernel flipped in space, as TF's transposed conv) |
| <layer>/mod_weight [w_dim, in]             | <layer>.affine.weight, transposed                 |
| <layer>/mod_bias                           | <layer>.affine.bias, plus 1 (TF adds it at run time)|
| <layer>/noise_strength, <layer>/bias       | the same names                                    |
| synthesis/noise{i} [1, 1, R, R]            | noise_const [R, R] of the i-th conv (b4.conv1 = 0)|
| lod                                        | dropped (progressive growing's level)             |

The FIR buffers (`resample_filter`, `blur.kernel`, `upsample.kernel`) are checked to be the standard
[1, 3, 3, 1] filter and dropped. Every other name must be present with the shape the architecture
implies; missing, unexpected or wrongly shaped tensors raise `CheckpointError` naming the keys.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import numpy as np

from ..errors import CheckpointError
from .stylegan2 import StyleGAN2, StyleGAN2Config, sample_ws

_FIR_2D = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0])


def expected_shapes(config: StyleGAN2Config) -> dict[str, tuple[int, ...]]:
    """Every official NVIDIA state-dict name (FIR buffers excluded) and its shape, plus
    `mapping.class_w_avg` for a conditional generator."""
    shapes = {"mapping.w_avg": (config.w_dim,)}
    if config.c_dim:
        shapes["mapping.embed.weight"] = (config.embed_features, config.c_dim)
        shapes["mapping.embed.bias"] = (config.embed_features,)
        shapes["mapping.class_w_avg"] = (config.c_dim, config.w_dim)  # ours: no NVIDIA file has it
    dims = [config.mapping_input_dim] + [config.w_dim] * config.mapping_layers
    for i in range(config.mapping_layers):
        shapes[f"mapping.fc{i}.weight"] = (dims[i + 1], dims[i])
        shapes[f"mapping.fc{i}.bias"] = (dims[i + 1],)
    style_dims = config.style_dims()
    for name in config.layer_names():
        block, layer = name.split(".")
        res = int(block[1:])
        c_in = style_dims[name]
        c_out = config.img_channels if layer == "torgb" else config.channels_at(res)
        k = 1 if layer == "torgb" else 3
        prefix = f"synthesis.{name}"
        shapes[f"{prefix}.affine.weight"] = (c_in, config.w_dim)
        shapes[f"{prefix}.affine.bias"] = (c_in,)
        shapes[f"{prefix}.weight"] = (c_out, c_in, k, k)
        shapes[f"{prefix}.bias"] = (c_out,)
        if layer != "torgb":
            shapes[f"{prefix}.noise_const"] = (res, res)
            shapes[f"{prefix}.noise_strength"] = ()
    shapes["synthesis.b4.const"] = (config.channels_at(4), 4, 4)
    return shapes


def _infer_config(state: Mapping[str, np.ndarray], **record) -> StyleGAN2Config:
    """Architecture from names and shapes; CheckpointError if the core tensors are absent."""
    try:
        fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
        res_list = sorted(int(m.group(1)) for k in state
                          if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
        if not fcs or not res_list:
            raise KeyError("mapping.fc*.weight / synthesis.b*.conv1.weight")
        top = res_list[-1]
        c_dim, embed = (int(d) for d in state["mapping.embed.weight"].shape[::-1]) \
            if "mapping.embed.weight" in state else (0, 0)
        if top & (top - 1) or top < 4 or top > 4096 or res_list != [2 ** i for i in range(2, int(math.log2(top)) + 1)]:
            raise CheckpointError(f"synthesis blocks at {res_list} are not the power-of-two sequence 4..N")
        return StyleGAN2Config(
            resolution=top, z_dim=int(state[f"mapping.fc{fcs[0]}.weight"].shape[1]) - embed,
            c_dim=c_dim, embed_features=embed,
            w_dim=int(state[f"mapping.fc{fcs[-1]}.weight"].shape[0]), mapping_layers=len(fcs),
            channels=tuple((r, int(state[f"synthesis.b{r}.conv1.weight"].shape[0])) for r in res_list),
            img_channels=int(state[f"synthesis.b{top}.torgb.weight"].shape[0])
            if f"synthesis.b{top}.torgb.weight" in state else 3,
            **record)
    except KeyError as e:
        raise CheckpointError(f"not a StyleGAN2 generator state dict: missing {e}") from None


def _check_fir(name, value):
    value = np.asarray(value, np.float64)
    if value.shape != (4, 4) or not np.allclose(value / value.sum(), _FIR_2D / _FIR_2D.sum(), atol=1e-6):
        raise CheckpointError(f"{name} is not the standard [1, 3, 3, 1] FIR filter; unsupported generator")


def _refuse_other_architectures(state):
    if any(re.fullmatch(r"synthesis\.b\d+\.skip\.weight", k) for k in state):
        raise CheckpointError("this generator uses the 'resnet' synthesis architecture; only 'skip' "
                              "(NVIDIA config-f, rosinality) is supported")
    res = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if len(res) > 1 and not any(k.startswith(f"synthesis.b{res[0]}.torgb.") for k in state):
        raise CheckpointError("this generator uses the 'orig' synthesis architecture (ToRGB only in the "
                              "last block); only 'skip' is supported")


def stylegan2_from_nvidia(state: Mapping[str, np.ndarray], *, conv_clamp=None,
                          mapping_lr_multiplier=0.01, w_avg=None, class_w_avg=None) -> StyleGAN2:
    """Build a generator from an official NVIDIA `Generator.state_dict()` (numpy arrays).

    A conditional generator (mapping.embed.*) also needs each class's mean w: `class_w_avg`
    [c_dim, w_dim], or None for zeros to be replaced by the caller (see `compute_class_w_avg`)."""
    state = {k: np.asarray(v) for k, v in state.items()}
    _refuse_other_architectures(state)
    for k in [k for k in state if k.endswith("resample_filter")]:
        _check_fir(k, state.pop(k))
    if w_avg is not None:
        state["mapping.w_avg"] = np.asarray(w_avg).reshape(-1)
    config = _infer_config(state, conv_clamp=conv_clamp, mapping_lr_multiplier=mapping_lr_multiplier)
    if config.c_dim:
        state["mapping.class_w_avg"] = (np.zeros((config.c_dim, config.w_dim), np.float32)
                                        if class_w_avg is None else np.asarray(class_w_avg))
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected: " + ", ".join(unexpected))
    if wrong:
        problems.append("wrong shape: " + ", ".join(wrong))
    if problems:
        raise CheckpointError("state dict does not match a StyleGAN2 'skip' generator "
                              f"({config.resolution}px, w_dim {config.w_dim}); " + "; ".join(problems))
    params: dict = {}
    for key in expected:
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = np.asarray(state[key], np.float32)
    return StyleGAN2(config=config, params=params)


def rosinality_to_nvidia_names(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename (and reshape) a rosinality `g_ema` state dict into NVIDIA's names and layouts."""
    out: dict[str, np.ndarray] = {}
    unknown = []

    def conv_target(prefix):
        if prefix == "conv1":
            return "synthesis.b4.conv1"
        k = int(prefix.split(".")[1])
        return f"synthesis.b{2 ** (k // 2 + 3)}.conv{k % 2}"

    def rgb_target(prefix):
        return "synthesis.b4.torgb" if prefix == "to_rgb1" else f"synthesis.b{2 ** (int(prefix.split('.')[1]) + 3)}.torgb"

    for key, value in state.items():
        value = np.asarray(value)
        if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
            out[f"mapping.fc{int(m.group(1)) - 1}.{m.group(2)}"] = value
        elif key == "input.input":
            out["synthesis.b4.const"] = value.reshape(value.shape[1:])
        elif m := re.fullmatch(r"(conv1|convs\.\d+)\.(conv\.weight|conv\.modulation\.weight|conv\.modulation\.bias|noise\.weight|activate\.bias|conv\.blur\.kernel)", key):
            tgt, field = conv_target(m.group(1)), m.group(2)
            if field == "conv.weight":
                out[f"{tgt}.weight"] = value.reshape(value.shape[1:])
            elif field.startswith("conv.modulation."):
                out[f"{tgt}.affine.{field.rsplit('.', 1)[1]}"] = value
            elif field == "noise.weight":
                out[f"{tgt}.noise_strength"] = value.reshape(())
            elif field == "activate.bias":
                out[f"{tgt}.bias"] = value
            else:
                _check_fir(key, value)
        elif m := re.fullmatch(r"(to_rgb1|to_rgbs\.\d+)\.(conv\.weight|conv\.modulation\.weight|conv\.modulation\.bias|bias|upsample\.kernel)", key):
            tgt, field = rgb_target(m.group(1)), m.group(2)
            if field == "conv.weight":
                out[f"{tgt}.weight"] = value.reshape(value.shape[1:])
            elif field.startswith("conv.modulation."):
                out[f"{tgt}.affine.{field.rsplit('.', 1)[1]}"] = value
            elif field == "bias":
                out[f"{tgt}.bias"] = value.reshape(-1)
            else:
                _check_fir(key, value)
        elif m := re.fullmatch(r"noises\.noise_(\d+)", key):
            j = int(m.group(1))
            tgt = "synthesis.b4.conv1" if j == 0 else conv_target(f"convs.{j - 1}")
            out[f"{tgt}.noise_const"] = value.reshape(value.shape[-2:])
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError("unexpected keys in rosinality state dict: " + ", ".join(unknown))
    return out


def stylegan2_from_rosinality(state: Mapping[str, np.ndarray], *, latent_avg=None) -> StyleGAN2:
    """Build a generator from a rosinality `g_ema` state dict. rosinality files often lack
    `latent_avg`; pass None and compute w_avg afterwards (see `compute_w_avg`)."""
    names = rosinality_to_nvidia_names(state)
    placeholder = latent_avg is None
    if placeholder:
        fcs = [k for k in names if re.fullmatch(r"mapping\.fc\d+\.bias", k)]
        if not fcs:
            raise CheckpointError("not a rosinality StyleGAN2 state dict: no style.*.bias")
        w_dim = max((names[k].shape[0] for k in fcs))
        latent_avg = np.zeros((w_dim,), np.float32)
    return stylegan2_from_nvidia(names, conv_clamp=None, w_avg=latent_avg)


def compute_w_avg(generator: StyleGAN2, *, num_samples=10_000, seed=123, label=None) -> np.ndarray:
    """Mean of the mapping network's output over `num_samples` z ~ N(0, I) drawn with a fixed numpy seed
    (NVIDIA's projector and the authors' tool use 10,000 samples from RandomState(123)); a conditional
    generator maps them with class `label` (default: its bound class)."""
    ws = sample_ws(generator, num_samples, seed, label=label)
    return ws[:, 0].mean(axis=0, dtype=np.float64).astype(np.float32)


def compute_class_w_avg(generator: StyleGAN2, *, num_samples=10_000, seed=123) -> np.ndarray:
    """[c_dim, w_dim]: `compute_w_avg` of every class of a conditional generator (the same z for each)."""
    return np.stack([compute_w_avg(generator, num_samples=num_samples, seed=seed, label=k)
                     for k in range(generator.num_classes)])


# ---- NVIDIA TensorFlow ----

_TF_LAYER = re.compile(r"synthesis/(\d+)x\1/(Conv|Conv0_up|Conv1|ToRGB)/"
                       r"(weight|bias|mod_weight|mod_bias|noise_strength)")


def tf_to_nvidia_names(variables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename (and re-lay-out) the variables of an NVIDIA TensorFlow StyleGAN2 `Gs` (names with their
    component prefix: "mapping/Dense0/weight", "synthesis/noise0", "dlatent_avg") into NVIDIA's
    PyTorch state-dict names and layouts. CheckpointError for the variables of other architectures."""
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in variables):
        raise CheckpointError("this generator uses the 'orig' synthesis architecture (progressive-growing "
                              "ToRGB_lod layers); only 'skip' (NVIDIA config-e and config-f) is supported")
    if any(re.fullmatch(r"synthesis/\d+x\d+/Skip/weight", k) for k in variables):
        raise CheckpointError("this generator uses the 'resnet' synthesis architecture; only 'skip' "
                              "(NVIDIA config-e and config-f) is supported")
    if any(k.startswith("mapping/LabelConcat/") for k in variables):
        raise CheckpointError("this conditional generator concatenates raw labels to z (TensorFlow StyleGAN2's "
                              "LabelConcat); only StyleGAN2-ADA's label embedding (LabelEmbed) is supported")
    out: dict[str, np.ndarray] = {}
    unknown = []
    for key, value in variables.items():
        value = np.asarray(value)
        if key == "dlatent_avg":
            out["mapping.w_avg"] = value
        elif key == "lod":
            continue  # progressive growing's level of detail; unused by 'skip' generators
        elif m := re.fullmatch(r"mapping/Dense(\d+)/(weight|bias)", key):
            out[f"mapping.fc{int(m.group(1))}.{m.group(2)}"] = value.T if m.group(2) == "weight" else value
        elif m := re.fullmatch(r"mapping/LabelEmbed/(weight|bias)", key):
            out[f"mapping.embed.{m.group(1)}"] = value.T if m.group(1) == "weight" else value
        elif key == "synthesis/4x4/Const/const":
            out["synthesis.b4.const"] = value[0] if value.ndim == 4 and value.shape[0] == 1 else value
        elif m := re.fullmatch(r"synthesis/noise(\d+)", key):
            i = int(m.group(1))  # noise i feeds conv i: b4.conv1, b8.conv0, b8.conv1, b16.conv0, ...
            target = "b4.conv1" if i == 0 else f"b{2 ** ((i + 5) // 2)}.conv{(i + 1) % 2}"
            out[f"synthesis.{target}.noise_const"] = value[0, 0] if value.ndim == 4 else value
        elif m := _TF_LAYER.fullmatch(key):
            res, layer, field = int(m.group(1)), m.group(2), m.group(3)
            if layer != "ToRGB" and (res == 4) != (layer == "Conv"):  # 4x4 has Conv; others Conv0_up, Conv1
                unknown.append(key)
                continue
            target = f"synthesis.b{res}." + {"Conv": "conv1", "Conv0_up": "conv0", "Conv1": "conv1",
                                             "ToRGB": "torgb"}[layer]
            if field == "weight" and value.ndim == 4:
                if layer == "Conv0_up":  # TF's transposed conv uses the kernel flipped in space
                    value = value[::-1, ::-1]
                out[f"{target}.weight"] = value.transpose(3, 2, 0, 1)
            elif field == "mod_weight":
                out[f"{target}.affine.weight"] = value.T
            elif field == "mod_bias":
                out[f"{target}.affine.bias"] = value + np.float32(1)  # TF adds the 1 at run time
            else:
                out[f"{target}.{field}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError("unexpected variables in the TensorFlow generator: " + ", ".join(unknown[:8])
                              + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""))
    return out
