"""Pictures of the explanations, as PIL images for the app.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot: no global
figure state, so concurrent requests cannot draw into each other's plots and nothing needs closing.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .se import class_specificity


def _to_image(figure: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The heatmap coloured and blended onto ``image`` at the image's own resolution (RGB).

    The model saw the centre square of the upload (shorter side resized, centre-cropped, as
    ``train.data.to_square_rgb`` does), so the heatmap covers that square; a non-square upload keeps its
    uncovered margins as they are.
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    if colormap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {colormap!r}; e.g. jet, viridis, inferno, turbo")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be H x W, got shape {heatmap.shape}")
    base = image.convert("RGB")
    side = min(base.size)
    left, top = (base.width - side) // 2, (base.height - side) // 2
    square = Image.fromarray(heatmap).resize((side, side), Image.Resampling.BILINEAR)
    colours = matplotlib.colormaps[colormap](np.clip(np.asarray(square), 0, 1))[..., :3] * 255
    out = np.asarray(base, dtype=np.float32).copy()
    region = out[top:top + side, left:left + side]
    out[top:top + side, left:left + side] = (1 - opacity) * region + opacity * colours
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def plot_se_excitations(excitations: list[tuple[str, np.ndarray]], profiles: dict | None, predicted_class: int,
                        class_names: list[str]) -> Image.Image:
    """One panel per SE block: this image's excitations, its predicted class's mean and the all-class mean.

    The comparison of Hu et al. (2018, figure 6): where this image departs from its class and from
    the average. Without ``profiles`` only this image's excitations are drawn.
    """
    if not excitations:
        raise ValueError("no SE excitations to plot (the model has no squeeze-and-excitation blocks)")
    columns = 2 if len(excitations) > 1 else 1
    rows = math.ceil(len(excitations) / columns)
    figure = Figure(figsize=(5 * columns, 1.7 * rows + 0.6), dpi=90, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    class_name = class_names[predicted_class]
    for ax, (block, values) in zip(axes, excitations):
        channels = np.arange(len(values))
        if profiles is not None and block in profiles["class_mean"]:
            ax.plot(channels, profiles["class_mean"][block][predicted_class], color="tab:blue", lw=1,
                    label=f"mean of {class_name}")
            ax.plot(channels, profiles["mean"][block], color="0.5", lw=1, ls="--", label="mean of all classes")
        ax.plot(channels, values, color="tab:red", lw=1, label="this image")
        ax.set_title(block, fontsize=8)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in axes[len(excitations):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"SE excitation per channel (predicted: {class_name})", fontsize=10)
    return _to_image(figure)


def plot_class_specificity(profiles: dict) -> Image.Image:
    """Spread of the class means by depth: shared early blocks, class-specific late ones (Hu et al.)."""
    spread = class_specificity(profiles)
    if not spread:
        raise ValueError("the profiles have no SE blocks")
    figure = Figure(figsize=(6, 3), dpi=90, layout="constrained")
    ax = figure.subplots()
    ax.plot(range(len(spread)), [value for _, value in spread], marker="o")
    ax.set_xticks(range(len(spread)), [block for block, _ in spread], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("std across class means\n(mean over channels)", fontsize=8)
    ax.set_title("Class-specificity of SE excitations by depth", fontsize=10)
    return _to_image(figure)
