"""Projection fidelity on a folder of photos, the paper's way (Table 1 and Fig. 4): `evaluate`,
`bin/evaluate`.

Every photo (FFHQ-aligned already, or aligned here with `align=True`) is projected by each method:
  - global projection (1 code) in every latent space the generator has (StyleGAN2: W, W+, S; the demo
    DCGAN: z);
  - ours (n segments) in each space, with the generator's default lambda_reg ("reg." when it is > 0);
    in the generator's default space (W+ for StyleGAN2) also with lambda_reg = 0, as in the paper.
Each projection is measured against its target with
  - LPIPS: VGG16 v0.1, both images area-downsampled to at most 256 px (NVIDIA's projector protocol);
  - L2: the mean squared pixel error, images in [-1, 1];
  - identity: `identity.IdentityModel`, the cosine distance of dlib's face descriptors, a proxy for the
    paper's ArcFace (see identity.py).
The measurement is the same for every method, whatever the objective's own LPIPS settings.

Ours gets its masks from `masks=` (default: the segment generator G^S; 'logits', 'layout') and
`segmenter=` (a trained head's directory; default the k-means head), as invert() does.

The output folder holds
  evaluation.json                 every setting that changes a result (the generator, steps, segments,
                                  alignment, seed, the mask source and its segmenter, the measures); a
                                  rerun with other settings, or in a folder whose settings predate
                                  any of them, is refused
  images/<photo>/target.png       what the methods reconstruct (the aligned crop with align=True)
  images/<photo>/alignment.json   where that crop lies in the photo (align=True)
  images/<photo>/<method>.png     the projection
  images/<photo>/<method>.json    its measures (written last: it marks the run as done)
  table.md, table.json            mean and (population) standard deviation per method, as Table 1
  scatter.png                     Fig. 4: global LPIPS (x) against ours (y) per photo, one panel per space
A rerun skips the photo x method runs that are done (a photo whose file changed is run again).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from . import io
from .align import align as align_photo
from .dataset import list_images
from .demo import resolve_generator
from .errors import ChunkyGANError, ConfigError, ImageError
from .files import atomic_path, sha256_file
from .generators.protocol import fingerprint
from .identity import NAME as IDENTITY_NAME
from .identity import IdentityModel
from .inversion import InversionSettings, Monitor, invert
from .lpips import load_lpips, resize_for_lpips
from .masks.composite import luminance_where_grey
from .masks.options import MASK_KINDS, MaskSettings, make_mask_source, mask_kind, mask_source_record
from .progress import Progress

__all__ = ["Method", "methods_for", "evaluate", "LPIPS_MEASURE"]

RECORD_VERSION = 3  # 3: a grey photo's projection is measured as shown, in grey; 2: inverted in luminance
LPIPS_NET, LPIPS_RESOLUTION = "vgg", 256
LPIPS_MEASURE = f"LPIPS {LPIPS_NET} v0.1, images area-downsampled to at most {LPIPS_RESOLUTION} px"
L2_MEASURE = "mean squared pixel error, images in [-1, 1]"
MEASURES = ("lpips", "identity", "l2")


@dataclasses.dataclass(frozen=True)
class Method:
    key: str  # file name stem: global-w, ours-wplus, ours-wplus-reg, ...
    label: str  # as in the paper's table: W, Ours in W+, Ours in W+ reg.
    space: str
    segments: int
    lambda_reg: float
    tune_steps: int = 0  # pivotal tuning after the projection (tuning.py); 0: none


def methods_for(generator, segments: int, tune_steps: int = 0) -> list[Method]:
    """Global and ours in every space of the generator (see the module docstring); with tune_steps,
    also ours in the default space followed by pivotal tuning ("+ tuning")."""
    lam = float(generator.default_lambda_reg)
    out = []
    for space in generator.latent_spaces:
        key, name = space.replace("+", "plus"), space.upper()
        out.append(Method(f"global-{key}", name, space, 1, 0.0))
        if space == generator.default_space and lam > 0:
            out.append(Method(f"ours-{key}", f"Ours in {name}", space, segments, 0.0))
        reg = " reg." if lam > 0 else ""
        out.append(Method(f"ours-{key}{'-reg' if lam > 0 else ''}", f"Ours in {name}{reg}", space, segments, lam))
        if space == generator.default_space and tune_steps:
            out.append(Method(f"ours-{key}{'-reg' if lam > 0 else ''}-tuned", f"Ours in {name}{reg} + tuning",
                              space, segments, lam, int(tune_steps)))
    return out


_lpips_distance = jax.jit(lambda lp, a, b: lp.distance(resize_for_lpips(a, LPIPS_RESOLUTION),
                                                       resize_for_lpips(b, LPIPS_RESOLUTION)))


def _method_record(m: Method) -> dict:
    record = dataclasses.asdict(m)
    if not m.tune_steps:  # folders evaluated before tuning existed keep their settings
        del record["tune_steps"]
    return record


def _measure(lp, ident, target, projection) -> dict:
    return {"lpips": float(_lpips_distance(lp, target[None], projection[None])[0]),
            "l2": float(np.mean(np.square(np.asarray(projection, np.float64) - target))),
            "identity": ident.distances(target, [projection])[0] if ident is not None else None}


def _write_json(path: Path, record: dict) -> None:
    # Everything here lives in an evaluation folder that _check_folder recognised (or started): a rerun
    # with the same settings replaces its own records.
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def _read_record(path: Path, photo_sha256: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and record.get("version") == RECORD_VERSION
          and record.get("photo_sha256") == photo_sha256 and all(k in record for k in MEASURES))
    return record if ok else None


def _check_folder(out: Path, config: dict) -> None:
    """Start a new evaluation folder, or continue one made with the same settings; refuse anything else."""
    record = out / "evaluation.json"
    if record.is_file():
        try:
            old = json.loads(record.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{record}: unreadable ({e}); choose another output folder") from None
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            was = _masks_text(old.get("masks")) if "masks" in changed else None
            masks = f"; its masks: {was}, these: {_masks_text(config.get('masks'))}" if was else ""
            raise ConfigError(f"{out} holds an evaluation with other settings ({', '.join(changed)}{masks}); its runs "
                              "would mix with these in one table: choose another output folder")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an evaluation folder; choose another output folder")
    _write_json(record, config)


def _masks_text(record) -> str:
    if not isinstance(record, dict):
        return "not recorded (made before the mask source was)"
    seg = f" {record.get('head')} head {str(record.get('segmenter'))[:12]}" if record.get("kind") == "segmenter" else ""
    return f"{record.get('kind')}{seg}, {'learned' if record.get('learned') else 'fixed'}"


def _target(photo: Path, resolution: int, align: bool, folder: Path) -> np.ndarray:
    if align:
        image, alignment = align_photo(photo, resolution, output="float")
        _write_json(folder / "alignment.json", alignment.to_json())
    else:
        image = io.load_image(photo, resolution)
    io.save_png(folder / "target.png", io.to_uint8(image), overwrite=True)
    return image


def evaluate(photos, generator=None, output_dir="out/evaluate", *, steps=500, segments=8, align=False,
             identity=True, seed=0, masks=None, segmenter=None, progress=True, tune_steps=0) -> dict:
    """Project every photo in `photos` (a folder, a glob or one file) with every method of
    `methods_for(generator, segments)`, measure, and write the tables and the scatter plot into
    `output_dir` (see the module docstring). Returns what table.json holds.

    generator: an object, a checkpoint path, or None for the demo face generator.
    align: FFHQ-align each photo first (its largest face); without it, photos must be square and
        are resized to the generator's resolution.
    identity: measure the identity distance (needs the 'evaluate' extra).
    masks, segmenter: ours' mask source, a name of `masks.options.MASK_KINDS` (None: the generator's
        default, G^S where it offers its features) and a trained head's directory for G^S.
    tune_steps: also run ours in the default space followed by that many steps of pivotal tuning (the
        "+ tuning" row; tuning.TuningSettings' other defaults)."""
    for name, v, low in (("steps", steps, 1), ("segments", segments, 2), ("tune_steps", tune_steps, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
    out = Path(output_dir)
    root, rels = list_images(photos, exclude=[out])
    if not rels:
        raise ConfigError(f"no image files found in {photos}")
    if masks is not None and (not isinstance(masks, str) or mask_kind(masks) is None):
        raise ConfigError(f"masks must be one of {', '.join(MASK_KINDS)} for an evaluation, got {masks!r}")
    generator = resolve_generator(generator)
    methods = methods_for(generator, int(segments), int(tune_steps))
    source = make_mask_source(masks, int(segments), generator.resolution, seed=int(seed), generator=generator,
                              segmenter=segmenter)  # checked (and the k-means head fitted) before any run
    mask_record = mask_source_record(masks, source, generator, int(segments), segmenter=segmenter)
    config = {"version": RECORD_VERSION, "generator": fingerprint(generator), "resolution": generator.resolution,
              "steps": int(steps), "segments": int(segments), "align": bool(align), "seed": int(seed),
              "lpips": LPIPS_MEASURE, "l2": L2_MEASURE, "identity": IDENTITY_NAME if identity else None,
              "methods": [_method_record(m) for m in methods], "masks": mask_record}
    ident = IdentityModel() if identity else None  # fails before anything is written without the extra
    _check_folder(out, config)
    lp = load_lpips(LPIPS_NET)

    bar = Progress(len(rels) * len(methods), unit="runs", enabled=progress)
    done, records, failed = 0, {}, {}
    for rel in rels:
        photo, folder = root / rel, out / "images" / rel
        sha = sha256_file(photo)
        have = {m.key: _read_record(folder / f"{m.key}.json", sha) for m in methods}
        todo = [m for m in methods if have[m.key] is None]
        done += len(methods) - len(todo)
        bar.update(done, f"{rel}: done before" if not todo else f"{rel}")
        if todo:
            try:
                target = _target(photo, generator.resolution, align, folder)
            except ImageError as e:
                failed[rel] = str(e)
                done += len(todo)
                bar.update(done, f"{rel}: {e}")
                continue
        for m in todo:
            label = f"{rel}, {m.label}"
            settings = InversionSettings(segments=m.segments, space=m.space, steps=int(steps), lambda_reg=m.lambda_reg,
                                         seed=int(seed))
            result = invert(target, generator, settings=settings, tune=m.tune_steps or None,
                            masks=MaskSettings(masks, segmenter=segmenter) if m.segments > 1 else None,
                            monitor=Monitor(callback=lambda step, total, _: bar.update(done, f"{label}, step {step}/{total}")))
            # measured and saved as shown: a grey photo's projection in grey (it was inverted in luminance)
            shown = np.asarray(luminance_where_grey(result.composite[None], target[None])[0])
            record = {"version": RECORD_VERSION, "photo": rel, "photo_sha256": sha, "method": m.key,
                      **_measure(lp, ident, target, shown), "objective": result.final_losses,
                      "seconds": result.seconds}
            io.save_png(folder / f"{m.key}.png", io.to_uint8(shown), overwrite=True)
            _write_json(folder / f"{m.key}.json", record)
            have[m.key] = record
            done += 1
            bar.update(done, f"{label}: lpips {record['lpips']:.4f}")
        records[rel] = have
    if not records:
        raise ChunkyGANError(f"no photo could be evaluated; the first failure: {next(iter(failed.values()))}")
    table = _table(config, methods, records, failed)
    _write_json(out / "table.json", table)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(_markdown(table))
    _scatter(out / "scatter.png", table)
    return table


def _table(config, methods, records, failed) -> dict:
    rows = []
    for m in methods:
        row = {**dataclasses.asdict(m), "photos": len(records)}
        for k in MEASURES:
            vals = [records[r][m.key][k] for r in records]
            row[k] = None if any(v is None for v in vals) else {"mean": float(np.mean(vals)),
                                                                   "std": float(np.std(vals))}
        rows.append(row)
    per_photo = {r: {m.key: {k: records[r][m.key][k] for k in MEASURES} for m in methods} for r in records}
    return {"config": config, "photos": len(records), "rows": rows, "per_photo": per_photo, "failed": failed}


def _markdown(table) -> str:
    cfg, rows = table["config"], table["rows"]
    best = {k: min((r[k]["mean"] for r in rows if r[k]), default=None) for k in MEASURES}

    def cell(r, k):
        if r[k] is None:
            return "-"
        text = f"{r[k]['mean']:.4f} ± {r[k]['std']:.4f}"
        return f"**{text}**" if r[k]["mean"] == best[k] else text

    lines = [f"# Projection fidelity: {table['photos']} photos",
             "",
             f"Generator {cfg['generator'][:12]} ({cfg['resolution']} px), {cfg['steps']} steps, "
             f"{'photos FFHQ-aligned first' if cfg['align'] else 'photos used as given'}. "
             "Mean ± standard deviation over the photos (lower is better; the best mean in bold).",
             "",
             "| Projection | segments | lambda_reg | LPIPS | Identity (proxy) | L2 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['segments']} | {r['lambda_reg']:g} | {cell(r, 'lpips')} | "
              f"{cell(r, 'identity')} | {cell(r, 'l2')} |" for r in rows]
    identity = cfg["identity"] or "identity: not measured"
    lines += ["", f"- {cfg['lpips']}.", f"- L2: {cfg['l2']}.", f"- {identity[0].upper()}{identity[1:]}.",
              f"- Global projection uses 1 code; ours uses the segments above, masks: {_masks_text(cfg.get('masks'))}."]
    if table["failed"]:
        lines += ["", "Photos left out:"] + [f"- {r}: {why}" for r, why in table["failed"].items()]
    return "\n".join(lines) + "\n"


def _scatter(path: Path, table) -> None:
    """Fig. 4: per space, global LPIPS (x) against ours (y), one point per photo, the equal-loss line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, per = table["rows"], table["per_photo"]
    spaces = list(dict.fromkeys(r["space"] for r in rows))
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces), 4.4), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        glob = next(r for r in rows if r["space"] == space and r["segments"] == 1)
        ours = [r for r in rows if r["space"] == space and r["segments"] > 1]
        xs = np.array([per[p][glob["key"]]["lpips"] for p in per])
        everything = [xs]
        for r in ours:
            ys = np.array([per[p][r["key"]]["lpips"] for p in per])
            everything.append(ys)
            color = "tab:blue" if r["lambda_reg"] > 0 else "tab:orange"
            ax.scatter(xs, ys, s=22, color=color, label=f"{r['label']} ({int((ys < xs).sum())}/{len(xs)} below)")
        allv = np.concatenate(everything)
        lo, hi = float(allv.min()), float(allv.max())
        pad = max(0.05 * (hi - lo), 0.01)
        lim = (max(lo - pad, 0.0), hi + pad)
        ax.plot(lim, lim, color="red", linewidth=1, label="equal LPIPS")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.set_xlabel(f"LPIPS, global projection in {glob['label']}")
        ax.set_ylabel(f"LPIPS, ours in {glob['label']} ({ours[0]['segments']} segments)")
        ax.set_title(glob["label"])
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
