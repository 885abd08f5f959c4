"""Images to model inputs, in one place for training, serving and explaining.

decode (``load_image``) -> square RGB at the checkpoint's size (``to_square_rgb``, ``model_view``) ->
normalise (``normalize``, ``to_tensor``) -> the test-time augmentation views (``tta_views``, ``served_probs``).
Training decodes its data set with ``to_square_rgb`` too, so a served image is prepared exactly as the
training images were.

An upload is untrusted input. ``load_image`` reads at most ``max_bytes``, lets Pillow identify only the
formats a photo arrives in (never EPS, which would run Ghostscript), refuses images whose header
announces more than ``max_pixels`` pixels before any pixel is decoded (the decompression-bomb check),
applies the EXIF orientation, keeps the first frame of an animation and turns every colour mode into
8-bit RGB. Whatever goes wrong becomes one ``ImageDecodeError`` with a sentence a user can act on.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # 10 MB: a phone photo is 2-6 MB; the app's upload limit is the same
MAX_PIXELS = 50_000_000              # 50 megapixels: a 6000 x 4500 photo (27 MP) passes, a bomb does not
MAX_SIDE = 1024                      # longest side kept after decoding; the model sees 32 x 32 anyway
# Formats a photo or a screenshot arrives in. Pillow would otherwise try every plugin it has.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM", "AVIF")
FORMAT_NAMES = "JPEG, PNG, GIF, WebP, BMP or TIFF"
# CIFAR-10's classes in its label order: the app's examples and the tests' small data sets use it. A checkpoint's
# own classes travel in its config.json ("class_names"), so a model trained on another folder needs none of this.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _formats() -> tuple[str, ...]:
    """The allowed formats this Pillow build can open (AVIF and MPO plugins are optional)."""
    Image.init()
    return tuple(name for name in ALLOWED_FORMATS if name in Image.OPEN)


class ImageDecodeError(ValueError):
    """The upload is not an image this app can safely read; the message says why, for the user."""


def _read_bytes(source: str | os.PathLike | bytes | bytearray, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageDecodeError("the upload could not be found on the server; please upload it again")
        if path.stat().st_size > max_bytes:
            raise ImageDecodeError(f"the file is {path.stat().st_size / 2**20:.1f} MB; the limit is "
                                   f"{max_bytes / 2**20:.0f} MB")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    if not data:
        raise ImageDecodeError("the file is empty")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"the file is larger than the {max_bytes / 2**20:.0f} MB limit")
    return data


def _scale_to_uint8(array: np.ndarray, bits: int | None) -> np.ndarray:
    """Integer images of ``bits`` bits, or float images, to 0..255 (one channel or several)."""
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    if bits is not None:
        array = array / (2 ** bits - 1)
    else:
        low, high = float(array.min()), float(array.max())
        if not (low >= 0.0 and high <= 1.0):  # floats outside [0, 1]: stretch to the range they use
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is composited over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), 16)).convert("RGB")
    if mode == "I":  # 32-bit integers: most often 16-bit data that Pillow widened
        array = np.asarray(image)
        low, high = int(array.min(initial=0)), int(array.max(initial=0))
        bits = None if low < 0 or high >= 2 ** 16 else 8 if high <= 255 else 16
        return Image.fromarray(_scale_to_uint8(array, bits)).convert("RGB")
    if mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image), None)).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageDecodeError(f"images in colour mode {mode!r} are not supported ({error})") from None


def load_image(source: str | os.PathLike | bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               max_side: int = MAX_SIDE) -> Image.Image:
    """Decode an upload (a path or its bytes) into an RGB image whose longest side is at most ``max_side``.

    Raises ``ImageDecodeError`` for anything that is not a safely decodable image.
    """
    data = _read_bytes(source, max_bytes)
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; our own limit below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_formats())
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"the image is too large to decode safely (over {max_pixels / 1e6:.0f} megapixels; "
                               "it may be a decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"the file is not an image this app can read (it takes {FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageDecodeError(f"the image header is corrupt ({error})") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"the image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise ImageDecodeError(f"the image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels); "
                               f"the limit is {max_pixels / 1e6:.0f} megapixels (it may be a decompression bomb)")
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # the first frame of an animation
        if image.format in ("JPEG", "MPO"):
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves max_side pixels.
            image.draft(image.mode, (max_side, max_side))
        image.load()
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a malformed EXIF block must not lose the picture; it stays as stored
            pass
        image = to_rgb(image)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:
        raise ImageDecodeError("the image is too large to decode safely (it may be a decompression bomb)") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, IndexError, TypeError) as error:
        raise ImageDecodeError(f"the file is truncated or corrupt and cannot be decoded ({error})") from None
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def to_square_rgb(image: Image.Image, size: int) -> np.ndarray:
    """RGB, shorter side resized to ``size``, centre-cropped: H x W x 3 uint8."""
    image = image.convert("RGB")
    if image.size != (size, size):
        scale = size / min(image.size)
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        image = image.resize((width, height), Image.Resampling.BICUBIC)
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def model_view(image: Image.Image, config: dict) -> np.ndarray:
    """What the model sees, before normalisation: ``image_size`` square RGB, uint8 H x W x 3."""
    return to_square_rgb(image, int(config.get("image_size", 32)))


def to_tensor(image: Image.Image, config: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """The normalised 1 x 3 x S x S float tensor for a checkpoint, on ``device``."""
    pixels = torch.from_numpy(model_view(image, config).copy()).permute(2, 0, 1).unsqueeze(0).to(device)
    mean = torch.tensor(config["mean"], dtype=torch.float32, device=device)
    std = torch.tensor(config["std"], dtype=torch.float32, device=device)
    return normalize(pixels, mean, std)


def normalize(images_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 N x 3 x H x W to normalised float32: (x / 255 - mean) / std."""
    return (images_uint8.float().div_(255) - mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))


def translated(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved ``dy`` pixels down and ``dx`` right, the uncovered edge filled by reflection (as training's
    random translation pads)."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return x
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad,) * 4, mode="reflect")
    return padded[..., pad - dy:pad - dy + height, pad - dx:pad - dx + width]


# The test-time augmentation the app serves and ``val_accuracy_tta`` measures (airbench's): the image and
# the image moved one pixel up-left and one down-right, each also mirrored; (dy, dx, weight), so the
# unmoved pair weighs as much as the two moved pairs together. Every recipe trains with flips and
# translations, so these views are images of the kind the model learned from.
TTA_VIEWS = ((0, 0, 0.5), (-1, -1, 0.25), (1, 1, 0.25))
TTA_COPIES = 2 * len(TTA_VIEWS)  # images per input image in ``served_probs``' forward pass


def tta_views(x: torch.Tensor) -> torch.Tensor:
    """The ``TTA_COPIES`` views of a batch, view-major: (6 B) x 3 x H x W, each view then its mirror image."""
    views = [translated(x, dy, dx) for dy, dx, _ in TTA_VIEWS]
    return torch.cat([v for view in views for v in (view, view.flip(3))])


def served_probs(model, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities averaged over ``TTA_VIEWS`` and their mirror images, weighted: what the app
    serves. One forward pass over six times the batch; float32, on ``x``'s device. ``temperature`` divides
    the logits first (a checkpoint's fitted temperature, ``robustness.calibration``)."""
    return views_to_probs(model(tta_views(x)), len(x), temperature)


def views_to_probs(logits: torch.Tensor, n: int, temperature: float = 1.0) -> torch.Tensor:
    """The served probabilities from the logits of ``tta_views`` of ``n`` images, at ``temperature``."""
    probs = torch.softmax(logits.float() / temperature, -1)
    probs = probs.view(len(TTA_VIEWS), 2, n, -1).mean(1)
    weights = torch.tensor([weight for *_, weight in TTA_VIEWS], device=probs.device)
    return (probs * weights[:, None, None]).sum(0)
