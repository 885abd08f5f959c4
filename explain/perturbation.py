"""Attributions computed on the input rather than read from a layer: Captum's integrated gradients, input x
gradient and occlusion, and RISE.

Each function takes (model, x, targets) with ``targets`` one checked class index per image or None (each
image's predicted class) and returns (B x H x W float32 maps in [0, 1], B x K class probabilities of ``x``),
like ``explain.occlusion.occlusion_batch``. Blanking means 0 after normalisation (the data set's mean), as
the per-image choice's curve blanks (``explain.curves.choice_scores``).

- "integrated-gradients" (Sundararajan et al., 2017; Captum's ``IntegratedGradients``) from the blank image
  to the image: by completeness its pixel attributions add up to the probability lost when the whole image
  is blanked, so it ranks pixels by what blanking them costs. Summed over colour channels, then blurred
  (``BLUR_SIGMA``): the curves blank regions, and single pixels' gradients are speckle.
- "occlusion-fine": Captum's ``Occlusion`` with 8-pixel windows every 4 pixels (49 windows at 32 px), finer
  than ``explain.occlusion``'s 16 windows of 14 pixels.
- "rise" (Petsiuk et al., 2018): the mean probability over random smooth masks that keep each pixel. Neither
  Captum nor pytorch-grad-cam has it, hence the few lines here.
- "input-x-gradient" (Captum's ``InputXGradient``): the first-order estimate of what blanking each pixel costs,
  one backward pass; blurred like integrated gradients.

The per-image choice among these and the layer CAMs is ``explain.choice``.
"""
from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .common import unit_range

BLUR_SIGMA = 1.5         # pixels, at 32 x 32
IG_STEPS = 8             # Riemann midpoints from the blank image to the image
FINE_WINDOW, FINE_STRIDE = 8, 4
RISE_MASKS, RISE_CELLS, RISE_KEEP = 64, 4, 0.5


def predicted(model, x: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(x).float(), 1)
    classes = probs.argmax(1) if targets is None else torch.as_tensor(list(targets), device=x.device)
    return probs, classes


def _probability(model):
    """The class probabilities of ``model``, as Captum's forward function.

    The model is given a view of Captum's input, never the input itself. Captum differentiates with
    ``torch.autograd.grad`` with respect to that input, a leaf, and torch refuses a multi-grad hook on such a
    leaf ("A leaf node was passed to _will_engine_execute_node ...", pytorch issue 131753). ``FlopCounterMode``
    (``architectures.measure.count_macs``, the zoo table's MACs) puts one on every module's input while it
    counts, through module hooks global to the process: on the models of every thread. The view's gradient is
    the input's, so the maps are unchanged (tests/test_concurrency.py).
    """
    return lambda z: torch.softmax(model(z.view_as(z)).float(), 1)


def smooth_unit(maps: torch.Tensor, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """B x H x W attributions blurred by ``sigma`` and scaled to [0, 1] (order kept; a flat map stays 0)."""
    from scipy.ndimage import gaussian_filter  # a dependency of pytorch-grad-cam, imported on first use

    return unit_range(gaussian_filter(maps.detach().float().cpu().numpy(), (0, sigma, sigma), mode="nearest"))


@cache
def _captum():
    import captum.attr  # imported on first use: it is not needed to start the app
    return captum.attr


def _needs_gradients(x: torch.Tensor) -> torch.Tensor:
    """A copy of the input that says it needs gradients, as Captum's gradient methods take it."""
    return x.detach().clone().requires_grad_(True)


def integrated_gradients(model, x, classes) -> torch.Tensor:
    """B x H x W: Captum's integrated gradients of the class probability, summed over colour channels."""
    method = _captum().IntegratedGradients(_probability(model))
    with torch.enable_grad():
        return method.attribute(_needs_gradients(x), baselines=0.0, target=classes, n_steps=IG_STEPS,
                                method="riemann_middle", internal_batch_size=max(IG_STEPS, 64)).sum(1)


def input_x_gradient(model, x, classes) -> torch.Tensor:
    """B x H x W: Captum's input x gradient of the class probability, summed over colour channels."""
    with torch.enable_grad():
        return _captum().InputXGradient(_probability(model)).attribute(_needs_gradients(x), target=classes).sum(1)


def integrated_gradients_batch(model, x, targets=None):
    probs, classes = predicted(model, x, targets)
    return smooth_unit(integrated_gradients(model, x, classes)), probs.cpu().numpy()


def input_x_gradient_batch(model, x, targets=None):
    probs, classes = predicted(model, x, targets)
    return smooth_unit(input_x_gradient(model, x, classes)), probs.cpu().numpy()


def occlusion_fine_batch(model, x, targets=None):
    probs, classes = predicted(model, x, targets)
    with torch.no_grad():
        attributions = _captum().Occlusion(_probability(model)).attribute(
            x, sliding_window_shapes=(3, FINE_WINDOW, FINE_WINDOW), strides=(3, FINE_STRIDE, FINE_STRIDE),
            baselines=0.0, target=classes, perturbations_per_eval=64)
    return smooth_unit(attributions.sum(1)), probs.cpu().numpy()


@lru_cache(maxsize=8)
def rise_masks(height: int, width: int) -> torch.Tensor:
    """RISE_MASKS x H x W soft masks, seeded: random RISE_CELLS x RISE_CELLS grids keeping each cell with
    probability RISE_KEEP, upsampled bilinearly and shifted by a random fraction of a cell."""
    generator = torch.Generator().manual_seed(0)
    cell_y, cell_x = -(-height // RISE_CELLS), -(-width // RISE_CELLS)
    grids = (torch.rand(RISE_MASKS, 1, RISE_CELLS + 1, RISE_CELLS + 1, generator=generator) < RISE_KEEP).float()
    up = F.interpolate(grids, size=((RISE_CELLS + 1) * cell_y, (RISE_CELLS + 1) * cell_x), mode="bilinear",
                       align_corners=False)[:, 0]
    shifts = torch.stack([torch.randint(0, cell_y, (RISE_MASKS,), generator=generator),
                          torch.randint(0, cell_x, (RISE_MASKS,), generator=generator)], 1)
    return torch.stack([up[i, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(shifts.tolist())])


def rise_batch(model, x, targets=None):
    probs, classes = predicted(model, x, targets)
    masks = rise_masks(x.shape[-2], x.shape[-1]).to(x.device)
    maps = []
    with torch.no_grad():
        for image, target in zip(x, classes):
            kept = torch.softmax(model(image[None] * masks[:, None]).float(), 1)[:, target]
            maps.append((kept[:, None, None] * masks).sum(0) / masks.sum(0).clamp_min(1e-6))
    return smooth_unit(torch.stack(maps)), probs.cpu().numpy()
