"""The "chosen" method: per image, whichever of ``CHOSEN_FROM`` has the best choice curve on the model that is
being explained (``explain.curves.choice_scores``: its hottest pixels blanked to the mean).

The candidates are Grad-CAM, occlusion, the two gradient attributions at two blurs (``-coarse``:
``COARSE_BLUR_SIGMA``, for objects larger than the fine blur's blobs), and products with Grad-CAM (where the
fine attribution and the coarse class map agree). No candidate wins on most images, and the best of them beats
plain Grad-CAM and the centre on curves the choice never sees (docs/experiments.md).

Taking the best of ten inflates the winner's score on the curve it was chosen by; so the verdict reads other
curves (``explain.curves.verdict_curves``) with thresholds that hold the false-pass rate of random maps put
through this same choice (``explain.verdict``, ``bench/faithfulness.py``).
"""
from __future__ import annotations

import numpy as np
import torch

from .curves import choice_scores
from .layer_cam import layer_cam_batch
from .occlusion import occlusion_batch
from .perturbation import input_x_gradient, integrated_gradients, predicted, smooth_unit

COARSE_BLUR_SIGMA = 3.0
CHOSEN_FROM = ("gradcam", "occlusion", "input-x-gradient", "input-x-gradient-coarse", "integrated-gradients",
               "integrated-gradients-coarse", "input-x-gradient x gradcam", "integrated-gradients x gradcam",
               "integrated-gradients-coarse x gradcam", "occlusion x gradcam")


def product_map(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two B x H x W maps' product, scaled so each map's hottest pixel is 1 (all 0 stays 0)."""
    product = first * second
    peak = product.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, product / np.maximum(peak, 1e-12), product).astype(np.float32)


def candidates(model, x: torch.Tensor, classes: list[int]) -> np.ndarray:
    """B x len(CHOSEN_FROM) x H x W: the candidate maps, products computed from the base maps."""
    base = {"gradcam": layer_cam_batch(model, x, classes, model.default_cam_layer, "GradCAM")[0],
            "occlusion": occlusion_batch(model, x, classes)[0]}
    targets = torch.as_tensor(classes, device=x.device)
    for name, attribute in (("input-x-gradient", input_x_gradient), ("integrated-gradients", integrated_gradients)):
        raw = attribute(model, x, targets)  # once, blurred twice
        base[name], base[name + "-coarse"] = smooth_unit(raw), smooth_unit(raw, COARSE_BLUR_SIGMA)
    for name in CHOSEN_FROM:
        if " x " in name:
            first, second = name.split(" x ")
            base[name] = product_map(base[first], base[second])
    return np.stack([base[name] for name in CHOSEN_FROM], 1)


def choose(model, x: torch.Tensor, candidate_maps, targets) -> np.ndarray:
    """For each image of ``x``, the index of the candidate (of ``candidate_maps``, B x C x H x W) that the app's
    per-image choice takes: the highest mean probability drop on the choice curve for that image's target."""
    return choice_scores(model, x, candidate_maps, targets).argmax(1)


def chosen_batch(model, x, targets=None, return_choice: bool = False):
    """Per image, the map of ``CHOSEN_FROM`` that ``choose`` takes: (B x H x W maps, B x K probabilities), and
    with ``return_choice`` also the chosen candidate's name per image."""
    probs, classes = predicted(model, x, targets)
    classes = classes.tolist()
    maps = candidates(model, x, classes)
    best = choose(model, x, maps, classes)
    chosen = maps[np.arange(len(x)), best]
    names = [CHOSEN_FROM[i] for i in best]
    return (chosen, probs.cpu().numpy(), names) if return_choice else (chosen, probs.cpu().numpy())
