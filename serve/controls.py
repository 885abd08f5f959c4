"""The "corrupt this image" controls of Classify and Compare: their choices and labels, in one place.

The only Gradio in serve/: ``app.py`` calls ``corruption_controls()`` inside its layout, so the app file
gains one line per tab.
"""
from __future__ import annotations

import gradio as gr

from robustness.corruptions import CORRUPTIONS, LABELS, NONE

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
