"""Is the explanation faithful? Blank what it points at, more and more of it, and see whether the model's
confidence falls faster than when other pixels are blanked.

The deletion curve of Petsiuk et al. (RISE, 2018): the target's probability drop when the map's hottest
5%, 15%, 30% and 50% of pixels are blanked (``DELETION_FRACTIONS``), averaged into one score. The same curve
is measured, in the same batched forward pass, for three references that know nothing about the model:

- **random maps of the same smoothness**: phase-randomised copies of the map itself (its Fourier amplitudes
  kept, its phases drawn at random: the surrogate-data method of Theiler et al., 1992), so a blobby map is
  compared with random blobs of its own size and a speckled one with random speckle;
- **the centre prior**: pixels ranked by their distance to the centre ("the object is in the middle");
- **the random-weights map**: the same method's map from the same architecture with random weights
  (``randomised_twin``), whose drop is what the map's shape and the image's edges alone would cost.

Blanking sets pixels to the dataset mean, i.e. 0 after normalisation. ``explain.verdict.map_verdict`` turns
one image's curves into a verdict.
"""
from __future__ import annotations

import numpy as np
import torch

from architectures import create_model
from .cam import HOOK_LOCK, check_one_image

DELETION_FRACTIONS = (0.05, 0.15, 0.3, 0.5)  # of the pixels blanked, in the map's order
N_RANDOM_MAPS = 8                            # phase-randomised copies per map: their spread is the noise margin


def top_pixels(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean masks (same shape as ``maps``, ... x H x W) of each map's hottest ``fraction`` of pixels."""
    *lead, height, width = maps.shape
    flat = maps.reshape(-1, height * width)
    k = max(1, round(fraction * height * width))
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True).view(
        *lead, height, width)


def phase_randomised(maps: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` random maps per map (B x count x H x W) with the map's Fourier amplitudes and random phases:
    as smooth as the map, unrelated to the image. Seeded; the phases come from real white noise, so the
    result is real."""
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


@torch.no_grad()
def deletion_curves(model, x: torch.Tensor, heatmaps, targets=None, random_weights_heatmaps=None,
                    fractions=DELETION_FRACTIONS, n_random: int = N_RANDOM_MAPS, seed: int = 0) -> dict[str, np.ndarray]:
    """Per image of a batch, the target's probability drop at each of ``fractions`` (the last axis), when
    the pixels blanked are the hottest of: the map ("map", B x F), the centre prior ("centre", B x F),
    ``n_random`` phase-randomised copies of the map ("random", B x R x F) and, given
    ``random_weights_heatmaps`` (the same method's maps from ``randomised_twin(model)``), those maps
    ("random_weights", B x F). Also "target" and "probability" (before blanking). ``targets=None`` means
    each image's predicted class. One forward pass for everything; seeded by ``seed``.
    """
    batch, _, height, width = x.shape
    maps = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32))
    if maps.shape != (batch, height, width):
        raise ValueError(f"heatmaps must be {batch} x {height} x {width} like the images, got {tuple(maps.shape)}")
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must lie between 0 and 1, got {fractions}")
    orderings = [maps[:, None], centre_prior(height, width).expand(batch, 1, height, width)]
    if random_weights_heatmaps is not None:
        orderings.append(torch.as_tensor(np.asarray(random_weights_heatmaps, dtype=np.float32)).view(
            batch, 1, height, width))
    orderings.append(phase_randomised(maps, n_random, seed))
    orderings = torch.cat(orderings, 1)                                      # B x M x H x W
    masks = torch.stack([top_pixels(orderings, f) for f in fractions], 2)    # B x M x F x H x W
    variants = torch.cat([x, x[:, None, None].masked_fill(masks[:, :, :, None].to(x.device), 0.0).flatten(0, 2)])
    with HOOK_LOCK:  # a CAM's hooks, registered by another thread, must not see this forward pass
        probs = torch.softmax(model(variants).float(), 1)
    original, blanked = probs[:batch], probs[batch:].view(batch, orderings.shape[1], len(fractions), -1)
    if targets is None:
        targets = original.argmax(1)
    targets = torch.as_tensor(np.asarray(targets), device=probs.device).long().view(batch)
    before = original.gather(1, targets[:, None])[:, 0]
    after = blanked.gather(3, targets.view(batch, 1, 1, 1).expand(*blanked.shape[:3], 1))[..., 0]
    drops = (before[:, None, None] - after).cpu().numpy()
    result = {"map": drops[:, 0], "centre": drops[:, 1], "random": drops[:, -n_random:],
              "target": targets.cpu().numpy(), "probability": before.cpu().numpy()}
    if random_weights_heatmaps is not None:
        result["random_weights"] = drops[:, 2]
    return result


@torch.no_grad()
def deletion_scores(model, x: torch.Tensor, candidate_maps, targets, fractions=DELETION_FRACTIONS) -> np.ndarray:
    """B x C: each of C candidate maps' mean probability drop over ``fractions`` (the deletion curve's score,
    no baselines), for the per-image choice of ``explain.perturbation.chosen_batch``. One forward pass."""
    maps = torch.as_tensor(np.asarray(candidate_maps, dtype=np.float32))          # B x C x H x W
    batch, count = maps.shape[:2]
    masks = torch.stack([top_pixels(maps, f) for f in fractions], 2)              # B x C x F x H x W
    variants = torch.cat([x, x[:, None, None].masked_fill(masks[:, :, :, None].to(x.device), 0.0).flatten(0, 2)])
    with HOOK_LOCK:
        probs = torch.softmax(model(variants).float(), 1)
    targets = torch.as_tensor(np.asarray(targets), device=probs.device).long().view(batch)
    before = probs[:batch].gather(1, targets[:, None])                            # B x 1
    after = probs[batch:].view(batch, count * len(fractions), -1).gather(
        2, targets.view(batch, 1, 1).expand(batch, count * len(fractions), 1))[..., 0]
    return (before - after).view(batch, count, len(fractions)).mean(2).cpu().numpy()


def randomised(model):
    """The model with every parameter (and BatchNorm statistic) reset by PyTorch's default initialiser, seeded
    (0) without touching the caller's random state; returned in eval mode.

    Not the zoo's own initialisation: that zero-initialises residual branches and MLP-Mixer's head, so a
    fresh model's maps would be constant and could not show what a map owes to the learned weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return model.eval()


def randomised_twin(model):
    """A model of a loaded checkpoint's architecture and arguments with random weights (``randomised``), on
    the same device: the reference of the sanity check and of the deletion check's random-weights baseline."""
    config = model.config
    with torch.random.fork_rng(devices=[]):  # building it draws the zoo's own initialisation: not from the caller's stream
        twin = create_model(config["arch"], num_classes=len(config["class_names"]), **config.get("arch_args", {}))
    return randomised(twin).to(next(model.parameters()).device)


def faithfulness(model, x: torch.Tensor, heatmap: np.ndarray, target: int | None = None,
                 random_weights_heatmap: np.ndarray | None = None, n_random: int = N_RANDOM_MAPS) -> dict:
    """One image's deletion curves (``deletion_curves`` for a batch of one, its first axis dropped), the
    input of ``explain.verdict.map_verdict``."""
    check_one_image(x)
    reference = None if random_weights_heatmap is None else np.asarray(random_weights_heatmap)[None]
    curves = deletion_curves(model, x, np.asarray(heatmap)[None], None if target is None else [target],
                             reference, n_random=n_random)
    result = {key: value[0] for key, value in curves.items()}
    result["target"], result["probability"] = int(result["target"]), float(result["probability"])
    return result
