"""Look inside a network: what each stage of the diagram makes of one image, from one forward pass.

The stages are the diagram's boxes (``explain.stages.diagram_facts``), under the same names and in forward
order; a hook on the last module of each box reads its output. Nothing here is written per architecture: the
extras key off what the diagram recognised (squeeze-excite, Inception branches, dense concatenation,
token mixing) and off module types (the first ``nn.Conv2d`` that reads the three colour channels).

- ``stage_sentence``: a sentence or two of what happens in a stage (``stage_label`` and ``shape_text``, its
  name and its output's shape, are ``explain.stages``'s, here too for the callers of this view);
- ``stage_outputs`` / ``pooled_features``: each stage's output for a batch, and its global average (the
  features the linear probes of ``tools.probes`` read);
- ``look_inside(model, x, stages, target)``: each stage's most informative channels (activation times the
  gradient of the target class's score, summed over positions: each channel's first-order share of that
  score), pooled features and extras, one ``StageView`` per stage; ``draw_stage`` draws one as a picture
  with numpy colour tables and PIL, no matplotlib per request;
- ``load_probes`` / ``probe_predictions``: the probes stored beside a checkpoint, applied to one image.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont
from safetensors import SafetensorError
from safetensors.torch import load_file

from .common import check_one_image, model_lock, unit_range
from .figures import colour_table
from .stages import (
    Stage,
    concatenated_children,
    first_tensor,
    forward_hooks,
    is_squeeze_excite,
    module_words,
    shape_text,
    stage_label,
)

__all__ = ["StageView", "stage_label", "shape_text", "stage_sentence", "stage_outputs", "pooled_features",
           "look_inside", "draw_stage", "first_colour_conv", "PROBES_JSON", "PROBES_WEIGHTS", "load_probes",
           "probe_predictions", "TILES", "TILE", "SELECTION"]

TILES = 8          # channels drawn per stage
TILE = 128         # pixels per channel tile
SELECTION = ("activation × gradient: each channel's activation times the gradient of the predicted class's "
             "score, summed over its positions (its first-order share of that score); the 8 largest are drawn, "
             "each scaled to its own range (yellow = most active)")
PROBES_JSON, PROBES_WEIGHTS = "probes.json", "probes.safetensors"


# -------------------------------------------------------------------------------------------------- words

def _change(before: int, after: int, what: str) -> str:
    if after == before:
        return f"{what} stay {after}"
    if after == 2 * before:
        return f"{what} double ({before}→{after})"
    if 2 * after == before:
        return f"{what} halve ({before}→{after})"
    return f"{what} {'grow' if after > before else 'shrink'} {before}→{after}"


def stage_sentence(stage: Stage, class_count: int | None = None) -> str:
    """One or two plain sentences of what happens in ``stage``, from its shapes and recognised features."""
    i, o, f, title = tuple(stage.in_shape), tuple(stage.out_shape), stage.features, stage.title
    said = []
    if stage.kind == "classifier":
        source = f"{i[0]} maps" if len(i) == 3 else f"{i[-1]} numbers"
        said.append(f"The {source} are turned into {o[0] if o else class_count} class scores: this is where the "
                    "network decides.")
    elif "inception" in f:
        said.append(f"{stage.branches} branches (different kernel sizes and a pooling path) look at the same input "
                    f"side by side; their maps are stacked into {o[0]} channels.")
    elif "dense" in f:
        said.append(f"Every layer adds new channels and keeps all the earlier ones (concatenation): channels grow "
                    f"{i[0]}→{o[0]}.")
    elif "token_mlp" in f:
        said.append(f"Token mixing: an MLP mixes the {o[0]} patches with each other (one weight per pair of "
                    "patches, not a small sliding window), then a channel MLP mixes within each patch.")
    elif "patch" in title:
        said.append(f"The image is cut into {o[1]}×{o[2]} patches; each becomes one vector of {o[0]} numbers.")
    elif len(i) == 3 and len(o) == 3:
        space = "spatial size stays" if o[1:] == i[1:] else (
            "spatial size halves" if 2 * o[1] == i[1] else "spatial size changes")
        said.append(f"{space.capitalize()} ({i[1]}×{i[2]}→{o[1]}×{o[2]}), {_change(i[0], o[0], 'channels')}.")
    elif len(o) == 2 and len(i) == 2:
        said.append(f"Applied to each of the {o[0]} tokens on its own.")
    if "max pool" in title:
        said.append("Max pooling keeps the strongest response in each window.")
    elif "conv 1x1" in title and "conv 3x3" not in title and stage.kind != "classifier":
        said.append("Its 1x1 convolutions mix the channels at each pixel without looking at the neighbours.")
    if "residual" in f:
        said.append("The skip adds the block's input back, so the block only learns a correction.")
    if "se" in f:
        said.append("Squeeze-excite rescales each channel by a weight computed from the whole image (bars below).")
    if stage.kind == "stem" and not said[1:]:
        said.append("It sees raw pixels: its maps respond to edges, colours and simple textures.")
    return " ".join(said)


# ---------------------------------------------------------------------------------------- forward pass

@contextmanager
def _hooked(modules: dict[str, nn.Module], keep_grad: bool = False):
    """Yield a dict that fills with each named module's first output of the forward pass; hooks removed after."""
    found: dict[str, torch.Tensor] = {}

    def record(key, module, inputs, output):
        tensor = first_tensor(output)
        if key not in found and tensor is not None:
            if keep_grad and tensor.requires_grad:
                tensor.retain_grad()
            found[key] = tensor

    with forward_hooks(modules, record):
        yield found


def _stage_modules(model: nn.Module, stages: list[Stage]) -> dict[str, nn.Module]:
    return {f"stage{i}": model.get_submodule(stage.names[-1]) for i, stage in enumerate(stages)}


def pool(output: torch.Tensor) -> torch.Tensor:
    """Global average over positions: B x C x H x W and B x tokens x C give B x C; B x F stays."""
    if output.dim() == 4:
        return output.float().mean((2, 3))
    if output.dim() == 3:
        return output.float().mean(1)
    return output.float().flatten(1)


@torch.no_grad()
def pooled_features(model: nn.Module, stages: list[Stage], x: torch.Tensor) -> list[torch.Tensor]:
    """Each stage's globally pooled output for the batch ``x`` (normalised): one B x C tensor per stage."""
    return [pool(out) for out in stage_outputs(model, stages, x)]


def stage_outputs(model: nn.Module, stages: list[Stage], x: torch.Tensor) -> list[torch.Tensor]:
    """Each stage's output for the batch ``x``, in forward order, from one forward pass."""
    modules = _stage_modules(model, stages)
    with model_lock(model), _hooked(modules) as found:
        model(x)
    missing = [stage_label(s) for i, s in enumerate(stages) if f"stage{i}" not in found]
    if missing:
        raise ValueError(f"these stages did not run in the forward pass: {', '.join(missing)}")
    return [found[f"stage{i}"] for i in range(len(stages))]


# ------------------------------------------------------------------------------------------- one image

@dataclass
class StageView:
    """What one stage made of one image."""
    stage: Stage
    label: str
    shape: str
    sentence: str
    channels: list[int]                       # the drawn channels, most informative first
    maps: np.ndarray | None                   # len(channels) x h x w, or None for a vector output
    values: np.ndarray | None = None          # a vector output (the classifier's probabilities)
    pooled: np.ndarray | None = None          # the globally pooled output (a probe's input)
    excitation: np.ndarray | None = None      # the stage's last SE gate, C values in (0, 1)
    branches: list[tuple[str, list[int], np.ndarray]] = field(default_factory=list)  # (words, channels, maps)
    growth: list[int] = field(default_factory=list)   # channels after each layer of a dense block
    filters: np.ndarray | None = None         # first colour convolution's filters, N x k x k x 3 in [0, 1]
    token_weights: np.ndarray | None = None   # token-mixing weights reshaped to the patch grid, N x g x g
    probe: tuple[str, float] | None = None    # this stage's linear probe's class and probability


def first_colour_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` that reads the three colour channels, with its dotted name."""
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3
                 and m.groups == 1), None)


def _filters(conv: nn.Conv2d, count: int = 16) -> np.ndarray:
    """The filters with the largest norms, each scaled symmetrically to [0, 1] (grey = 0): N x k x k x 3."""
    weight = conv.weight.detach().float().cpu()
    order = weight.flatten(1).norm(dim=1).argsort(descending=True)[:count]
    chosen = weight[order].permute(0, 2, 3, 1).numpy()
    scale = np.abs(chosen).reshape(len(chosen), -1).max(1).reshape(-1, 1, 1, 1) + 1e-12
    return 0.5 + 0.5 * chosen / scale


def _token_weights(block: nn.Module, tokens: int, count: int = 8) -> np.ndarray | None:
    """The first linear layer of a block's token-mixing child: its strongest rows, each on the patch grid."""
    side = math.isqrt(tokens)
    for name, child in block.named_children():
        linear = next((m for m in child.modules() if isinstance(m, nn.Linear)), None) if "token" in name else None
        if linear is not None and linear.in_features == tokens and side * side == tokens:
            weight = linear.weight.detach().float().cpu()
            order = weight.norm(dim=1).argsort(descending=True)[:count]
            return weight[order].reshape(-1, side, side).numpy()
    return None


def _grid_maps(output: torch.Tensor) -> torch.Tensor:
    """One image's output as C x h x w maps: a map as is; tokens on their square grid (else one row)."""
    if output.dim() == 4:
        return output[0]
    tokens, channels = output.shape[1], output.shape[2]
    side = math.isqrt(tokens)
    shape = (side, side) if side * side == tokens else (1, tokens)
    return output[0].transpose(0, 1).reshape(channels, *shape)


def _top_channels(maps: torch.Tensor, grads: torch.Tensor | None, count: int, among=None) -> list[int]:
    """The ``count`` channels with the largest activation × gradient (mean activation without a gradient)."""
    score = (maps * grads).sum((1, 2)) if grads is not None else maps.mean((1, 2))
    idx = torch.arange(len(score)) if among is None else torch.as_tensor(list(among))
    order = score[idx].argsort(descending=True)[:count]
    return idx[order].tolist()


def _branch_channels(module: nn.Module, outputs: dict[str, torch.Tensor], total: torch.Tensor) -> list:
    """(words, channel range) of each child of ``module`` whose outputs, concatenated, are ``total`` (an
    Inception module's branches, as the diagram recognises them); [] when they are not."""
    ranges, start = [], 0
    for name, child in concatenated_children(module, outputs, total):
        words = [w for w in module_words(child, 60).split(" · ") if w.split()[0] in ("conv", "max", "avg", "depthwise")]
        width = outputs[name].shape[1]
        ranges.append((" → ".join(words) or module_words(child), range(start, start + width)))
        start += width
    return ranges


def look_inside(model: nn.Module, x: torch.Tensor, stages: list[Stage], target: int,
                tiles: int = TILES) -> list[StageView]:
    """One forward and one backward pass of one image (1 x 3 x H x W, normalised): a ``StageView`` per stage.

    Channels are ranked by activation × gradient of class ``target``'s score; where a stage's output does
    not reach the score through a gradient, by mean activation.
    """
    check_one_image(x)
    modules = _stage_modules(model, stages)
    extras: dict[str, nn.Module] = {}
    for i, stage in enumerate(stages):
        last = model.get_submodule(stage.names[-1])
        if "se" in stage.features:
            gates = [m.gate for name in stage.names for m in model.get_submodule(name).modules()
                     if is_squeeze_excite(m)]
            extras[f"{i}:se"] = gates[-1]
        if "inception" in stage.features:
            extras.update({f"{i}:branch:{n}": c for n, c in last.named_children()})
        if "dense" in stage.features:
            extras.update({f"{i}:layer:{j}": c for j, (_, c) in enumerate(last.named_children())})
    with model_lock(model), torch.enable_grad(), _hooked({**modules, **extras}, keep_grad=True) as found:
        x = x.detach().clone().requires_grad_(True)
        logits = first_tensor(model(x))
        outputs = [found[f"stage{i}"] for i in range(len(stages))]
        wanted = [o for o in outputs if o.requires_grad]
        grads = dict(zip(map(id, wanted), torch.autograd.grad(logits[0, target], wanted, allow_unused=True)))
    colour = first_colour_conv(model)
    views = []
    for i, (stage, out) in enumerate(zip(stages, outputs)):
        grad = grads.get(id(out))
        view = StageView(stage, stage_label(stage), shape_text(out.shape[1:]), stage_sentence(stage), [], None,
                         pooled=pool(out.detach())[0].cpu().numpy())
        if out.dim() == 2:
            values = torch.softmax(out.detach().float(), 1) if stage.kind == "classifier" else out.detach().float()
            view.values = values[0].cpu().numpy()
        else:
            maps = _grid_maps(out.detach().float())
            g = None if grad is None else _grid_maps(grad.float())
            local = {k.split(":", 2)[2]: v for k, v in found.items() if k.startswith(f"{i}:branch:")}
            branch_ranges = _branch_channels(model.get_submodule(stage.names[-1]), local, out) if local else []
            if branch_ranges:
                per = max(1, tiles // 2)
                for words, channels in branch_ranges:
                    chosen = _top_channels(maps, g, per, channels)
                    view.branches.append((f"{words} ({len(channels)} ch)", chosen, maps[chosen].cpu().numpy()))
            view.channels = _top_channels(maps, g, tiles)
            view.maps = maps[view.channels].cpu().numpy()
        if f"{i}:se" in found:
            view.excitation = found[f"{i}:se"].detach().float().flatten().cpu().numpy()
        view.growth = [int(found[k].shape[1]) for k in sorted((k for k in found if k.startswith(f"{i}:layer:")),
                                                              key=lambda k: int(k.rsplit(":", 1)[1]))]
        if colour is not None and any(colour[0] == n or colour[0].startswith(n + ".") or not n for n in stage.names):
            view.filters = _filters(colour[1])
        if "token_mlp" in stage.features and out.dim() == 3:
            view.token_weights = _token_weights(model.get_submodule(stage.names[0]), out.shape[1])
        views.append(view)
    return views


# ---------------------------------------------------------------------------------------------- probes

def load_probes(folder, weights_sha256: str | None = None) -> dict | None:
    """The linear probes saved beside a checkpoint by ``tools.probes``: {"stages": [...], "weights": {...}};
    None when there are none, they are unreadable, or they were fitted on other weights."""
    folder = Path(folder)
    try:
        facts = json.loads((folder / PROBES_JSON).read_text())
        weights = load_file(folder / PROBES_WEIGHTS) if (folder / PROBES_WEIGHTS).is_file() else {}
    except (OSError, ValueError, SafetensorError):
        return None
    if weights_sha256 is not None and facts.get("weights_sha256") != weights_sha256:
        return None
    return {**facts, "weights": weights}


def probe_predictions(probes: dict | None, views: list[StageView], class_names: list[str]) -> None:
    """Set each view's ``probe`` to its stage's probe's (class, probability) on this image, where the stored
    probes were fitted on these very stages (same labels, same feature sizes)."""
    if not probes or [s["stage"] for s in probes.get("stages", [])] != [v.label for v in views]:
        return
    weights = probes["weights"]
    for i, view in enumerate(views):
        key = f"stage{i}"
        if f"{key}.coef" not in weights or view.pooled is None:
            continue
        coef, intercept = weights[f"{key}.coef"].numpy(), weights[f"{key}.intercept"].numpy()
        if coef.shape[1] != view.pooled.shape[0]:
            continue
        z = (view.pooled - weights[f"{key}.mean"].numpy()) / weights[f"{key}.scale"].numpy()
        scores = coef @ z + intercept
        p = np.exp(scores - scores.max())
        p /= p.sum()
        view.probe = (class_names[int(p.argmax())], float(p.max()))


# --------------------------------------------------------------------------------------------- drawing

BACKGROUND, INK, MUTED = (255, 255, 255), (34, 34, 34), (96, 96, 96)
GAP, MARGIN, COLUMNS = 8, 10, 4


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


@lru_cache(maxsize=4096)
def _words(text: str, size: int, colour: tuple) -> Image.Image:
    """``text`` drawn once on white: most words of the pictures (channel numbers, class names, headings) recur,
    and rendering glyphs was half the drawing time."""
    left, top, right, bottom = _font(size).getbbox(text)
    picture = Image.new("RGB", (max(1, right), max(1, bottom)), BACKGROUND)
    ImageDraw.Draw(picture).text((0, 0), text, fill=colour, font=_font(size))
    return picture


def _tile(level_map: np.ndarray, side: int, colormap: str = "viridis", symmetric: bool = False) -> Image.Image:
    """A map scaled to its own range (or symmetric about 0) and coloured, ``side`` pixels square."""
    m = np.asarray(level_map, dtype=np.float32)
    if symmetric:
        m = 0.5 + 0.5 * m / (np.abs(m).max() + 1e-12)
    else:
        m = unit_range(m)
    levels = (np.clip(m, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture = Image.fromarray(colour_table(colormap)[levels])
    # Few positions: draw them as blocks, so a 4 x 4 map does not pretend to more detail than it has.
    return picture.resize((side, round(side * m.shape[0] / m.shape[1])),
                          Image.Resampling.NEAREST if max(m.shape) <= 16 else Image.Resampling.BILINEAR)


class _Sheet:
    """A white canvas filled top to bottom: text lines, rows of tiles, bar strips."""

    def __init__(self, width: int):
        self.width, self.items, self.height = width, [], MARGIN

    def text(self, words: str, size: int = 14, colour=INK):
        self.items.append(("text", self.height, (words, size, colour)))
        self.height += size + 6

    def tiles(self, pictures: list[Image.Image], captions: list[str]):
        side = max(p.height for p in pictures)
        self.items.append(("tiles", self.height, (pictures, captions)))
        self.height += side + (18 if any(captions) else 4)

    def bars(self, values: np.ndarray, height: int = 60, labels: list[str] | None = None):
        rows = len(labels) * 18 if labels else height
        self.items.append(("bars", self.height, (np.asarray(values, dtype=np.float32), rows, labels)))
        self.height += rows + 8

    def image(self) -> Image.Image:
        canvas = Image.new("RGB", (self.width, self.height + MARGIN), BACKGROUND)
        draw = ImageDraw.Draw(canvas)
        for kind, y, payload in self.items:
            if kind == "text":
                canvas.paste(_words(*payload), (MARGIN, y))
            elif kind == "tiles":
                x = MARGIN
                for picture, caption in zip(*payload):
                    canvas.paste(picture, (x, y))
                    if caption:
                        canvas.paste(_words(caption, 11, MUTED), (x, y + picture.height + 2))
                    x += picture.width + GAP
            else:
                self._bars(canvas, draw, y, *payload)
        return canvas

    def _bars(self, canvas: Image.Image, draw: ImageDraw.ImageDraw, y: int, values: np.ndarray, rows: int, labels):
        usable = self.width - 2 * MARGIN
        if labels:  # one horizontal bar per label (the classifier's probabilities)
            for k, (label, value) in enumerate(zip(labels, values)):
                top = y + 18 * k
                canvas.paste(_words(label, 12, INK), (MARGIN, top))
                length = int((usable - 150) * float(np.clip(value, 0, 1)))
                draw.rectangle((MARGIN + 100, top + 3, MARGIN + 100 + max(length, 1), top + 14), fill=(68, 1, 84))
                canvas.paste(_words(f"{value:.0%}", 11, MUTED), (MARGIN + 106 + length, top))
            return
        top = float(values.max()) or 1.0
        width = usable / len(values)
        for k, value in enumerate(values):  # vertical bars, one per channel
            h = max(1, int(rows * float(value) / top))
            draw.rectangle((MARGIN + int(k * width), y + rows - h, MARGIN + int((k + 1) * width) - (width > 3),
                            y + rows), fill=(106, 61, 154))


def draw_stage(view: StageView, class_names: list[str] | None = None) -> Image.Image:
    """One stage as one picture: its title, shape and probe, its channels' tiles, then its extras."""
    sheet = _Sheet(2 * MARGIN + COLUMNS * TILE + (COLUMNS - 1) * GAP)
    sheet.text(view.label, 15)
    line = f"output {view.shape}"
    if view.probe is not None:
        line += f"  ·  linear probe: {view.probe[0]} {view.probe[1]:.0%}"
    sheet.text(line, 13, MUTED)
    if view.branches:
        for words, channels, maps in view.branches:
            sheet.text(f"branch {words}", 12, MUTED)
            sheet.tiles([_tile(m, TILE) for m in maps], [f"ch {c}" for c in channels])
    elif view.maps is not None:
        for start in range(0, len(view.channels), COLUMNS):
            chunk = slice(start, start + COLUMNS)
            sheet.tiles([_tile(m, TILE) for m in view.maps[chunk]], [f"ch {c}" for c in view.channels[chunk]])
    if view.values is not None:
        if class_names and len(class_names) == len(view.values):
            order = np.argsort(-view.values)
            sheet.bars(view.values[order], labels=[class_names[k] for k in order])
        else:
            sheet.bars(np.abs(view.values))
    if view.excitation is not None:
        sheet.text(f"squeeze-excite weights of its {len(view.excitation)} channels (0 to 1)", 12, MUTED)
        sheet.bars(view.excitation)
    if view.growth:
        sheet.text("channels after each layer: " + " → ".join(map(str, [view.stage.in_shape[0], *view.growth])),
                   12, MUTED)
    if view.token_weights is not None:
        sheet.text("token-mixing weights of its first block, on the patch grid (red +, blue −)", 12, MUTED)
        side = (sheet.width - 2 * MARGIN - 7 * GAP) // 8
        sheet.tiles([_tile(w, side, "coolwarm", symmetric=True) for w in view.token_weights], [""] * 8)
    if view.filters is not None:
        sheet.text("the first convolution's learned filters, as colour (grey = 0)", 12, MUTED)
        side = (sheet.width - 2 * MARGIN - 7 * GAP) // 8
        pictures = [Image.fromarray((f * 255 + 0.5).astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST)
                    for f in view.filters]
        for start in range(0, len(pictures), 8):
            sheet.tiles(pictures[start:start + 8], [""] * len(pictures[start:start + 8]))
    return sheet.image()
