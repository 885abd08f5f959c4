"""Pictures of the explanations, as PIL images for the app.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot: no global
figure state, so concurrent requests cannot draw into each other's plots and nothing needs closing.
"""
from __future__ import annotations

import threading

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .figures import colour_table, figure_to_image
from .se import class_specificity


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The heatmap coloured and blended onto ``image`` at the image's own resolution (RGB).

    The model saw the centre square of the upload (shorter side resized, centre-cropped, as
    ``preprocess.to_square_rgb`` does), so the heatmap covers that square; a non-square upload keeps its
    uncovered margins as they are. In uint8 with Pillow and a colour table, not float arrays of the whole
    upload: a few times faster, in the app where every large buffer is a fresh mapping (app.tune_malloc).
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity}")
    if colormap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {colormap!r}; e.g. jet, viridis, inferno, turbo")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be H x W, got shape {heatmap.shape}")
    base = image.convert("RGB") if image.mode != "RGB" else image.copy()
    side = min(base.size)
    left, top = (base.width - side) // 2, (base.height - side) // 2
    levels = Image.fromarray((np.clip(heatmap, 0, 1) * 255 + 0.5).astype(np.uint8))
    levels = levels.resize((side, side), Image.Resampling.BILINEAR)
    colours = Image.fromarray(colour_table(colormap)[np.asarray(levels)])
    box = (left, top, left + side, top + side)
    base.paste(Image.blend(base.crop(box), colours, opacity), box)
    return base


def _side_by_side(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks' vectors in one row, a NaN between blocks so that a plotted line breaks there."""
    return np.concatenate([np.append(np.asarray(v, dtype=np.float32), np.nan) for v in blocks])


class SEExcitationPlot:
    """The SE excitation plot of one checkpoint, drawn fast enough for every explanation.

    Every SE block side by side on one axis: this image's excitation of each channel, its predicted
    class's mean and the all-class mean, the comparison of Hu et al. (2018, figure 6): where this image
    departs from its class and from the average. Without ``profiles`` only this image's line is drawn.

    Axes, ticks, legend and the all-class mean are the same for every image, so they are drawn once and
    kept as a bitmap; an image's plot restores that bitmap and draws only its two lines and the title on
    it (blitting), several times faster than a full matplotlib draw. The canvas is shared, so drawing takes
    a lock. ``layout``: (block name, channels) per SE block, as ``se_excitations`` gives.
    """

    def __init__(self, layout: list[tuple[str, int]], profiles: dict | None, class_names: list[str]):
        if not layout:
            raise ValueError("no SE excitations to plot (the model has no squeeze-and-excitation blocks)")
        self.layout = [(str(block), int(channels)) for block, channels in layout]
        self.names = [block for block, _ in self.layout]
        self.class_names = list(class_names)
        if profiles is not None and not all(block in profiles["class_mean"] for block in self.names):
            profiles = None  # profiles of another model version: draw without them rather than wrongly
        self.profiles = profiles
        widths = [channels + 1 for _, channels in self.layout]  # + 1: the NaN gap between blocks
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        x = np.arange(sum(widths))
        self._lock = threading.Lock()
        self._figure = Figure(figsize=(10, 2.8), dpi=90)
        self._canvas = FigureCanvasAgg(self._figure)
        ax = self._axes = self._figure.add_axes((0.05, 0.24, 0.93, 0.6))
        nothing = np.full(len(x), np.nan)
        # animated=True keeps a line out of canvas.draw(): it is drawn per image by draw_artist.
        self._class_line = None
        if profiles is not None:
            (self._class_line,) = ax.plot(x, nothing, color="tab:blue", lw=0.8, animated=True,
                                          label="mean of the predicted class")
            ax.plot(x, _side_by_side([profiles["mean"][b] for b in self.names]), color="0.5", lw=0.8, ls="--",
                    label="mean of all classes")
        (self._image_line,) = ax.plot(x, nothing, color="tab:red", lw=0.8, animated=True, label="this image")
        for start in starts[1:]:
            ax.axvline(start - 1, color="0.8", lw=0.6)
        ax.set_xticks(starts + (np.array(widths) - 1) / 2, self.names, fontsize=7, rotation=30, ha="right")
        ax.set_xlim(0, len(x) - 1)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel("excitation", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 1), ncol=3, frameon=False)  # not over the lines
        self._title = self._figure.text(0.05, 0.9, "", fontsize=9, animated=True)
        self._canvas.draw()
        self._background = self._canvas.copy_from_bbox(self._figure.bbox)

    def draw(self, excitations: list[tuple[str, np.ndarray]], predicted_class: int) -> Image.Image:
        """This image's plot (RGB); ``excitations`` as ``se_excitations`` gives them for this model."""
        got = [(block, len(values)) for block, values in excitations]
        if got != self.layout:
            raise ValueError(f"excitations of blocks {got} do not match this plot's {self.layout}")
        if not 0 <= predicted_class < len(self.class_names):
            raise ValueError(f"predicted class {predicted_class} outside 0..{len(self.class_names) - 1}")
        class_name = self.class_names[predicted_class]
        with self._lock:
            self._canvas.restore_region(self._background)
            if self._class_line is not None:
                self._class_line.set_ydata(_side_by_side(
                    [self.profiles["class_mean"][b][predicted_class] for b in self.names]))
                self._axes.draw_artist(self._class_line)
            self._image_line.set_ydata(_side_by_side([values for _, values in excitations]))
            self._axes.draw_artist(self._image_line)
            self._title.set_text(f"SE excitation per channel, block by block (predicted: {class_name})")
            self._figure.draw_artist(self._title)
            return figure_to_image(self._figure, redraw=False)


def plot_se_excitations(excitations: list[tuple[str, np.ndarray]], profiles: dict | None, predicted_class: int,
                        class_names: list[str]) -> Image.Image:
    """One image's SE excitation plot (see ``SEExcitationPlot``, which the app keeps per checkpoint)."""
    layout = [(block, len(values)) for block, values in excitations]
    return SEExcitationPlot(layout, profiles, class_names).draw(excitations, predicted_class)


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
    return figure_to_image(figure)
