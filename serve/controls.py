"""The Gradio pieces of serve/, kept apart so that ``import serve`` never imports Gradio: the "corrupt this image"
and "attack this image" controls of Classify and Compare, and the wrapper that shows a ``RequestError`` as
Gradio's dialog.

``app.py`` reaches them as ``serve.corruption_controls``, ``serve.attack_controls`` and ``serve.shown_as_dialog``:
the package loads this module the first time one of them is asked for.
"""
from __future__ import annotations

import functools
import inspect

import gradio as gr

from robustness.corruptions import CORRUPTIONS, LABELS, NONE

from . import wording
from .attacks import APP_ATTACKS, DEFAULT_EPSILON, EPSILONS, UNTARGETED
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


def attack_controls(prefix: str, class_names) -> tuple[gr.Radio, gr.Dropdown, gr.Dropdown]:
    """The attack (default none), its budget and its target (default untargeted) in a row; ``prefix`` names their
    ids."""
    with gr.Row():
        attack = gr.Radio([(wording.ATTACK_LABELS[name], name) for name in APP_ATTACKS], value=APP_ATTACKS[0],
                          label="Attack this image", info=wording.ATTACK_INFO, elem_id=f"{prefix}-attack", scale=3)
        with gr.Column(scale=2, min_width=160):
            epsilon = gr.Dropdown([(f"{e:g}/255", e) for e in EPSILONS], value=DEFAULT_EPSILON, label="Budget",
                                  info=wording.EPSILON_INFO, elem_id=f"{prefix}-epsilon")
            target = gr.Dropdown([("untargeted", UNTARGETED)] + [(name, name) for name in class_names],
                                 value=UNTARGETED, label="Towards", info=wording.ATTACK_TARGET_INFO,
                                 elem_id=f"{prefix}-attack-target")
    return attack, epsilon, target


def attack_results() -> tuple[gr.Row, gr.Image, gr.Markdown, gr.File]:
    """Classify's attack panel, hidden until an attack is chosen: the perturbation, what the attack did and the
    attacked file to download."""
    with gr.Row(visible=False) as row:
        perturbation = gr.Image(label="Perturbation", height=220, format="png", interactive=False,
                                elem_id="perturbation")
        with gr.Column():
            note = gr.Markdown(label="what the attack did", elem_id="attack-note")
            attacked_file = gr.File(label="The attacked view (8-bit PNG)", elem_id="attacked-file")
    return row, perturbation, note, attacked_file


def titled_picture(label: str, elem_id: str) -> gr.Image:
    """A picture that draws its own title (a plot, a diagram): no label above it, PNG, not editable. Its
    ``elem_id`` belongs in ``wording.SELF_TITLED``, which starts it below the corner buttons."""
    return gr.Image(label=label, show_label=False, interactive=False, format="png", elem_id=elem_id)


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
