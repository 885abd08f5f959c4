"""CIFAR-10-C corruptions (Hendrycks and Dietterich, ICLR 2019) at their five severities, on uint8 batches.

Twelve of the paper's fifteen, each with the parameters of its CIFAR-10-C script (``make_cifar_c.py``): the
noises, blurs, fog, brightness, contrast, elastic, pixelate and JPEG. Frost and snow are left out (frost
overlays photographs the paper ships; snow and motion blur need ImageMagick's motion blur through Wand).
torchvision.transforms.v2 does the Gaussian blur and the elastic field and Pillow the JPEG round trip (the
paper's own encoder; torchvision's JPEG codec is deprecated since 0.29 and gives the same pixels); the rest is
written here in torch because no maintained package has it with CIFAR's parameters (``imagecorruptions``
has ImageNet's, needs scikit-image and was last released in 2020). Every call is seeded: the same images,
corruption, severity and seed give the same pixels.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

SEVERITIES = (1, 2, 3, 4, 5)
# The CIFAR-10-C parameters, one entry per severity.
PARAMS = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],                  # noise sigma (image in 0..1)
    "shot_noise": [500, 250, 100, 75, 50],                              # photons per unit intensity
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],                    # share of values set to 0 or 1
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],   # disk radius, alias blur
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],  # sigma, delta, passes
    "zoom_blur": [1.06, 1.11, 1.16, 1.21, 1.26],                        # zooms 1, 1.01, ... below this
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],      # strength, fractal wibble decay
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],                          # added to HSV value
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],                            # factor towards the channel mean
    "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)],                           # alpha, sigma, affine; x image size
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],                          # downscale factor (box filter)
    "jpeg_compression": [80, 65, 58, 50, 40],                           # JPEG quality
}
CORRUPTIONS = tuple(PARAMS)
LABELS = {name: name.replace("_", " ").capitalize().replace("Jpeg", "JPEG") for name in CORRUPTIONS}
NONE = "none"


def check(corruption: str, severity) -> int:
    """The severity as an int; ValueError naming the choices for an unknown corruption or a severity not 1-5."""
    if corruption not in PARAMS:
        raise ValueError(f"unknown corruption {corruption!r}; choose {NONE!r} or one of {', '.join(CORRUPTIONS)}")
    try:
        level = int(severity)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"severity must be a whole number from 1 to 5, got {severity!r}") from None
    if level != severity and not (isinstance(severity, str) and str(level) == severity.strip()):
        raise ValueError(f"severity must be a whole number from 1 to 5, got {severity!r}")
    if level not in SEVERITIES:
        raise ValueError(f"severity must be from 1 to 5, got {level}")
    return level


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of float images, kernel truncated at 4 sigma as scikit-image's ``gaussian``."""
    if sigma <= 0:
        return x
    size = 2 * math.ceil(4 * sigma) + 1
    return TF.gaussian_blur(x, [size, size], [sigma, sigma])


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The defocus kernel: a disk of ``radius`` on a 17 x 17 grid, anti-aliased by a 3 x 3 Gaussian."""
    span = torch.arange(-8, 9, dtype=torch.float32)
    yy, xx = torch.meshgrid(span, span, indexing="ij")
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).float()
    disk = disk / disk.sum()
    return TF.gaussian_blur(disk[None, None], [3, 3], [alias_blur, alias_blur])[0, 0]


def _jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """One uint8 3 x H x W image saved as a JPEG of ``quality`` and decoded again, with Pillow (libjpeg-turbo)."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return torch.from_numpy(np.array(decoded.convert("RGB"))).permute(2, 0, 1)


def _plasma(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square fractal height map (the paper's fog), ``size`` a power of two, scaled to 0..1."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled(array):
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled(square)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        grid[0:size:step, half:size:step] = wibbled(centres + np.roll(centres, 1, axis=0)
                                                    + corners + np.roll(corners, -1, axis=1))
        grid[half:size:step, 0:size:step] = wibbled(centres + np.roll(centres, 1, axis=1)
                                                    + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def _zoomed(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The centre 1/``factor`` of each image scaled back to full size (bilinear): one step of zoom blur."""
    side = x.shape[-1]
    crop = int(math.ceil(side / factor))
    top = (side - crop) // 2
    grown = F.interpolate(x[..., top:top + crop, top:top + crop], scale_factor=factor, mode="bilinear",
                          align_corners=False)
    trim = (grown.shape[-1] - side) // 2
    return grown[..., trim:trim + side, trim:trim + side]


def _affine_grid(n: int, side: int, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Sampling grids of random affine maps that move three reference points up to ``shift`` pixels."""
    centre, third = side / 2, side / 3
    src = torch.tensor([[centre + third, centre + third], [centre + third, centre - third],
                        [centre - third, centre - third]])
    grids = []
    for _ in range(n):
        dst = src + (torch.rand(3, 2, generator=gen) * 2 - 1) * shift
        # Solve dst -> src (the inverse map, where each output pixel samples from) in pixel units.
        a = torch.cat([dst, torch.ones(3, 1)], 1)
        matrix = torch.linalg.solve(a, src).T  # 2 x 3
        to_norm = torch.tensor([[2 / side, 0, 1 / side - 1], [0, 2 / side, 1 / side - 1], [0, 0, 1]])
        full = torch.cat([matrix, torch.tensor([[0.0, 0.0, 1.0]])])
        theta = (to_norm @ full @ torch.linalg.inv(to_norm))[:2]
        grids.append(theta)
    return F.affine_grid(torch.stack(grids), [n, 3, side, side], align_corners=False)


def corrupt(images: torch.Tensor, corruption: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 N x 3 x H x W) under ``corruption`` at ``severity`` (1-5), as uint8 of the same shape.

    Seeded: the random parts (noise, shuffles, fields) come from a generator seeded with ``seed``.
    """
    level = check(corruption, severity)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"corrupt takes uint8 N x 3 x H x W images, got {images.dtype} {tuple(images.shape)}")
    c = PARAMS[corruption][level - 1]
    gen = torch.Generator().manual_seed(seed)
    x = images.float() / 255
    n, _, side, _ = x.shape
    if corruption == "gaussian_noise":
        out = x + torch.randn(x.shape, generator=gen) * c
    elif corruption == "shot_noise":
        out = torch.poisson(x * c, generator=gen) / c
    elif corruption == "impulse_noise":
        hit = torch.rand(x.shape, generator=gen) < c
        salt = torch.rand(x.shape, generator=gen) < 0.5
        out = torch.where(hit, salt.float(), x)
    elif corruption == "defocus_blur":
        kernel = _disk(*c).expand(3, 1, 17, 17)
        out = F.conv2d(F.pad(x, (8, 8, 8, 8), mode="reflect"), kernel, groups=3)
    elif corruption == "glass_blur":
        sigma, delta, passes = c
        blurred = (_gaussian(x, sigma) * 255).to(torch.uint8)
        rows = torch.arange(n)
        for _ in range(passes):
            for h in range(side - delta, delta, -1):
                for w in range(side - delta, delta, -1):
                    dy, dx = torch.randint(-delta, delta, (2, n), generator=gen)
                    hp, wp = h + dy, w + dx
                    here = blurred[rows, :, h, w].clone()
                    blurred[rows, :, h, w] = blurred[rows, :, hp, wp]
                    blurred[rows, :, hp, wp] = here
        out = _gaussian(blurred.float() / 255, sigma)
    elif corruption == "zoom_blur":
        factors = np.arange(1, c, 0.01)
        out = (x + sum(_zoomed(x, float(f)) for f in factors)) / (len(factors) + 1)
    elif corruption == "fog":
        strength, decay = c
        rng = np.random.default_rng(seed)
        size = 1 << max(side - 1, 1).bit_length()
        fog = torch.from_numpy(np.stack([_plasma(size, decay, rng)[:side, :side] for _ in range(n)])).float()
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        out = (x + strength * fog[:, None]) * peak / (peak + strength)
    elif corruption == "brightness":
        # Adding c to HSV's value (the channel maximum) keeps hue and saturation: every channel scales with it.
        value = x.amax(1, keepdim=True)
        new = (value + c).clamp(max=1)
        out = torch.where(value > 0, x * new / value.clamp(min=1e-12), new.expand_as(x))
    elif corruption == "contrast":
        mean = x.mean(dim=(2, 3), keepdim=True)
        out = (x - mean) * c + mean
    elif corruption == "elastic_transform":
        alpha, sigma, shift = (v * side for v in c)
        out = F.grid_sample(x, _affine_grid(n, side, shift, gen), mode="bilinear", padding_mode="reflection",
                            align_corners=False)
        if alpha > 0:
            field = torch.rand(n, 2, side, side, generator=gen) * 2 - 1
            field = _gaussian(field, sigma) * alpha  # pixels
            # torchvision's elastic_transform takes the displacement in normalised units, N x H x W x 2.
            displacement = (field * 2 / side).permute(0, 2, 3, 1)
            out = torch.stack([TF.elastic(img, displacement[i:i + 1]) for i, img in enumerate(out)])
    elif corruption == "pixelate":
        small = max(1, int(side * c))
        out = torch.stack([torch.from_numpy(np.array(
            Image.fromarray(img.permute(1, 2, 0).numpy()).resize((small, small), Image.Resampling.BOX)
            .resize((side, side), Image.Resampling.BOX))).permute(2, 0, 1) for img in images]).float() / 255
    else:  # jpeg_compression
        return torch.stack([_jpeg_round_trip(img, c) for img in images])
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)


def corrupt_image(image: Image.Image, corruption: str, severity: int, seed: int = 0) -> Image.Image:
    """One RGB picture under a corruption (the app's "corrupt this image"); ``none`` returns it unchanged."""
    if corruption in (None, "", NONE):
        return image
    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)[None]
    return Image.fromarray(corrupt(pixels, corruption, severity, seed)[0].permute(1, 2, 0).numpy())
