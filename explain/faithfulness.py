"""Is the explanation faithful? Blank what it points at and see whether the model's confidence falls.

The deletion test of Petsiuk et al. (RISE, 2018), at one fraction, against two trivial explanations:
the central square ("the object is in the middle") and squares at random positions, both of the same
area as the blanked CAM pixels; and against the same method's map from random weights
(``randomised_twin``), whose drop is what the map's shape alone (scattered edge pixels, say) would cost
any model. Scattered random pixels are not used as the baseline: they destroy texture everywhere and
would flatter no explanation. Blanking sets pixels to the dataset mean, i.e. 0
after normalisation. The library's metrics (ROAD, CamMultImageConfidenceChange) perturb differently
(soft masks, noisy imputation) and have no such baselines, hence this small module.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from architectures import create_model
from .cam import HOOK_LOCK, check_one_image


def _squares(height: int, width: int, side: int, tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
    """Boolean masks, tops.shape x H x W, of side x side squares with the given top-left corners."""
    ys = torch.arange(height, device=tops.device).view(-1, 1)
    xs = torch.arange(width, device=tops.device).view(1, -1)
    tops, lefts = tops[..., None, None], lefts[..., None, None]
    return (ys >= tops) & (ys < tops + side) & (xs >= lefts) & (xs < lefts + side)


@torch.no_grad()
def deletion_drops(model, x: torch.Tensor, heatmaps, targets=None, fraction: float = 0.25, n_random: int = 8,
                   seed: int = 0, random_weights_heatmaps=None) -> dict[str, np.ndarray]:
    """Per image of a batch: how much the target's probability drops when pixels are blanked.

    Blanked: the top ``fraction`` of pixels by heatmap ("cam_drop"), the central square of that area
    ("centre_drop"), ``n_random`` squares of that area at seeded random positions (their mean drop,
    "random_square_drop"). ``targets=None`` means each image's predicted class. All variants go through
    the model in one batched forward pass. Also returns "target" and "probability" (before blanking).
    ``random_weights_heatmaps`` (the same method's maps of the same images and classes from
    ``randomised_twin(model)``) adds "random_weights_drop", the drop when their top ``fraction`` is blanked
    instead, in the same forward pass.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    batch, _, height, width = x.shape
    k = round(fraction * height * width)
    side = min(height, width, round(math.sqrt(k)))

    def top_pixels(maps) -> torch.Tensor:
        """batch x 1 x H x W: each map's k hottest pixels. Built on the CPU, where the maps are."""
        maps = torch.as_tensor(np.asarray(maps, dtype=np.float32)).reshape(batch, -1)
        if maps.shape[1] != height * width:
            raise ValueError(f"heatmaps must be {batch} x {height} x {width} like the images")
        return torch.zeros(batch, height * width, dtype=torch.bool).scatter_(
            1, maps.topk(k, dim=1).indices, True).view(batch, 1, height, width)

    centre = _squares(height, width, side, torch.tensor((height - side) // 2), torch.tensor((width - side) // 2))
    generator = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, height - side + 1, (batch, n_random), generator=generator)
    lefts = torch.randint(0, width - side + 1, (batch, n_random), generator=generator)
    random_squares = _squares(height, width, side, tops, lefts)

    # Per image: original, CAM-blanked, centre-blanked, the random squares, then the random-weights map's.
    references = [] if random_weights_heatmaps is None else [top_pixels(random_weights_heatmaps)]
    masks = torch.cat([torch.zeros(batch, 1, height, width, dtype=torch.bool),
                       top_pixels(heatmaps),
                       centre.expand(batch, 1, height, width),
                       random_squares, *references], 1).to(x.device)
    variants = x[:, None].masked_fill(masks[:, :, None], 0.0).flatten(0, 1)
    with HOOK_LOCK:  # a CAM's hooks, registered by another thread, must not see this forward pass
        probs = torch.softmax(model(variants).float(), 1).view(batch, masks.shape[1], -1)
    if targets is None:
        targets = probs[:, 0].argmax(1)
    targets = torch.as_tensor(targets, device=probs.device).long().view(batch, 1, 1)
    p = probs.gather(2, targets.expand(batch, masks.shape[1], 1))[:, :, 0]
    drops = (p[:, :1] - p).cpu().numpy()
    result = {
        "cam_drop": drops[:, 1],
        "centre_drop": drops[:, 2],
        "random_square_drop": drops[:, 3:3 + n_random].mean(1),
        "target": targets.view(-1).cpu().numpy(),
        "probability": p[:, 0].cpu().numpy(),
    }
    if references:
        result["random_weights_drop"] = drops[:, -1]
    return result


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
                 fraction: float = 0.25, random_weights_heatmap: np.ndarray | None = None, n_random: int = 8) -> dict:
    """One image's deletion figures, as plain floats for the app.

    Keys: "cam_drop", "centre_drop", "random_square_drop" (probability drops of the target class, the
    predicted one when ``target`` is None), "ratio_vs_random" (cam_drop / random_square_drop; None where
    blanking random squares did not lower the probability), "target", "probability"; with
    ``random_weights_heatmap`` (the same method's map of the same class from ``randomised_twin(model)``)
    also "random_weights_drop", the drop when that map's top pixels are blanked instead. ``n_random``: how
    many random squares the baseline averages (the app shows four, to keep within its latency goal).
    """
    check_one_image(x)
    reference = None if random_weights_heatmap is None else np.asarray(random_weights_heatmap)[None]
    drops = deletion_drops(model, x, np.asarray(heatmap)[None], None if target is None else [target], fraction,
                           n_random, random_weights_heatmaps=reference)
    result = {key: float(value[0]) for key, value in drops.items()}
    result["target"] = int(result["target"])
    random_drop = result["random_square_drop"]
    result["ratio_vs_random"] = result["cam_drop"] / random_drop if random_drop > 0 else None
    return result
