"""Does a checkpoint's confidence mean anything? ECE, reliability diagrams and temperature scaling.

Expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): predictions
binned by confidence into 15 equal-width bins; the gap between each bin's accuracy and its mean confidence,
weighted by the bin's share of images. Temperature scaling divides the logits by one number, fitted by
minimising the negative log-likelihood of the served (test-time augmented) probabilities; it never changes
which class a single view ranks first.
"""
from __future__ import annotations

import numpy as np
import torch

from preprocess import views_to_probs

BINS = 15
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 161))  # the grid searched, 0.25 to 4


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """Per confidence bin: image count, accuracy and mean confidence (None where empty), and the ECE."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels) or len(labels) == 0:
        raise ValueError(f"reliability needs N x C probabilities and N labels, got {probs.shape} and {labels.shape}")
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # bins are (lo, hi]
    counts, accuracy, mean_conf, ece = [], [], [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        counts.append(count)
        if count:
            acc, conf = float(correct[inside].mean()), float(confidence[inside].mean())
            ece += count / len(labels) * abs(acc - conf)
        else:
            acc = conf = None
        accuracy.append(acc)
        mean_conf.append(conf)
    return {"edges": edges.round(6).tolist(), "count": counts, "accuracy": accuracy, "confidence": mean_conf,
            "ece": float(ece)}


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error of top-1 confidence, ``bins`` equal-width bins."""
    return reliability(probs, labels, bins)["ece"]


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def fit_temperature(view_logits: torch.Tensor, labels: np.ndarray) -> float:
    """The temperature minimising the NLL of the served probabilities; ``view_logits`` from ``tta_views``."""
    n = len(labels)
    losses = [nll(views_to_probs(view_logits, n, float(t)).numpy(), labels) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def confident_accuracy(probs: np.ndarray, labels: np.ndarray, at_least: float = 0.9) -> tuple[float | None, int]:
    """Accuracy of the answers given with at least ``at_least`` confidence, and how many there were."""
    sure = probs.max(1) >= at_least
    if not sure.any():
        return None, 0
    return float((probs.argmax(1)[sure] == labels[sure]).mean()), int(sure.sum())


def plot_reliability(before: dict, after: dict | None, path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after temperature scaling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    for entry, colour, name in ((before, "tab:blue", "served"), (after, "tab:orange", "temperature-scaled")):
        if entry is None:
            continue
        pts = [(c, a) for c, a in zip(entry["confidence"], entry["accuracy"]) if c is not None]
        ax.plot(*zip(*pts), marker="o", color=colour, label=f"{name}: ECE {entry['ece']:.1%}")
    ax.set(xlabel="confidence (top-1 probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
