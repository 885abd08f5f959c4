"""The Gradio pieces of serve/, kept apart so that ``import serve`` never imports Gradio: the "corrupt this image"
controls of Classify and Compare, and the wrapper that shows a ``RequestError`` as Gradio's dialog.

``app.py`` reaches them as ``serve.corruption_controls`` and ``serve.shown_as_dialog``: the package loads this
module the first time one of them is asked for.
"""
from __future__ import annotations

import functools
import inspect

import gradio as gr

from robustness.corruptions import CORRUPTIONS, LABELS, NONE

from .errors import RequestError

CHOICES = [("none (the upload as it is)", NONE)] + [(LABELS[name], name) for name in CORRUPTIONS]
INFO = ("CIFAR-10-C corruption (Hendrycks and Dietterich, 2019) applied to the 32 x 32 view before the model "
        "sees it; watch the prediction and the map change")


def corruption_controls(prefix: str) -> tuple[gr.Dropdown, gr.Slider]:
    """A corruption dropdown (default none) and a severity slider 1-5, side by side; ``prefix`` names their ids."""
    with gr.Row():
        corruption = gr.Dropdown(CHOICES, value=NONE, label="Corrupt this image", info=INFO,
                                 elem_id=f"{prefix}-corruption", scale=3)
        severity = gr.Slider(1, 5, value=3, step=1, label="Severity", elem_id=f"{prefix}-severity", scale=1)
    return corruption, severity


def shown_as_dialog(handler):
    """Run ``handler``; a ``RequestError`` (a bad upload, an unknown name) becomes a ``gr.Error`` dialog.
    A generator function stays one, so that Gradio still streams its steps."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def steps(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except RequestError as error:
                raise gr.Error(str(error), title=error.title) from None
        return steps

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except RequestError as error:
            raise gr.Error(str(error), title=error.title) from None
    return wrapped
