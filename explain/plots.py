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


def _side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks' vectors in one row, a NaN between blocks so that a plotted line breaks there."""
    return np.concatenate([np.append(np.asarray(v, dtype=np.float32), np.nan) for v in blocks])


def plot_se_excitations(excitations: list[tuple[str, np.ndarray]], profiles: dict | None, predicted_class: int,
                        class_names: list[str]) -> Image.Image:
    """Every SE block side by side on one axis: this image's excitation of each channel, its predicted
    class's mean and the all-class mean.

    The comparison of Hu et al. (2018, figure 6): where this image departs from its class and from
    the average. Without ``profiles`` only this image's excitations are drawn. One axis, not a panel per
    block: matplotlib spends ~50 ms on each axis, and the app draws this on every explanation.
    """
    if not excitations:
        raise ValueError("no SE excitations to plot (the model has no squeeze-and-excitation blocks)")
    names = [block for block, _ in excitations]
    widths = [len(values) + 1 for _, values in excitations]  # + 1: the NaN gap
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    x = np.arange(sum(widths))
    figure = Figure(figsize=(10, 2.8), dpi=90)
    ax = figure.add_axes((0.05, 0.24, 0.93, 0.6))
    class_name = class_names[predicted_class]
    if profiles is not None and all(block in profiles["class_mean"] for block in names):
        ax.plot(x, _side_by_side([profiles["class_mean"][b][predicted_class] for b in names]), color="tab:blue",
                lw=0.8, label=f"mean of {class_name}")
        ax.plot(x, _side_by_side([profiles["mean"][b] for b in names]), color="0.5", lw=0.8, ls="--",
                label="mean of all classes")
    ax.plot(x, _side_by_side([values for _, values in excitations]), color="tab:red", lw=0.8, label="this image")
    for start in starts[1:]:
        ax.axvline(start - 1, color="0.8", lw=0.6)
    ax.set_xticks(starts + (np.array(widths) - 1) / 2, names, fontsize=7, rotation=30, ha="right")
    ax.set_xlim(0, len(x) - 1)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.5, 1])  # text is most of the drawing time: few ticks, a figure title, not ax.set_title
    ax.set_ylabel("excitation", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right", ncol=3)
    figure.text(0.5, 0.93, f"SE excitation per channel, block by block (predicted: {class_name})", fontsize=9,
                ha="center")
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
