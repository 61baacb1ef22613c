"""Images and masks at the file boundary.

Inside the library images are float32 [H, W, 3] (or NHWC) in [-1, 1]; uint8 exists only here.
Conversions without a request: greyscale is replicated to RGB, a fully opaque alpha channel is dropped,
16-bit greyscale keeps its full precision (Pillow itself reads 16-bit colour PNGs as 8 bits per
channel), and a square image of another size is resized with Lanczos to the generator's resolution.
Every resize is reported as one INFO line, "resized PHOTO from WxH to RxR", on the `chunkygan_jax.io`
logger (the command-line tools show it on stderr; the library stays quiet unless logging is set up).
Refused unless the caller asks for a conversion, because silently guessing would change what is being
reconstructed: non-square images (crop="center"), translucent alpha (alpha="white"/"drop"), and images
under a quarter of the resolution, which an enlargement would have to invent (upscale=True). Images
declaring more pixels than Pillow's decompression-bomb limit are refused. Every file is read as it is
displayed: its EXIF orientation is applied before anything else, and an embedded ICC colour profile is
converted to sRGB.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .files import atomic_path

CROPS = ("none", "center")
ALPHAS = ("refuse", "drop", "white")
MIN_SCALE = 4  # images under resolution / MIN_SCALE are refused unless upscale=True

log = logging.getLogger(__name__)


# Formats that Pillow cannot decode, recognised by their first bytes so that the refusal names them.
_ISO_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"hevx": "HEIC", b"heim": "HEIC",
               b"heis": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _unreadable_format(head: bytes) -> str | None:
    if head[4:8] == b"ftyp":
        return _ISO_BRANDS.get(head[8:12], "ISO media (" + head[8:12].decode("latin-1").strip() + ")")
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL "):
        return "JPEG XL"
    if head.startswith(b"%PDF"):
        return "PDF"
    if b"<svg" in head[:512]:
        return "SVG"
    return None


def _to_srgb(img: Image.Image) -> Image.Image:
    """Convert an image with an embedded ICC profile (other than sRGB) to sRGB, where that is cheap."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        from PIL import ImageCms
        src = ImageCms.ImageCmsProfile(BytesIO(icc))
        if ImageCms.getProfileDescription(src).strip().lower().startswith("srgb"):
            return img
        out = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                        outputMode="RGB" if img.mode == "CMYK" else img.mode)
    except Exception:  # no LittleCMS, or a broken profile: the pixels stay as stored
        return img
    out.info.pop("icc_profile", None)
    return out


def _open(path, data: bytes | None = None) -> Image.Image:
    """Open and decode an image the way it is displayed: the EXIF orientation applied first, then an
    embedded ICC profile converted to sRGB. `data`: the file's bytes, already read (e.g. from a bucket;
    `path` then only names it in messages)."""
    if data is None:
        path = Path(path)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if path.is_dir():
            raise ImageError(f"{path}: is a directory, expected an image file")
    try:
        img = Image.open(path if data is None else BytesIO(data))
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused, too many pixels to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if data is None:
            with open(path, "rb") as f:
                data = f.read(1024)
        fmt = _unreadable_format(data[:1024])
        if fmt is not None:
            raise ImageError(f"{path}: {fmt} images cannot be read; convert it to PNG or JPEG first") from None
        raise ImageError(f"{path}: not a readable image ({e})") from None
    return _to_srgb(img)


def _to_float_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> float64 [H, W, C] in [0, 1], C in (1, 2, 3, 4)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return (arr / top)[..., None]
    if img.mode == "F":
        raise ImageError("floating-point image files are not supported; save as 8- or 16-bit PNG")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB" if img.mode != "1" else "L")
    arr = np.asarray(img, dtype=np.float64) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def image_to_rgb(arr: np.ndarray, *, alpha="refuse", source="image") -> np.ndarray:
    """[H, W, C] in [0, 1] with C = 1..4 -> [H, W, 3], applying the alpha policy."""
    if alpha not in ALPHAS:
        raise ImageError(f"alpha policy must be one of {ALPHAS}")
    c = arr.shape[-1]
    if c in (2, 4):
        a = arr[..., -1:]
        arr = arr[..., :-1]
        if np.all(a >= 1.0):
            pass  # fully opaque: dropping alpha loses nothing
        elif alpha == "refuse":
            raise ImageError(f"{source}: has transparent pixels; flatten it first or choose an alpha "
                             "policy (--alpha=white composites on white, --alpha=drop ignores alpha)")
        elif alpha == "white":
            arr = arr * a + (1.0 - a)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def _crop_square(img: Image.Image, crop: str, source) -> Image.Image:
    w, h = img.size
    if w == h:
        return img
    if crop == "center":
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        return img.crop((left, top, left + s, top + s))
    raise ImageError(f"{source}: image is {w}x{h}, not square; crop it first or pass --crop=center")


def _resize(img: Image.Image, resolution: int) -> np.ndarray:
    """Lanczos resize -> float64 [R, R, C] in [0, 1]; 16-bit greyscale is resized as floats, so it keeps
    its precision."""
    size = (resolution, resolution)
    if img.mode.startswith("I"):
        grey = Image.fromarray(_to_float_array(img)[..., 0].astype(np.float32))  # mode "F"
        return np.clip(np.asarray(grey.resize(size, Image.Resampling.LANCZOS), np.float64), 0, 1)[..., None]
    if img.mode not in ("L", "LA", "RGB", "RGBA", "F"):  # F: refused by _to_float_array
        img = img.convert("RGBA" if img.mode == "P" and "transparency" in img.info else "RGB")
    return _to_float_array(img.resize(size, Image.Resampling.LANCZOS))


def load_image(path, resolution: int | None = None, *, crop="none", alpha="refuse", upscale=False,
               data: bytes | None = None) -> np.ndarray:
    """Read an image file -> float32 [H, W, 3] in [-1, 1], resized to `resolution` if given (see the
    module docstring for what is converted, reported or refused). `data`: the file's bytes, already
    read (`path` then only names it)."""
    if crop not in CROPS:
        raise ImageError(f"crop must be one of {CROPS}, got {crop!r}")
    img = _open(path, data)
    w, h = img.size
    img = _crop_square(img, crop, path)
    if resolution is None or img.size == (resolution, resolution):
        arr = _to_float_array(img)
    else:
        side = img.size[0]
        if side * MIN_SCALE < resolution and not upscale:
            raise ImageError(f"{path}: image is {w}x{h}, under a quarter of the generator's {resolution} px; "
                             f"enlarging it would invent the detail to reconstruct (pass --upscale to do it "
                             f"anyway)")
        cropped = f" (centre {side}x{side})" if (w, h) != img.size else ""
        log.info(f"resized {path} from {w}x{h}{cropped} to {resolution}x{resolution}")
        arr = _resize(img, resolution)
    rgb = image_to_rgb(arr, alpha=alpha, source=path)
    return (rgb * 2.0 - 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How a photo file becomes a target (the drivers' `reading=`): crop ("none": a non-square image is
    refused; "center": its centre square), alpha (a transparent image: "refuse", "drop" the channel, or
    composite on "white"), upscale (accept images under a quarter of the resolution)."""
    crop: str = "none"
    alpha: str = "refuse"
    upscale: bool = False

    def target(self, image, resolution: int) -> np.ndarray:
        return as_target_image(image, resolution, crop=self.crop, alpha=self.alpha, upscale=self.upscale)


def as_target_image(image, resolution: int, *, crop="none", alpha="refuse", upscale=False) -> np.ndarray:
    """A path or an array -> float32 [H, W, 3] in [-1, 1] at `resolution`.

    Arrays: uint8 HWC (0..255) or float HWC in [-1, 1]; a leading batch axis of 1 is accepted.
    Arrays are never resized silently: their size must equal the generator's resolution."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, resolution, crop=crop, alpha=alpha, upscale=upscale)
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ImageError(f"image array must be [H, W, C] with C in 1..4, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError("image array contains NaN or infinite values")
        if arr.min() < -1.001 or arr.max() > 1.001:
            raise ImageError(f"float image arrays must lie in [-1, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = (arr.astype(np.float64) + 1.0) / 2.0
    else:
        raise ImageError(f"image array dtype must be uint8 or float, got {arr.dtype}")
    if arr.shape[:2] != (resolution, resolution):
        raise ImageError(f"image array is {arr.shape[1]}x{arr.shape[0]}, the generator makes "
                         f"{resolution}x{resolution}; resize it first (or pass a file path)")
    return (image_to_rgb(np.clip(arr, 0, 1), alpha=alpha) * 2.0 - 1.0).astype(np.float32)


def load_mask(path, resolution: int) -> np.ndarray:
    """A greyscale mask file -> float32 [H, W] in [0, 1]. Its size must match exactly (a mask
    resized behind the user's back would move region borders)."""
    img = _open(path)
    if img.size != (resolution, resolution):
        raise ImageError(f"{path}: mask is {img.size[0]}x{img.size[1]}, expected {resolution}x{resolution}")
    arr = _to_float_array(img)
    if arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # masks ignore alpha
    return arr.mean(axis=-1).astype(np.float32)


def load_label_map(path, resolution: int) -> np.ndarray:
    """A label-map PNG (palette or greyscale indices 0..n-1) -> int32 [H, W]."""
    img = _open(path)
    if img.size != (resolution, resolution):
        raise ImageError(f"{path}: label map is {img.size[0]}x{img.size[1]}, expected {resolution}x{resolution}")
    if img.mode not in ("P", "L", "I", "I;16"):
        raise ImageError(f"{path}: a label map must be a palette or greyscale image of segment indices, "
                         f"got mode {img.mode}")
    return np.asarray(img).astype(np.int32)


def to_uint8(image) -> np.ndarray:
    """[-1, 1] float -> uint8, rounding like NVIDIA's projector ((x + 1) * 127.5)."""
    return np.clip(np.round((np.asarray(image, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_png(path, image_uint8: np.ndarray, *, overwrite: bool = False) -> None:
    """Write a PNG atomically; an existing file is replaced only with overwrite=True."""
    with atomic_path(Path(path), overwrite=overwrite) as tmp:
        Image.fromarray(image_uint8).save(tmp, format="PNG")
