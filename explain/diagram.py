"""A block diagram of an architecture, drawn from the model itself.

The boxes are the stages that ``explain.stages`` traces (the same names and shapes that Look inside shows):
the main flow shows them with shapes and parameters; an inset draws the inside of the repeated block once
(residual with squeeze-excite, Inception branches, dense concatenation, Mixer block).

``diagram_facts`` (from ``explain.stages``) returns the stages, what tests check; ``architecture_diagram``
the picture; ``diagram_for(name, arch_args_json)`` a cached picture of a registered architecture.
Matplotlib ``Figure`` with the Agg canvas, never pyplot, so concurrent requests cannot draw into each other.
"""
from __future__ import annotations

import json
from functools import lru_cache

import torch.nn as nn
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from PIL import Image

from .figures import figure_to_image
from .stages import (
    Stage,
    child_outputs,
    concatenated_children,
    diagram_facts,
    has_children,
    humanise,
    is_squeeze_excite,
    leaf_words,
    module_words,
    shape_text,
    shortcut_words,
)

__all__ = ["Stage", "diagram_facts", "architecture_diagram", "diagram_for"]

# ---------------------------------------------------------------------------------------------- drawing

COLOURS = {  # face colour of a box, by its most distinctive feature
    "inception": "#fdd9a8", "dense": "#c9e8c2", "token_mlp": "#bfe6e3", "se": "#dccbee", "residual": "#bcd6f2",
    "stem": "#e3e3e3", "pool": "#f2f2f2", "classifier": "#f6c9c4", "stage": "#dde9f5",
}
EDGE = "#4a4a4a"
SKIP = "#1f77b4"
WIDTH_IN, DPI = 9.0, 100   # 900 px wide


def _colour(stage: Stage) -> str:
    for feature in ("inception", "dense", "token_mlp", "se", "residual"):
        if feature in stage.features:
            return COLOURS[feature]
    return COLOURS[stage.kind]


def _params(count: int) -> str:
    if count == 0:
        return ""
    return f"{count / 1e6:.2f} M" if count >= 10_000 else f"{count:,} params"


class _Canvas:
    """An axes in inches, y downwards, so boxes and text have the same size in every diagram."""

    def __init__(self, height: float):
        self.figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
        self.ax = self.figure.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, WIDTH_IN)
        self.ax.set_ylim(height, 0)
        self.ax.axis("off")

    def box(self, x, y, w, h, colour, title, detail="", size=10.5, right=""):
        self.ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.08",
                                         facecolor=colour, edgecolor=EDGE, linewidth=1.0))
        if detail:
            self.ax.text(x + 0.12, y + h * 0.36, title, fontsize=size, va="center", ha="left", weight="bold")
            self.ax.text(x + 0.12, y + h * 0.72, detail, fontsize=size - 2, va="center", ha="left", color="#333")
        else:
            self.ax.text(x + 0.12, y + h / 2, title, fontsize=size, va="center", ha="left", weight="bold")
        if right:
            self.ax.text(x + w - 0.1, y + (h * 0.36 if detail else h / 2), right, fontsize=size - 1.5,
                         va="center", ha="right", color="#555")

    def small_box(self, cx, y, w, h, colour, text, size=8.5):
        self.ax.add_patch(FancyBboxPatch((cx - w / 2, y), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                         facecolor=colour, edgecolor=EDGE, linewidth=0.8))
        self.ax.text(cx, y + h / 2, text, fontsize=size, va="center", ha="center", linespacing=1.1)

    def arrow(self, start, end, colour=EDGE, style="-|>", connection="arc3", width=1.0, ls="-"):
        self.ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=colour,
                                          connectionstyle=connection, linewidth=width, linestyle=ls,
                                          shrinkA=0, shrinkB=0))

    def bypass(self, cx, from_y, to_y, left):
        """A skip connection: out of the main line at ``from_y``, down the left at ``left``, into a node."""
        self.ax.plot([cx, left, left], [from_y, from_y, to_y], color=SKIP, linewidth=1.6, solid_joinstyle="miter")
        self.arrow((left, to_y), (cx - 0.13, to_y), colour=SKIP, width=1.6)

    def node(self, cx, cy, symbol, r=0.13):
        self.ax.add_patch(Circle((cx, cy), r, facecolor="white", edgecolor=EDGE, linewidth=1.0))
        self.ax.text(cx, cy, symbol, fontsize=11, ha="center", va="center", weight="bold")

    def text(self, x, y, words, **kwargs):
        kwargs.setdefault("fontsize", 8.5)
        self.ax.text(x, y, words, **kwargs)

    def image(self) -> Image.Image:
        return figure_to_image(self.figure)


BOX_H, GAP = 0.56, 0.42


def _main_flow(c: _Canvas, stages: list[Stage], x: float, w: float, top: float, num_classes: int | None):
    cx = x + w / 2
    y = top
    first = stages[0]
    c.text(cx, y + 0.12, f"input {shape_text(first.in_shape)}", ha="center", va="center", fontsize=10, color="#222")
    y += 0.26
    for stage in stages:
        c.arrow((cx, y), (cx, y + GAP - 0.26 + 0.22))
        y += GAP - 0.26 + 0.22
        c.box(x, y, w, BOX_H, _colour(stage), stage.title, stage.detail, right=_params(stage.params))
        y += BOX_H
        label = shape_text(stage.out_shape) + (f" → {stage.after}" if stage.after else "")
        c.text(cx + 0.1, y + 0.21, label, ha="left", va="center", fontsize=9, color="#1f4e79")
        y += 0.04
    c.arrow((cx, y), (cx, y + 0.34))
    y += 0.34
    c.text(cx, y + 0.13, f"{num_classes} class scores" if num_classes else "output", ha="center", va="center",
           fontsize=10, color="#222")
    return y + 0.3


def _flow_height(stages: list[Stage]) -> float:
    return 0.26 + len(stages) * (GAP - 0.04 + BOX_H + 0.04) + 0.34 + 0.3


# Insets: the inside of the repeated block, drawn once. Each returns the height it used.

INSET_WORDS = 30  # characters of a small box's words before they are shortened


def _inset_residual(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls = stage.block
    module = call.module
    children = list(module.named_children())
    names = [n for n, _ in children]
    cut = names.index("shortcut") if "shortcut" in names else len(children)
    branch = [(n, m) for n, m in children[:cut] if not isinstance(m, nn.Identity)]
    after = [(n, m) for n, m in children[cut + 1:] if not isinstance(m, nn.Identity)]
    cx, bw, bh, step = x + 1.95, 1.8, 0.34, 0.5
    y = top
    c.text(cx, y + 0.1, "x", ha="center", va="center", fontsize=10, style="italic")
    split_y = y + 0.25
    y += 0.25
    for name, child in branch:
        c.arrow((cx, y), (cx, y + step - bh))
        y += step - bh
        if is_squeeze_excite(child):
            y = _se_path(c, cx, y, x + 2.9, child, calls.get(f"{call.name}.{name}"))
        else:
            words = module_words(child, INSET_WORDS)
            c.small_box(cx, y, bw, bh, "white", words)
            y += bh
    c.arrow((cx, y), (cx, y + 0.2))
    y += 0.2 + 0.13
    c.node(cx, y, "+")
    skip = _shortcut_set(module, calls)
    if getattr(module, "use_skip", None) is not None:
        skip = "identity, only\nwhere stride is 1\nand channels\nmatch"
    c.bypass(cx, split_y, y, cx - bw / 2 - 0.12)
    c.text(x + 0.02, (split_y + y) / 2, "skip:\n" + skip.replace(" or ", "\nor\n").replace(" · ", "\n· "),
           fontsize=7.5, color=SKIP, ha="left", va="center")
    y += 0.13
    for _, child in after:
        c.arrow((cx, y), (cx, y + 0.16))
        y += 0.16
        c.small_box(cx, y, bw, bh * 0.85, "white", module_words(child, INSET_WORDS))
        y += bh * 0.85
    c.arrow((cx, y), (cx, y + 0.2))
    y += 0.2
    c.text(cx, y + 0.1, "out", ha="center", va="center", fontsize=9, style="italic")
    return y + 0.25 - top


def _shortcut_set(module: nn.Module, calls) -> str:
    """Every kind of shortcut that blocks of this class have in the model ("identity or conv 1x1 /2 · BN")."""
    same = [records[0].module for records in calls.values() if type(records[0].module) is type(module)]
    return " or ".join(dict.fromkeys(shortcut_words(m) for m in same))


def _se_path(c: _Canvas, cx: float, y: float, side_x: float, se: nn.Module, se_calls) -> float:
    """The squeeze -> FC -> FC -> sigmoid path beside the main line, back into a "×" node."""
    channels = se.fc1.in_channels if isinstance(se.fc1, nn.Conv2d) else se.fc1.in_features
    reduced = se.fc1.out_channels if isinstance(se.fc1, nn.Conv2d) else se.fc1.out_features
    act = leaf_words(se.act) if hasattr(se, "act") else ""
    steps = [f"squeeze: global avg pool\n{channels}×1×1", f"FC {channels}→{reduced} · {act}",
             f"FC {reduced}→{channels} · sigmoid"]
    colour = COLOURS["se"]
    sx, sw, sh = side_x + 0.05, 1.55, 0.4
    c.arrow((cx, y), (sx - sw / 2, y + sh / 2), colour="#6a3d9a")
    top = y
    for index, words in enumerate(steps):
        c.small_box(sx, y, sw, sh, colour, words, size=8)
        y += sh
        if index < len(steps) - 1:
            c.arrow((sx, y), (sx, y + 0.14), colour="#6a3d9a")
            y += 0.14
    node_y = y + 0.3
    c.arrow((cx, top), (cx, node_y - 0.13))
    c.node(cx, node_y, "×")
    c.arrow((sx, y), (cx + 0.13, node_y), colour="#6a3d9a", connection="angle3,angleA=-90,angleB=180")
    c.text(sx + 0.1, y + 0.2, "scale channels", fontsize=8, color="#6a3d9a", ha="left", va="center")
    return node_y + 0.13


def _inset_inception(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls = stage.block
    branches = concatenated_children(call.module, child_outputs(call, calls), call.output)
    cx = x + w / 2
    y = top
    c.text(cx, y + 0.1, f"in {shape_text(tuple(call.inputs.shape[1:]))}", ha="center", va="center", fontsize=9)
    y += 0.22
    column = (w - 0.1) / len(branches)
    lanes_top = y + 0.3
    bottoms = []
    for index, (name, branch) in enumerate(branches):
        bx = x + 0.05 + column * (index + 0.5)
        c.arrow((cx, y), (bx, lanes_top), connection="arc3")
        by = lanes_top
        parts = list(branch.children()) if type(branch) in (nn.Sequential,) else [branch]
        for part in parts:
            words = module_words(part, INSET_WORDS).split(" · ")[0]
            c.small_box(bx, by, column - 0.1, 0.36, COLOURS["inception"], words.replace(" pool", "\npool"), size=8)
            by += 0.36
            c.arrow((bx, by), (bx, by + 0.14))
            by += 0.14
        out = calls[f"{call.name}.{name}"][0].output.shape[1]
        bottoms.append((bx, by, out))
    lanes_bottom = max(b[1] for b in bottoms) + 0.2
    for bx, by, out in bottoms:
        c.arrow((bx, by - 0.14), (bx, lanes_bottom - 0.02), style="-")
        c.text(bx + 0.04, lanes_bottom - 0.1, f"{out}", fontsize=8, color="#1f4e79", ha="left", va="center")
        c.arrow((bx, lanes_bottom), (cx, lanes_bottom + 0.3))
    y = lanes_bottom + 0.3
    c.small_box(cx, y, 1.6, 0.32, "white", "concatenate channels", size=8.5)
    y += 0.32
    c.arrow((cx, y), (cx, y + 0.2))
    y += 0.2
    c.text(cx, y + 0.1, f"out {shape_text(tuple(call.output.shape[1:]))}", ha="center", va="center", fontsize=9)
    return y + 0.25 - top


def _inset_dense(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls = stage.block
    layers = list(call.module.named_children())
    cx, y = x + 1.7, top
    channels = call.inputs.shape[1]
    c.text(cx, y + 0.1, f"in: {channels} channels", ha="center", va="center", fontsize=9)
    y += 0.22
    shown = layers[:3]
    for name, layer in shown:
        record = calls[f"{call.name}.{name}"][0]
        parts = " → ".join(module_words(part, 40).replace(" · ", "-") for part in layer.children())
        split = y
        c.arrow((cx, y), (cx, y + 0.14))
        y += 0.14
        c.small_box(cx, y, 2.9, 0.38, COLOURS["dense"], parts.replace(" → ", " →\n") if len(parts) > 38 else parts,
                    size=7.5)
        y += 0.38
        c.arrow((cx, y), (cx, y + 0.16))
        y += 0.16 + 0.12
        c.node(cx, y, "C")
        c.arrow((cx - 1.45, split + 0.01), (cx - 0.13, y), connection="angle,angleA=-90,angleB=180,rad=5",
                colour="#2ca02c", width=1.4)
        c.text(cx + 0.2, y, f"concat: {record.output.shape[1]} ch (+{record.output.shape[1] - record.inputs.shape[1]})",
               fontsize=8, ha="left", va="center", color="#2ca02c")
        y += 0.12
    if len(layers) > len(shown):
        last = calls[f"{call.name}.{layers[-1][0]}"][0]
        c.arrow((cx, y), (cx, y + 0.16))
        y += 0.16
        c.text(cx, y + 0.14, f"… {len(layers)} layers in all: {channels} → {last.output.shape[1]} channels",
               ha="center", va="center", fontsize=8.5)
        y += 0.3
    transition = _transition_words(stage)
    if transition:
        c.text(x + 0.05, y + 0.2, "between blocks, a transition:\n" + transition, fontsize=8, va="center",
               ha="left")
        y += 0.45
    return y + 0.1 - top


def _transition_words(stage: Stage) -> str:
    call, calls = stage.block
    model_units = [c for c in calls.values() if c and c[0].name.rsplit(".", 1)[0] == call.name.rsplit(".", 1)[0]]
    for records in model_units:
        record = records[0]
        if record.name != call.name and record.output is not None and record.output.dim() == 4 \
                and record.output.shape[1] < record.inputs.shape[1]:
            return module_words(record.module, 60) + f" ({record.inputs.shape[1]}→{record.output.shape[1]} ch)"
    return ""


def _inset_mixer(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call = stage.block.call
    module = call.module
    tokens, dim = call.inputs.shape[1], call.inputs.shape[2]
    children = list(module.named_children())
    cx, bw, y = x + 1.95, 2.3, top
    c.text(cx, y + 0.1, f"{tokens} tokens × {dim} channels", ha="center", va="center", fontsize=9)
    y += 0.22
    split = y
    for name, child in children:
        c.arrow((cx, y), (cx, y + 0.16))
        y += 0.16
        if isinstance(child, nn.Sequential) or has_children(child):
            linears = [m for m in child.modules() if isinstance(m, nn.Linear)]
            size = "→".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears]) if linears else ""
            if "token" in name:
                words = f"token-mixing MLP ({size})\nacross the {tokens} patches, per channel"
            elif "channel" in name:
                words = f"channel-mixing MLP ({size})\nwithin each patch"
            else:
                words = module_words(child, INSET_WORDS)
            c.small_box(cx, y, bw, 0.44, COLOURS["token_mlp"], words, size=8)
            y += 0.44
            c.arrow((cx, y), (cx, y + 0.16))
            y += 0.16 + 0.13
            c.node(cx, y, "+")
            c.bypass(cx, split, y, cx - bw / 2 - 0.12)
            y += 0.13
            split = y
        else:
            c.small_box(cx, y, bw * 0.7, 0.28, "white", leaf_words(child) or type(child).__name__, size=8)
            y += 0.28
    c.text(x + 0.02, top + 0.7, "skip\nconnections", fontsize=8, color=SKIP, ha="left", va="center")
    return y + 0.1 - top


def _inset_for(stage: Stage):
    if "inception" in stage.features:
        return "inside one Inception module", _inset_inception, 0.22 + 0.3 + 4 * 0.5 + 0.2 + 0.3 + 0.32 + 0.2 + 0.35
    if "dense" in stage.features:
        return "inside one dense block", _inset_dense, 0.22 + 3 * 0.94 + 0.46 + 0.55 + 0.2
    if "token_mlp" in stage.features:
        return "inside one Mixer block", _inset_mixer, 0.22 + 2 * (0.16 + 0.28 + 0.16 + 0.44 + 0.42) + 0.2
    if "residual" in stage.features:
        call = stage.block.call
        n = sum(1 for m in call.module.children() if not isinstance(m, nn.Identity))
        se = any(is_squeeze_excite(m) for m in call.module.modules())
        title = f"inside one {humanise(type(call.module).__name__)}" + (" (with squeeze-excite)" if se else "")
        return title, _inset_residual, 0.25 + n * 0.5 + (1.9 if se else 0) + 0.9
    return None


def architecture_diagram(model: nn.Module, image_size: int = 32) -> Image.Image:
    """The model's block diagram as an RGB image 900 px wide: main flow left, the repeated block right."""
    stages = diagram_facts(model, image_size)
    name = getattr(model, "display_name", "") or type(model).__name__
    total = sum(p.numel() for p in model.parameters())
    num_classes = stages[-1].out_shape[0] if stages and stages[-1].out_shape else None
    insets, seen = [], set()
    for stage in stages:
        found = _inset_for(stage) if stage.block is not None else None
        if found and found[0] not in seen:
            seen.add(found[0])
            insets.append((stage, *found))
    insets = insets[:2]
    title_h = 0.65
    inset_h = sum(h + 0.5 for *_, h in insets)
    height = title_h + max(_flow_height(stages), inset_h) + 0.15
    c = _Canvas(height)
    size = f"{total / 1e6:.2f} M" if total >= 10_000 else f"{total:,}"
    c.text(WIDTH_IN / 2, 0.32, f"{name}  ·  {size} parameters", ha="center", va="center", fontsize=14, weight="bold")
    if insets:
        flow_x, flow_w = 0.25, 4.35
    else:
        flow_x, flow_w = (WIDTH_IN - 5.0) / 2, 5.0
    if stages:
        _main_flow(c, stages, flow_x, flow_w, title_h, num_classes)
    y = title_h
    for stage, title, draw, _ in insets:
        x, w = 4.95, WIDTH_IN - 4.95 - 0.15
        c.text(x + 0.05, y + 0.12, title, fontsize=10.5, weight="bold", va="center")
        used = draw(c, x, w, y + 0.35, stage)
        c.ax.add_patch(FancyBboxPatch((x - 0.1, y - 0.08), w + 0.15, used + 0.5,
                                      boxstyle="round,pad=0,rounding_size=0.1", facecolor="none",
                                      edgecolor=_colour(stage), linewidth=2.0))
        y += used + 0.6
    if y > height:  # an estimate fell short: grow the canvas rather than cut the inset off
        c.figure.set_size_inches(WIDTH_IN, y + 0.1)
        c.ax.set_ylim(y + 0.1, 0)
    return c.image()


@lru_cache(maxsize=32)
def diagram_for(name: str, arch_args_json: str = "{}", num_classes: int = 10) -> Image.Image:
    """The diagram of registered architecture ``name`` built with ``arch_args_json`` (a checkpoint's
    ``arch_args`` as JSON, so the call is cacheable; pass ``sort_keys=True`` for one entry per setting).

    The structure does not depend on trained weights, so a freshly initialised model is drawn.
    """
    from architectures import create_model
    return architecture_diagram(create_model(name, num_classes=num_classes, **json.loads(arch_args_json)))
