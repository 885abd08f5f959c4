"""Is the explanation faithful? The evidence the verdict (``explain.verdict``) reads, measured on curves that no
step making or choosing a map ever sees (``explain.curves.verdict_curves``: blurred-infill deletion and
insertion).

The map's curves are measured beside three references that know nothing about the model, in one batched
forward pass:

- **random maps of the same smoothness**: phase-randomised copies of the map (its Fourier amplitudes kept,
  its phases drawn at random), so a blobby map is compared with random blobs of its own size;
- **the centre prior**: pixels ranked by their distance to the centre ("the object is in the middle");
- **the random-weights map**: the same method's map from the same architecture with random weights
  (``randomised_twin``), whose score is what the map's shape and the image's edges alone would earn.

Each ordering's curve is its deletion drops followed by its insertion gains (``CURVE_PARTS``), so the mean of
a curve is the score the verdict and the bars use.
"""
from __future__ import annotations

import numpy as np
import torch

from architectures import create_model

from .common import check_one_image
from .curves import VERDICT_FRACTIONS, centre_prior, phase_randomised, verdict_curves

N_RANDOM_MAPS = 8                   # phase-randomised copies per map: their spread is the verdict's noise
CURVE_PARTS = ("deletion", "insertion")


def evidence(model, x: torch.Tensor, heatmaps, targets=None, random_weights_heatmaps=None,
             n_random: int = N_RANDOM_MAPS, seed: int = 0) -> dict[str, np.ndarray]:
    """The verdict's evidence for a batch: per image, the curve (``CURVE_PARTS`` x ``VERDICT_FRACTIONS``,
    flattened) of the map ("map", B x P), the centre prior ("centre", B x P), ``n_random`` phase-randomised
    copies of the map ("random", B x R x P) and, given ``random_weights_heatmaps``, the random-weights maps
    ("random_weights", B x P). Also "target", "probability" and "blurred_probability". ``targets=None``: each
    image's predicted class. Seeded by ``seed``."""
    batch, _, height, width = x.shape
    maps = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32))
    if maps.shape != (batch, height, width):
        raise ValueError(f"heatmaps must be {batch} x {height} x {width} like the images, got {tuple(maps.shape)}")
    orderings = [maps[:, None], centre_prior(height, width).expand(batch, 1, height, width)]
    if random_weights_heatmaps is not None:
        orderings.append(torch.as_tensor(np.asarray(random_weights_heatmaps, dtype=np.float32)).view(
            batch, 1, height, width))
    orderings.append(phase_randomised(maps, n_random, seed))
    curves = verdict_curves(model, x, torch.cat(orderings, 1), targets)
    joined = np.concatenate([curves[part] for part in CURVE_PARTS], 2)         # B x M x P
    result = {"map": joined[:, 0], "centre": joined[:, 1], "random": joined[:, -n_random:],
              **{key: curves[key] for key in ("target", "probability", "blurred_probability")}}
    if random_weights_heatmaps is not None:
        result["random_weights"] = joined[:, 2]
    return result


def curve_parts(curve) -> dict[str, np.ndarray]:
    """One ordering's curve split back into its parts: {"deletion": F drops, "insertion": F gains}."""
    curve = np.asarray(curve)
    return {part: curve[..., i * len(VERDICT_FRACTIONS):(i + 1) * len(VERDICT_FRACTIONS)]
            for i, part in enumerate(CURVE_PARTS)}


def faithfulness(model, x: torch.Tensor, heatmap: np.ndarray, target: int | None = None,
                 random_weights_heatmap: np.ndarray | None = None, n_random: int = N_RANDOM_MAPS) -> dict:
    """One image's evidence (``evidence`` for a batch of one, its first axis dropped): the input of
    ``explain.verdict.map_verdict``."""
    check_one_image(x)
    reference = None if random_weights_heatmap is None else np.asarray(random_weights_heatmap)[None]
    curves = evidence(model, x, np.asarray(heatmap)[None], None if target is None else [target], reference,
                      n_random=n_random)
    result = {key: value[0] for key, value in curves.items()}
    result["target"] = int(result["target"])
    result["probability"], result["blurred_probability"] = float(result["probability"]), float(
        result["blurred_probability"])
    return result


def randomised(model, seed: int = 0):
    """The model with every parameter (and BatchNorm statistic) reset by PyTorch's default initialiser, seeded
    by ``seed`` without touching the caller's random state; returned in eval mode.

    Not the zoo's own initialisation: that zero-initialises residual branches and MLP-Mixer's head, so a
    fresh model's maps would be constant and could not show what a map owes to the learned weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return model.eval()


def randomised_twin(model, seed: int = 0):
    """A model of a loaded checkpoint's architecture and arguments with random weights (``randomised`` with
    ``seed``), on the same device: the reference of the sanity check and of the verdict's random-weights
    baseline (seed 0). Another seed gives another random network: the benchmark's control of maps that know
    nothing about the trained weights."""
    config = model.config
    # Building it draws the zoo's own initialisation: not from the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        twin = create_model(config["arch"], num_classes=len(config["class_names"]), **config.get("arch_args", {}))
    return randomised(twin, seed).to(next(model.parameters()).device)
