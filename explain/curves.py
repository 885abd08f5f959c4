"""Perturbation curves: blank or restore a map's hottest pixels and read the class probability.

Two curves, kept apart on purpose (ROAD, Rong et al. 2022; Tomsett et al. 2020): evidence that chose a map
cannot also judge it.

- **The choice's curve** (``choice_scores``): deletion to the data set's mean (0 after normalisation) at
  ``CHOICE_FRACTIONS``. The "chosen" method (``explain.choice``) picks, per image, the candidate whose
  hottest pixels cost the most here.
- **The verdict's curves** (``verdict_curves``): the same pixels replaced by a *blurred* copy of the image
  (deletion), and the hottest pixels pasted into the blurred copy (insertion, RISE's other curve), at
  ``VERDICT_FRACTIONS``. A blurred infill keeps the image's colours and coarse shape, so it also leaks less of
  the mask's outline than a flat colour does (ROAD's point). ``explain.verdict`` reads only these.

Every ordering is a B x M x H x W stack of maps whose hottest pixels go first; one batched forward pass
measures them all, under the model's own lock (``explain.common.model_lock``).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .common import model_lock

CHOICE_FRACTIONS = (0.05, 0.15, 0.3, 0.5)  # of the pixels blanked to the mean, in the map's order
VERDICT_FRACTIONS = (0.15, 0.4)            # of the pixels deleted (to the blur) and inserted (into the blur)
INFILL_BLUR_SIGMA = 4.0                    # pixels at 32 x 32: objects gone, colours and layout kept


def top_pixels(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean masks (same shape as ``maps``, ... x H x W) of each map's hottest ``fraction`` of pixels."""
    *lead, height, width = maps.shape
    flat = maps.reshape(-1, height * width)
    k = max(1, round(fraction * height * width))
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True).view(
        *lead, height, width)


def phase_randomised(maps: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` random maps per map (B x count x H x W) with the map's Fourier amplitudes and random phases:
    as smooth as the map, unrelated to the image (the surrogate data of Theiler et al., 1992). Seeded; the
    phases come from real white noise, so the result is real."""
    batch, height, width = maps.shape
    noise = torch.randn(batch, count, height, width, generator=torch.Generator().manual_seed(seed))
    amplitude = torch.fft.fft2(maps - maps.mean((1, 2), keepdim=True)).abs()[:, None]
    phases = torch.fft.fft2(noise)
    return torch.fft.ifft2(amplitude * phases / phases.abs().clamp_min(1e-12)).real


def centre_prior(height: int, width: int) -> torch.Tensor:
    """H x W, hottest at the centre and falling with the distance from it: its top pixels form a disc."""
    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    return -(ys[:, None] ** 2 + xs[None] ** 2)


def blurred(x: torch.Tensor, sigma: float = INFILL_BLUR_SIGMA) -> torch.Tensor:
    """A Gaussian blur of a B x 3 x H x W batch, edges reflected: the verdict's infill."""
    radius = int(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    padded = F.pad(x, (radius,) * 4, mode="reflect" if radius < min(x.shape[-2:]) else "replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def _probabilities(model, images: torch.Tensor) -> torch.Tensor:
    with model_lock(model), torch.inference_mode():  # a CAM's hooks, registered by another thread, must not see this
        return torch.softmax(model(images).float(), 1)


def _target_probability(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """probs: B x ... x K; targets: B -> B x ...: each image's target class probability."""
    index = targets.view(-1, *([1] * (probs.dim() - 1))).expand(*probs.shape[:-1], 1)
    return probs.gather(-1, index)[..., 0]


def _masks(orderings: torch.Tensor, fractions) -> torch.Tensor:
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must lie between 0 and 1, got {fractions}")
    return torch.stack([top_pixels(orderings, f) for f in fractions], 2)  # B x M x F x H x W


def as_targets(targets, probs: torch.Tensor) -> torch.Tensor:
    """``targets`` (one class per image, or None for each image's most probable class) as a long tensor."""
    if targets is None:
        return probs.argmax(1)
    return torch.as_tensor(np.asarray(targets), device=probs.device).long().view(len(probs))


def choice_scores(model, x: torch.Tensor, candidate_maps, targets, fractions=CHOICE_FRACTIONS) -> np.ndarray:
    """B x C: each of C candidate maps' mean probability drop when its hottest ``fractions`` of pixels are
    blanked to the mean (0). The per-image choice's evidence, and nothing else's. One forward pass."""
    maps = torch.as_tensor(np.asarray(candidate_maps, dtype=np.float32))  # B x C x H x W
    batch, count = maps.shape[:2]
    masks = _masks(maps, fractions)[:, :, :, None].to(x.device)            # B x C x F x 1 x H x W
    variants = x[:, None, None].masked_fill(masks, 0.0).flatten(0, 2)
    probs = _probabilities(model, torch.cat([x, variants]))
    targets = as_targets(targets, probs[:batch])
    before = _target_probability(probs[:batch], targets)                   # B
    after = _target_probability(probs[batch:].view(batch, count * len(fractions), -1), targets)
    return (before[:, None] - after).view(batch, count, len(fractions)).mean(2).cpu().numpy()


def verdict_curves(model, x: torch.Tensor, orderings: torch.Tensor, targets=None,
                   fractions=VERDICT_FRACTIONS) -> dict[str, np.ndarray]:
    """For each of M orderings per image (B x M x H x W): "deletion" (B x M x F), the target's probability drop
    when its hottest ``fractions`` are replaced by the blurred image, and "insertion" (B x M x F), the rise over
    the blurred image when they are pasted into it. Also "target", "probability" (on ``x``) and
    "blurred_probability". One forward pass."""
    batch, count = orderings.shape[:2]
    masks = _masks(orderings, fractions)[:, :, :, None].to(x.device)       # B x M x F x 1 x H x W
    soft = blurred(x)
    sharp, smooth = x[:, None, None], soft[:, None, None]
    deleted = torch.where(masks, smooth, sharp).flatten(0, 2)
    inserted = torch.where(masks, sharp, smooth).flatten(0, 2)
    probs = _probabilities(model, torch.cat([x, soft, deleted, inserted]))
    targets = as_targets(targets, probs[:batch])
    before = _target_probability(probs[:batch], targets)
    floor = _target_probability(probs[batch:2 * batch], targets)
    rest = _target_probability(probs[2 * batch:].view(2, batch, count, len(fractions), -1).transpose(0, 1), targets)
    return {"deletion": (before[:, None, None] - rest[:, 0]).cpu().numpy(),
            "insertion": (rest[:, 1] - floor[:, None, None]).cpu().numpy(),
            "target": targets.cpu().numpy(), "probability": before.cpu().numpy(),
            "blurred_probability": floor.cpu().numpy()}
