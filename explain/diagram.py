"""A block diagram of an architecture, drawn from the model itself.

One forward pass of a fixed random image is traced with forward hooks: every module's input and output
shapes, and its own parameters. The units of the diagram are the model's top-level children, and the
children of a top-level ``nn.Sequential`` that holds blocks (so ``stem``, ``blocks.3``, ``head``);
consecutive units of the same kind and output shape are grouped ("3 x Basic block"). Characteristic
blocks are recognised by structure and by the trace, not by architecture name: a ``shortcut`` child or
``use_skip`` (residual), outputs that are the concatenation of the children's outputs (Inception
branches), layers whose output starts with their input (dense concatenation), a sigmoid ``gate`` with
two FC layers (squeeze-and-excitation), ``token``/``channel`` MLP children (MLP-Mixer). The main flow
shows the units with shapes and parameters; an inset draws the inside of the repeated block once.

``diagram_facts`` returns the traced stages (what tests check); ``architecture_diagram`` the picture;
``diagram_for(name, arch_args_json)`` a cached picture of a registered architecture. Matplotlib
``Figure`` with the Agg canvas, never pyplot, so concurrent requests cannot draw into each other.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from PIL import Image

from .cam import HOOK_LOCK

__all__ = ["Stage", "diagram_facts", "architecture_diagram", "diagram_for"]


@dataclass(frozen=True)
class Stage:
    """One box of the main flow: a traced unit, or a run of identical units grouped together."""

    names: tuple[str, ...]          # module paths in this box, in the order they ran ("blocks.3", ...)
    title: str                      # what the box says: "3 x Basic block", "conv 3x3 · BN · ReLU"
    detail: str                     # a smaller second line ("first with 1x1 conv /2 shortcut"), may be ""
    kind: str                       # "stem", "stage", "pool" or "classifier"
    in_shape: tuple[int, ...]       # without the batch: (C, H, W), (tokens, C) or (features,)
    out_shape: tuple[int, ...]
    params: int                     # parameters of the modules in this box, each counted once
    count: int = 1                  # units grouped into the box
    features: frozenset = frozenset()  # "residual", "se", "inception", "concat", "token_mlp", "channel_mlp"
    branches: int = 0               # parallel branches (4 for an Inception module)
    after: str = ""                 # what ``forward`` does to the output before the next box (e.g. pooling)
    block: object = field(default=None, compare=False, repr=False)  # a representative module, for the inset


# ---------------------------------------------------------------------------------------------- tracing

@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: torch.Tensor | None
    output: torch.Tensor | None


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children; a top-level Sequential (or ModuleList) of blocks is opened one level."""
    units = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(_has_children(c) for c in child.children()):
            units += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            units.append((name, child))
    return units or [("", model)]


def _trace(model: nn.Module, image_size: int):
    """Run one forward pass with every module hooked: (unit calls in order, all calls by name, logits)."""
    calls: dict[str, list[_Call]] = {}
    order: list[_Call] = []
    unit_names = {name for name, _ in _units(model)}

    def hook(name):
        def record(module, inputs, output):
            call = _Call(name, module, _first_tensor(inputs), _first_tensor(output))
            calls.setdefault(name, []).append(call)
            if name in unit_names:
                order.append(call)
        return record

    try:
        reference = next(model.parameters())
        device, dtype = reference.device, reference.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    # A fixed random image, not zeros: with zeros every activation of a bias-free network is zero and the
    # concatenation checks below could not tell a copied input from a computed one.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, image_size, image_size, generator=generator).to(device, dtype)
    with HOOK_LOCK:
        handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                logits = model(x)
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
    return order, calls, _first_tensor(logits)


# ------------------------------------------------------------------------------------- recognising blocks

def _is_se(module: nn.Module) -> bool:
    """Squeeze-and-excitation by structure: a sigmoid ``gate`` after two FC (1x1 conv or linear) layers."""
    return (isinstance(getattr(module, "gate", None), nn.Sigmoid)
            and isinstance(getattr(module, "fc1", None), (nn.Conv2d, nn.Linear))
            and isinstance(getattr(module, "fc2", None), (nn.Conv2d, nn.Linear)))


def _copies_input(call: _Call) -> bool:
    """True if the output is the input with new channels concatenated after it (a dense layer)."""
    x, y = call.inputs, call.output
    if x is None or y is None or x.dim() != 4 or y.dim() != 4 or y.shape[1] <= x.shape[1]:
        return False
    return y.shape[2:] == x.shape[2:] and torch.equal(y[:, : x.shape[1]], x)


def _concat_branches(name: str, call: _Call, calls) -> list[tuple[str, nn.Module]]:
    """The children whose outputs, concatenated along channels, are this module's output (Inception)."""
    children = [(n, c) for n, c in call.module.named_children() if f"{name}.{n}" in calls]
    if len(children) < 2 or call.output is None or call.output.dim() < 2:
        return []
    outputs = [calls[f"{name}.{n}"][0].output for n, _ in children]
    if any(o is None or o.shape[2:] != call.output.shape[2:] for o in outputs):
        return []
    if sum(o.shape[1] for o in outputs) != call.output.shape[1]:
        return []
    return children if torch.equal(torch.cat(outputs, 1), call.output) else []


def _features(name: str, call: _Call, calls) -> tuple[frozenset, int]:
    module = call.module
    found = set()
    if isinstance(getattr(module, "shortcut", None), nn.Module) or getattr(module, "use_skip", False):
        found.add("residual")
    names = [n for n, _ in module.named_children()]
    if any("token" in n for n in names) and any("channel" in n for n in names):
        found |= {"token_mlp", "channel_mlp", "residual"}
    if any(_is_se(m) for m in module.modules()):
        found.add("se")
    branches = _concat_branches(name, call, calls)
    if branches:
        found |= {"inception", "concat"}
    layers = [(f"{name}.{n}", c) for n, c in module.named_children()]
    if _copies_input(call) or (layers and all(n in calls and _copies_input(calls[n][0]) for n, _ in layers)):
        found |= {"dense", "concat"}
    return frozenset(found), len(branches)


# ------------------------------------------------------------------------------------------- describing

_ACTIVATIONS = {nn.ReLU: "ReLU", nn.SiLU: "swish", nn.GELU: "GELU", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
                nn.LeakyReLU: "leaky ReLU", nn.ReLU6: "ReLU6", nn.Hardswish: "hard swish"}


def _pair(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def _leaf(module: nn.Module) -> str | None:
    """A few words for one leaf module, or None for one that does nothing worth a word."""
    if isinstance(module, nn.Conv2d):
        k, s = _pair(module.kernel_size), _pair(module.stride)
        if k == s and k > 1:
            return f"patch embed {k}x{k}"
        words = f"conv {k}x{k}"
        if module.groups > 1 and module.groups == module.in_channels:
            words = f"depthwise {k}x{k}"
        return words + (f" /{s}" if s > 1 else "")
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        kind = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        return f"{kind} pool {k}x{k}" + (f" /{s}" if s != k else "")
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "global pool"
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "BN"
    if isinstance(module, nn.LayerNorm):
        return "LayerNorm"
    if isinstance(module, nn.Linear):
        return f"FC {module.in_features}→{module.out_features}"
    if isinstance(module, nn.Dropout):
        return f"dropout {module.p:g}" if module.p > 0 else None
    if isinstance(module, nn.Flatten):
        return "flatten"
    if isinstance(module, nn.Identity):
        return None
    for kind, words in _ACTIVATIONS.items():
        if isinstance(module, kind):
            return words
    return _humanise(type(module).__name__)


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not _has_children(m)]


def _compact(words: list[str], limit: int = 34) -> str:
    """Join leaf words; when too long keep the weighted layers and pools, FC chains as "FC a→b→c"."""
    text = " · ".join(words)
    if len(text) <= limit:
        return text
    kept = [w for w in words if w.split()[0] in ("conv", "depthwise", "patch", "FC", "max", "avg", "global",
                                                    "flatten", "dropout")]
    merged: list[str] = []
    for word in kept:
        if word.startswith("FC ") and merged and merged[-1].startswith("FC "):
            merged[-1] += "→" + word.split("→")[-1]
        elif word.startswith("dropout") and any(m.startswith("dropout") for m in merged):
            continue
        else:
            merged.append(word)
    return " · ".join(merged)


def _humanise(class_name: str) -> str:
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_name).split()
    return " ".join([words[0]] + [w if w.isupper() or sum(c.isupper() for c in w) > 1 else w.lower()
                                  for w in words[1:]]) if words else class_name


def _describe(module: nn.Module) -> str:
    """The box title of one unit: its leaves for a simple unit, its class for a composite block."""
    if not _has_children(module) or all(not _has_children(c) for c in module.children()):
        return _compact([w for w in map(_leaf, _leaves(module)) if w]) or _humanise(type(module).__name__)
    if type(module) in (nn.Sequential, nn.ModuleList):  # a plain stack: its parts, one word each
        parts = []
        for child in module.children():
            words = [w for w in map(_leaf, _leaves(child)) if w]
            parts.append(next((w for w in words if w.split()[0] in ("conv", "depthwise", "FC", "patch")),
                              words[0] if words else ""))
        return _compact([p for p in parts if p])
    return _humanise(type(module).__name__)


def _shortcut_words(module: nn.Module) -> str:
    shortcut = getattr(module, "shortcut", None)
    if shortcut is None or isinstance(shortcut, nn.Identity):
        return "identity"
    return _compact([w for w in map(_leaf, _leaves(shortcut)) if w])


# ----------------------------------------------------------------------------------------------- facts

def _gap(previous: torch.Tensor | None, following: torch.Tensor | None) -> str:
    """What the model's own code did between two boxes (pooling, reshaping), read from the tensors."""
    if previous is None or following is None or previous.shape == following.shape:
        return ""
    if previous.dim() == 4 and following.dim() == 2 and following.shape[1] == previous.shape[1]:
        if torch.allclose(previous.mean((2, 3)), following, atol=1e-5):
            return "global average pool"
        if torch.allclose(previous.amax((2, 3)), following, atol=1e-5):
            return "global max pool"
        return "global pool"
    if previous.dim() == 4 and following.dim() == 3:
        return f"to {following.shape[1]} tokens"
    if previous.dim() == 3 and following.dim() == 2:
        return "mean over tokens" if torch.allclose(previous.mean(1), following, atol=1e-5) else "pool over tokens"
    if previous.dim() == 3 and following.dim() == 4:
        return f"tokens to a {following.shape[2]}x{following.shape[3]} map"
    if previous.dim() == 4 and following.dim() == 2:
        return "flatten"
    return "reshape"


def _pooled_inside(call: _Call, calls) -> str:
    """A unit taking a map and returning a vector without a Flatten: the pooling is in its ``forward``;
    which pooling is read from what its first linear layer received."""
    x, y = call.inputs, call.output
    if x is None or y is None or x.dim() != 4 or y.dim() != 2:
        return ""
    if any(isinstance(m, (nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in call.module.modules()):
        return ""
    prefix = f"{call.name}." if call.name else ""
    for name, module in call.module.named_modules():
        records = calls.get(prefix + name if name else call.name)
        if isinstance(module, nn.Linear) and records and records[0].inputs is not None:
            return _gap(x, records[0].inputs)
    return "global pool"


def _unit_info(call: _Call, calls) -> dict:
    features, branches = _features(call.name, call, calls)
    title = _describe(call.module)
    pooled = _pooled_inside(call, calls)
    detail = f"after {pooled}" if pooled else ""
    if _has_children(call.module) and not features and any(_has_children(c) for c in call.module.children()) \
            and type(call.module) not in (nn.Sequential, nn.ModuleList):
        detail = _compact([w for w in map(_leaf, _leaves(call.module)) if w], 70)
    return dict(call=call, title=title, detail=detail, features=features, branches=branches,
                key=(type(call.module), title, tuple(call.output.shape[1:]) if call.output is not None else ()))


def diagram_facts(model: nn.Module, image_size: int = 32) -> list[Stage]:
    """The stages the diagram draws, from one traced forward pass of ``model`` on a 3 x S x S image.

    Every parameter of the model is counted once, in the stage of the first unit that used it (a
    parameter of the model itself, outside any child, goes to the first stage), so the stages' params
    add up to the model's total when every module takes part in the forward pass.
    """
    order, calls, logits = _trace(model, image_size)
    seen_params: set[int] = set()
    infos = []
    for call in order:
        info = _unit_info(call, calls)
        fresh = [p for p in call.module.parameters() if id(p) not in seen_params]
        seen_params.update(id(p) for p in fresh)
        info["params"] = sum(p.numel() for p in fresh)
        infos.append(info)
    if not infos:
        return []
    infos[0]["params"] += sum(p.numel() for p in model.parameters(recurse=False) if id(p) not in seen_params)

    # Group runs: the same block with the same output shape; parameter-free neighbours (pool, dropout) merge.
    groups: list[list[dict]] = []
    for index, info in enumerate(infos):
        if groups and index < len(infos) - 1:  # the classifier keeps a box of its own
            last = groups[-1][-1]
            free = info["params"] == last["params"] == 0 and not info["features"] and not last["features"]
            if info["key"] == last["key"] or free:
                groups[-1].append(info)
                continue
        groups.append([info])

    stages = []
    for position, group in enumerate(groups):
        first, last = group[0], group[-1]
        count = len(group)
        if count > 1 and len({g["title"] for g in group}) == 1:
            title = f"{count} x {first['title']}"
        else:
            title = " · ".join(dict.fromkeys(g["title"] for g in group))
        features = frozenset().union(*(g["features"] for g in group))
        detail = first["detail"]
        if "residual" in features and any(hasattr(g["call"].module, "shortcut") for g in group):
            shortcuts = [_shortcut_words(g["call"].module) for g in group]
            if any(s != "identity" for s in shortcuts):
                detail = f"shortcut: {next(s for s in shortcuts if s != 'identity')}"
                detail += " in the first" if count > 1 and shortcuts[0] != "identity" else ""
        elif "dense" in features:
            layer_calls = [calls.get(f"{first['call'].name}.{n}") for n, _ in first["call"].module.named_children()]
            growth = {c[0].output.shape[1] - c[0].inputs.shape[1] for c in layer_calls if c}
            detail = f"{len(layer_calls)} layers, +{growth.pop()} channels each" if len(growth) == 1 else ""
            title = "dense block"
        elif "inception" in features:
            detail = f"{first['branches']} branches, concatenated"
        elif "token_mlp" in features:
            detail = "token-mixing MLP, then channel-mixing MLP"
        skips = [getattr(g["call"].module, "use_skip", None) for g in group]
        if all(skip is not None for skip in skips) and any(skips):
            detail = "skip connection" + ("" if all(skips) else " in all but the first")
        if "se" in features:
            detail = (detail + " · " if detail else "") + "squeeze-excite"
        if position == len(groups) - 1:
            kind = "classifier"
        elif position == 0:
            kind = "stem"
        elif all(g["params"] == 0 for g in group):
            kind = "pool"
        else:
            kind = "stage"
        following = groups[position + 1][0]["call"].inputs if position + 1 < len(groups) else logits
        stages.append(Stage(
            names=tuple(g["call"].name for g in group), title=title, detail=detail, kind=kind,
            in_shape=tuple(first["call"].inputs.shape[1:]) if first["call"].inputs is not None else (),
            out_shape=tuple(last["call"].output.shape[1:]) if last["call"].output is not None else (),
            params=sum(g["params"] for g in group), count=count, features=features,
            branches=max(g["branches"] for g in group), after=_gap(last["call"].output, following),
            block=_representative(group, calls),
        ))
    return stages


def _representative(group: list[dict], calls):
    """The module the inset draws: the first whose shortcut is not the identity, else the first."""
    modules = [g["call"] for g in group]
    for call in modules:
        if getattr(call.module, "use_skip", False) or not isinstance(getattr(call.module, "shortcut", nn.Identity()),
                                                                    nn.Identity):
            return (call, calls, group)
    return (modules[0], calls, group)


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


def _shape(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return "×".join(map(str, shape))
    if len(shape) == 2:
        return f"{shape[0]} tokens×{shape[1]}"
    return " × ".join(map(str, shape))


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
        canvas = FigureCanvasAgg(self.figure)
        canvas.draw()
        return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


BOX_H, GAP = 0.56, 0.42


def _main_flow(c: _Canvas, stages: list[Stage], x: float, w: float, top: float, num_classes: int | None):
    cx = x + w / 2
    y = top
    first = stages[0]
    c.text(cx, y + 0.12, f"input {_shape(first.in_shape)}", ha="center", va="center", fontsize=10, color="#222")
    y += 0.26
    for stage in stages:
        c.arrow((cx, y), (cx, y + GAP - 0.26 + 0.22))
        y += GAP - 0.26 + 0.22
        c.box(x, y, w, BOX_H, _colour(stage), stage.title, stage.detail, right=_params(stage.params))
        y += BOX_H
        label = _shape(stage.out_shape) + (f" → {stage.after}" if stage.after else "")
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

def _child_words(module: nn.Module, limit=30) -> str:
    return _compact([w for w in map(_leaf, _leaves(module)) if w], limit)


def _inset_residual(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls, group = stage.block
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
        if _is_se(child):
            y = _se_path(c, cx, y, x + 2.9, child, calls.get(f"{call.name}.{name}"))
        else:
            words = _child_words(child)
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
           fontsize=7.5, color=SKIP,
           ha="left", va="center")
    y += 0.13
    for name, child in after:
        c.arrow((cx, y), (cx, y + 0.16))
        y += 0.16
        c.small_box(cx, y, bw, bh * 0.85, "white", _child_words(child))
        y += bh * 0.85
    c.arrow((cx, y), (cx, y + 0.2))
    y += 0.2
    c.text(cx, y + 0.1, "out", ha="center", va="center", fontsize=9, style="italic")
    return y + 0.25 - top


def _shortcut_set(module: nn.Module, calls) -> str:
    """Every kind of shortcut that blocks of this class have in the model ("identity or conv 1x1 /2 · BN")."""
    same = [records[0].module for records in calls.values() if type(records[0].module) is type(module)]
    return " or ".join(dict.fromkeys(_shortcut_words(m) for m in same))


def _se_path(c: _Canvas, cx: float, y: float, side_x: float, se: nn.Module, se_calls) -> float:
    """The squeeze -> FC -> FC -> sigmoid path beside the main line, back into a "×" node."""
    channels = se.fc1.in_channels if isinstance(se.fc1, nn.Conv2d) else se.fc1.in_features
    reduced = se.fc1.out_channels if isinstance(se.fc1, nn.Conv2d) else se.fc1.out_features
    act = _leaf(se.act) if hasattr(se, "act") else ""
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
    call, calls, _ = stage.block
    branches = _concat_branches(call.name, call, calls)
    cx = x + w / 2
    y = top
    c.text(cx, y + 0.1, f"in {_shape(tuple(call.inputs.shape[1:]))}", ha="center", va="center", fontsize=9)
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
            words = _child_words(part).split(" · ")[0]
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
    c.text(cx, y + 0.1, f"out {_shape(tuple(call.output.shape[1:]))}", ha="center", va="center", fontsize=9)
    return y + 0.25 - top


def _inset_dense(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls, _ = stage.block
    layers = list(call.module.named_children())
    cx, y = x + 1.7, top
    channels = call.inputs.shape[1]
    c.text(cx, y + 0.1, f"in: {channels} channels", ha="center", va="center", fontsize=9)
    y += 0.22
    shown = layers[:3]
    for index, (name, layer) in enumerate(shown):
        record = calls[f"{call.name}.{name}"][0]
        parts = " → ".join(_child_words(part, 40).replace(" · ", "-") for part in layer.children())
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
    call, calls, _ = stage.block
    model_units = [c for c in calls.values() if c and c[0].name.rsplit(".", 1)[0] == call.name.rsplit(".", 1)[0]]
    for records in model_units:
        record = records[0]
        if record.name != call.name and record.output is not None and record.output.dim() == 4 \
                and record.output.shape[1] < record.inputs.shape[1]:
            return _child_words(record.module, 60) + f" ({record.inputs.shape[1]}→{record.output.shape[1]} ch)"
    return ""


def _inset_mixer(c: _Canvas, x: float, w: float, top: float, stage: Stage) -> float:
    call, calls, _ = stage.block
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
        if isinstance(child, nn.Sequential) or _has_children(child):
            linears = [m for m in child.modules() if isinstance(m, nn.Linear)]
            size = "→".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears]) if linears else ""
            if "token" in name:
                words = f"token-mixing MLP ({size})\nacross the {tokens} patches, per channel"
            elif "channel" in name:
                words = f"channel-mixing MLP ({size})\nwithin each patch"
            else:
                words = _child_words(child)
            c.small_box(cx, y, bw, 0.44, COLOURS["token_mlp"], words, size=8)
            y += 0.44
            c.arrow((cx, y), (cx, y + 0.16))
            y += 0.16 + 0.13
            c.node(cx, y, "+")
            c.bypass(cx, split, y, cx - bw / 2 - 0.12)
            y += 0.13
            split = y
        else:
            c.small_box(cx, y, bw * 0.7, 0.28, "white", _leaf(child) or type(child).__name__, size=8)
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
        call = stage.block[0]
        n = sum(1 for m in call.module.children() if not isinstance(m, nn.Identity))
        se = any(_is_se(m) for m in call.module.modules())
        title = f"inside one {_humanise(type(call.module).__name__)}" + (" (with squeeze-excite)" if se else "")
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
    c.text(WIDTH_IN / 2, 0.32, f"{name}  ·  " + (f"{total / 1e6:.2f} M" if total >= 10_000 else f"{total:,}") + " parameters", ha="center", va="center",
           fontsize=14, weight="bold")
    if insets:
        flow_x, flow_w = 0.25, 4.35
    else:
        flow_x, flow_w = (WIDTH_IN - 5.0) / 2, 5.0
    if stages:
        _main_flow(c, stages, flow_x, flow_w, title_h, num_classes)
    y = title_h
    for stage, title, draw, estimate in insets:
        x, w = 4.95, WIDTH_IN - 4.95 - 0.15
        c.text(x + 0.05, y + 0.12, title, fontsize=10.5, weight="bold", va="center")
        used = draw(c, x, w, y + 0.35, stage)
        c.ax.add_patch(FancyBboxPatch((x - 0.1, y - 0.08), w + 0.15, used + 0.5, boxstyle="round,pad=0,rounding_size=0.1",
                                      facecolor="none", edgecolor=_colour(stage), linewidth=2.0))
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
