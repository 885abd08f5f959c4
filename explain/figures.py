"""Matplotlib's output as the project's pictures: a figure as a PIL image, a colour map as a lookup table.

A leaf (numpy, PIL and matplotlib only) that every module drawing with ``matplotlib.figure.Figure`` uses:
the Agg canvas, never pyplot, so there is no global figure state and concurrent requests cannot draw into
each other's plots.
"""
from __future__ import annotations

from functools import lru_cache

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["colour_table", "figure_to_image"]


def figure_to_image(figure: Figure, redraw: bool = True) -> Image.Image:
    """The figure rendered by the Agg canvas, as an RGB image (a copy: the figure may be drawn on again).

    ``redraw=False`` reads the pixels as they stand, for a figure whose Agg canvas was updated by blitting
    (``restore_region`` and ``draw_artist``), which a full draw would undo.
    """
    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        if not redraw:
            raise ValueError("redraw=False needs a figure already drawn on an Agg canvas")
        canvas = FigureCanvasAgg(figure)
    if redraw:
        canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


@lru_cache(maxsize=16)
def colour_table(colormap: str) -> np.ndarray:
    """256 x 3 uint8: the colour map sampled once, so colouring a map is one table lookup per pixel.

    Index it with levels in 0..255 (``colour_table("viridis")[levels]``); an unknown name raises KeyError
    from matplotlib's registry.
    """
    return (matplotlib.colormaps[colormap](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
