"""Pictures a person would rather look at than read: training curves and confusion matrices."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no screen: render to files only
import matplotlib.pyplot as plt  # noqa: E402

from architectures.checkpoint import atomic_write_bytes  # noqa: E402


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, training and validation side by side."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in history], "o-", label="train (augmented)")
    ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    # A further stage (--init-from) restarts the learning-rate schedule: mark where each one began.
    starts = [r["epoch"] - 0.5 for previous, r in zip(history, history[1:]) if r.get("stage") != previous.get("stage")]
    for ax in (ax_loss, ax_acc):
        for start in starts:
            ax.axvline(start, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
        ax.legend(title="dashed: a new training stage" if starts else None)
    fig.suptitle(title, y=1.03)
    _save(fig, path)


def plot_confusion(matrix, class_names: list[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class), in percent."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=float)
    percent = 100 * matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(class_names) <= 20:
        for i in range(len(class_names)):
            for j in range(len(class_names)):
                ax.text(j, i, f"{percent[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if percent[i, j] > 50 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="% of true class")
    _save(fig, path)
