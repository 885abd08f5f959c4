"""When does an upload look like none of the classes? A threshold per checkpoint, chosen on validation data.

The score is the classifier's own confidence: the maximum softmax probability ("max_prob", Hendrycks and
Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples", ICLR 2017), or the
entropy of the softmax ("entropy"). The threshold keeps 95% of the validation split (held-out CIFAR-10
images the model never trained on) on the in-distribution side: the 5th percentile of max_prob, or the
95th of entropy. Which of the two scores a checkpoint uses is chosen by which one flags more images of a
small synthetic out-of-distribution set (noise, smooth gradients, flat colours) at that same threshold;
the entry records both rates. Synthetic images are only a proxy for real out-of-distribution photos.

``python -m tools.calibrate_ood`` (or ``tools.finish_checkpoint``) writes the entry into each checkpoint's
config.json as ``ood``. It records the SHA-256 of the weights it was measured on; after retraining, the
stale entry is ignored (no flag is raised) until the command is run again.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from preprocess import normalize, served_probs

KEEP_FRACTION = 0.95  # share of in-distribution validation images that must not be flagged


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row of ``probs``."""
    probs = np.clip(probs, 1e-12, 1.0)
    return -(probs * np.log(probs)).sum(-1)


def score(probs: np.ndarray, kind: str) -> np.ndarray:
    """Higher means more out-of-distribution, for either kind of score."""
    if kind == "max_prob":
        return -probs.max(-1)
    if kind == "entropy":
        return entropy(probs)
    raise ValueError(f"unknown OOD score {kind!r}")


def ood_check(probs: np.ndarray, entry: dict | None, weights_sha256: str | None) -> dict:
    """Is this one prediction (softmax row) out of distribution under ``entry``? Always explains itself.
    (Not the map's verdict, ``explain.verdict``: this judges the upload, not an explanation.)

    Returns {"ood": bool | None, "score": kind, "value": float, "threshold": float | None, "message": str}.
    ``ood`` is None when no valid threshold exists for these weights.
    """
    max_prob, ent = float(probs.max()), float(entropy(probs[None])[0])
    if not entry or (weights_sha256 and entry.get("weights_sha256") != weights_sha256):
        reason = "no threshold was calibrated" if not entry else "the threshold was calibrated on other weights"
        return {"ood": None, "score": "max_prob", "value": max_prob, "threshold": None,
                "message": f"Out-of-distribution check off: {reason} (run `python -m tools.calibrate_ood`)."}
    kind, threshold = entry["score"], float(entry["threshold"])
    if kind == "max_prob":
        ood = max_prob < threshold
        detail = (f"confidence {max_prob:.0%} is below {threshold:.0%}" if ood
                  else f"confidence {max_prob:.0%} is at or above {threshold:.0%}")
        value = max_prob
    else:
        ood = ent > threshold
        detail = (f"uncertainty (entropy {ent:.2f} nats) is above {threshold:.2f}" if ood
                  else f"uncertainty (entropy {ent:.2f} nats) is within {threshold:.2f}")
        value = ent
    keep = entry.get("keep_fraction", KEEP_FRACTION)
    if ood:
        message = (f"This does not look like any of the classes: {detail}, a level {keep:.0%} of the "
                   "validation images reach. Treat the label as a guess.")
    else:
        message = f"Looks in-distribution: {detail} ({keep:.0%} of validation images pass)."
    return {"ood": ood, "score": kind, "value": value, "threshold": threshold, "message": message}


def synthetic_ood(n_each: int = 100, size: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 N x 3 x S x S: uniform noise, smooth random gradients and flat colours."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n_each, 3, size, size), generator=generator, dtype=torch.uint8)
    ramp = torch.linspace(0, 1, size)
    start = torch.rand(n_each, 3, 1, 1, generator=generator)
    end = torch.rand(n_each, 3, 1, 1, generator=generator)
    horizontal = torch.rand(n_each, 1, 1, 1, generator=generator) < 0.5
    t = torch.where(horizontal, ramp.view(1, 1, 1, size), ramp.view(1, 1, size, 1)).expand(n_each, 3, size, size)
    gradients = ((start + (end - start) * t) * 255).round().to(torch.uint8)
    flat = (torch.rand(n_each, 3, 1, 1, generator=generator) * 255).round().to(torch.uint8).expand(-1, -1, size,
                                                                                                    size)
    return torch.cat([noise, gradients, flat.contiguous()])


@torch.inference_mode()
def softmax_of(model, images_uint8: torch.Tensor, config: dict, batch_size: int = 500,
               temperature: float = 1.0) -> np.ndarray:
    """The probabilities the app serves (its test-time augmentation, ``served_probs``, at the checkpoint's
    ``temperature``) for uint8 images."""
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images_uint8), batch_size):
        x = normalize(images_uint8[start:start + batch_size], mean, std).to(device)
        out.append(served_probs(model, x, temperature).cpu())
    return torch.cat(out).numpy()


def calibrate(model, config: dict, val_images: torch.Tensor, val_labels: torch.Tensor,
              keep_fraction: float = KEEP_FRACTION, temperature: float = 1.0) -> dict:
    """Measure both scores on validation and synthetic OOD images; pick the better; return the entry."""
    val_probs = softmax_of(model, val_images, config, temperature=temperature)
    ood_probs = softmax_of(model, synthetic_ood(size=val_images.shape[-1]), config, temperature=temperature)
    return calibrate_probs(val_probs, ood_probs, val_labels.numpy(), keep_fraction)


def calibrate_probs(val_probs: np.ndarray, ood_probs: np.ndarray, val_labels: np.ndarray,
                    keep_fraction: float = KEEP_FRACTION) -> dict:
    """The entry of ``calibrate`` from served probabilities already computed (validation and synthetic OOD)."""
    correct = val_probs.argmax(-1) == val_labels
    candidates = {}
    for kind in ("max_prob", "entropy"):
        val_score, ood_score = score(val_probs, kind), score(ood_probs, kind)
        cut = float(np.quantile(val_score, keep_fraction))  # scores above it are flagged
        flagged = val_score > cut
        candidates[kind] = {
            "threshold": -cut if kind == "max_prob" else cut,
            "val_flagged": float(flagged.mean()),
            "synthetic_ood_flagged": float((ood_score > cut).mean()),
            "val_accuracy_flagged": float(correct[flagged].mean()) if flagged.any() else math.nan,
            "val_accuracy_kept": float(correct[~flagged].mean()),
        }
    best = max(candidates, key=lambda kind: (candidates[kind]["synthetic_ood_flagged"], kind == "max_prob"))
    return {"score": best, "threshold": round(candidates[best]["threshold"], 6), "keep_fraction": keep_fraction,
            "val_images": int(len(val_labels)), "val_accuracy": float(correct.mean()),
            "candidates": {kind: {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else None)
                                  for k, v in c.items()} for kind, c in candidates.items()}}
