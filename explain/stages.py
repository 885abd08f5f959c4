"""A model traced into its stages: what the architecture diagram draws and Look inside shows, found once.

One forward pass of a fixed random image is traced with forward hooks: every module's input and output
shapes, and its own parameters. The units are the model's top-level children, and the children of a
top-level ``nn.Sequential`` that holds blocks (so ``stem``, ``blocks.3``, ``head``); consecutive units of the
same kind and output shape are grouped into one stage ("3 x Basic block"). Characteristic blocks are
recognised by structure and by the trace, not by architecture name: a ``shortcut`` child or ``use_skip``
(residual), outputs that are the concatenation of the children's outputs (Inception branches), layers whose
output starts with their input (dense concatenation), a sigmoid ``gate`` with two FC layers
(squeeze-and-excitation), ``token``/``channel`` MLP children (MLP-Mixer).

``diagram_facts`` returns the stages; ``stage_label`` and ``shape_text`` name a stage and a shape the same way
in the diagram, in Look inside and in the probes; ``module_words`` describes a module in a few words.
"""
from __future__ import annotations

import re
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import torch
import torch.nn as nn

from .common import model_lock

__all__ = ["Stage", "Call", "Block", "diagram_facts", "stage_label", "shape_text", "first_tensor", "forward_hooks",
           "has_children", "is_squeeze_excite", "child_outputs", "concatenated_children", "leaf_words",
           "module_words", "humanise", "shortcut_words"]


@dataclass
class Call:
    """One module's forward call in the trace: its dotted name, the module, its first input and output tensors."""

    name: str
    module: nn.Module
    inputs: torch.Tensor | None
    output: torch.Tensor | None


class Block(NamedTuple):
    """The representative unit of a stage, with the whole trace, so a drawing can look inside it."""

    call: Call
    calls: dict[str, list[Call]]    # every module's calls, by dotted name


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
    block: Block | None = field(default=None, compare=False, repr=False)  # a representative unit, for an inset


def stage_label(stage: Stage) -> str:
    """A stage's name everywhere: its modules and its box title ("blocks.0–2 · 3 x Basic block")."""
    first, last = stage.names[0] or "model", stage.names[-1] or "model"
    if first == last:
        where = first
    else:
        head, _, tail = last.rpartition(".")
        where = f"{first}–{tail}" if head and first.startswith(head + ".") else f"{first}–{last}"
    return f"{where} · {stage.title}"


def shape_text(shape) -> str:
    """C×H×W for a map, tokens×C for tokens, the length for a vector."""
    shape = tuple(shape)
    if len(shape) == 2:
        return f"{shape[0]} tokens×{shape[1]}"
    return "×".join(map(str, shape))


# ---------------------------------------------------------------------------------------------- tracing

def first_tensor(value):
    """The first tensor in a module's input or output (a tensor, or tuples and lists of them); None if none."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((t for t in map(first_tensor, value) if t is not None), None)
    return None


@contextmanager
def forward_hooks(modules: dict[str, nn.Module], record):
    """Call ``record(name, module, inputs, output)`` after every forward call of each named module; the hooks
    are removed on leaving. Hold ``model_lock`` around it: another thread's pass would be recorded too."""
    with ExitStack() as stack:
        for name, module in modules.items():
            stack.callback(module.register_forward_hook(partial(record, name)).remove)
        yield


def has_children(module: nn.Module) -> bool:
    """True for a container; a leaf (conv, BN, activation...) has no children."""
    return next(module.children(), None) is not None


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children; a top-level Sequential (or ModuleList) of blocks is opened one level."""
    units = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and any(has_children(c) for c in child.children()):
            units += [(f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children()]
        else:
            units.append((name, child))
    return units or [("", model)]


def _trace(model: nn.Module, image_size: int):
    """Run one forward pass with every module hooked: (unit calls in order, all calls by name, logits)."""
    calls: dict[str, list[Call]] = {}
    order: list[Call] = []
    unit_names = {name for name, _ in _units(model)}

    def record(name, module, inputs, output):
        call = Call(name, module, first_tensor(inputs), first_tensor(output))
        calls.setdefault(name, []).append(call)
        if name in unit_names:
            order.append(call)

    try:
        reference = next(model.parameters())
        device, dtype = reference.device, reference.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    # A fixed random image, not zeros: with zeros every activation of a bias-free network is zero and the
    # concatenation checks below could not tell a copied input from a computed one.
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, image_size, image_size, generator=generator).to(device, dtype)
    with model_lock(model), forward_hooks(dict(model.named_modules()), record):
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                logits = model(x)
        finally:
            model.train(was_training)
    return order, calls, first_tensor(logits)


# ------------------------------------------------------------------------------------- recognising blocks

def is_squeeze_excite(module: nn.Module) -> bool:
    """Squeeze-and-excitation by structure: a sigmoid ``gate`` after two FC (1x1 conv or linear) layers."""
    return (isinstance(getattr(module, "gate", None), nn.Sigmoid)
            and isinstance(getattr(module, "fc1", None), (nn.Conv2d, nn.Linear))
            and isinstance(getattr(module, "fc2", None), (nn.Conv2d, nn.Linear)))


def _copies_input(call: Call) -> bool:
    """True if the output is the input with new channels concatenated after it (a dense layer)."""
    x, y = call.inputs, call.output
    if x is None or y is None or x.dim() != 4 or y.dim() != 4 or y.shape[1] <= x.shape[1]:
        return False
    return y.shape[2:] == x.shape[2:] and torch.equal(y[:, : x.shape[1]], x)


def child_outputs(call: Call, calls: dict[str, list[Call]]) -> dict[str, torch.Tensor | None]:
    """The first output of each child of the traced ``call``'s module, by the child's own name."""
    return {n: calls[f"{call.name}.{n}"][0].output for n, _ in call.module.named_children()
            if f"{call.name}.{n}" in calls}


def concatenated_children(module: nn.Module, outputs: dict, total) -> list[tuple[str, nn.Module]]:
    """The children of ``module`` whose ``outputs`` (by child name), concatenated along channels, are its output
    ``total`` (an Inception module's branches); [] when they are not."""
    children = [(n, c) for n, c in module.named_children() if n in outputs]
    outs = [outputs[n] for n, _ in children]
    if len(outs) < 2 or total is None or total.dim() != 4:
        return []
    if any(o is None or o.dim() != 4 or o.shape[2:] != total.shape[2:] for o in outs):
        return []
    if sum(o.shape[1] for o in outs) != total.shape[1]:
        return []
    return children if torch.equal(torch.cat(outs, 1), total) else []


def _features(call: Call, calls) -> tuple[frozenset, int]:
    module = call.module
    found = set()
    if isinstance(getattr(module, "shortcut", None), nn.Module) or getattr(module, "use_skip", False):
        found.add("residual")
    names = [n for n, _ in module.named_children()]
    if any("token" in n for n in names) and any("channel" in n for n in names):
        found |= {"token_mlp", "channel_mlp", "residual"}
    if any(is_squeeze_excite(m) for m in module.modules()):
        found.add("se")
    branches = concatenated_children(module, child_outputs(call, calls), call.output)
    if branches:
        found |= {"inception", "concat"}
    layers = [f"{call.name}.{n}" for n in names]
    if _copies_input(call) or (layers and all(n in calls and _copies_input(calls[n][0]) for n in layers)):
        found |= {"dense", "concat"}
    return frozenset(found), len(branches)


# ------------------------------------------------------------------------------------------- describing

_ACTIVATIONS = {nn.ReLU: "ReLU", nn.SiLU: "swish", nn.GELU: "GELU", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh",
                nn.LeakyReLU: "leaky ReLU", nn.ReLU6: "ReLU6", nn.Hardswish: "hard swish"}


def _pair(value) -> int:
    return value[0] if isinstance(value, (tuple, list)) else value


def leaf_words(module: nn.Module) -> str | None:
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
    return humanise(type(module).__name__)


def _leaves(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if not has_children(m)]


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


def module_words(module: nn.Module, limit: int = 34) -> str:
    """The words of a module's leaves in order ("conv 3x3 · BN · ReLU"), shortened past ``limit`` characters."""
    return _compact([w for w in map(leaf_words, _leaves(module)) if w], limit)


def humanise(class_name: str) -> str:
    """A class name as words, acronyms kept: "BasicBlock" -> "Basic block"."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", class_name).split()
    return " ".join([words[0]] + [w if w.isupper() or sum(c.isupper() for c in w) > 1 else w.lower()
                                  for w in words[1:]]) if words else class_name


def _describe(module: nn.Module) -> str:
    """The box title of one unit: its leaves for a simple unit, its class for a composite block."""
    if not has_children(module) or all(not has_children(c) for c in module.children()):
        return module_words(module) or humanise(type(module).__name__)
    if type(module) in (nn.Sequential, nn.ModuleList):  # a plain stack: its parts, one word each
        parts = []
        for child in module.children():
            words = [w for w in map(leaf_words, _leaves(child)) if w]
            parts.append(next((w for w in words if w.split()[0] in ("conv", "depthwise", "FC", "patch")),
                              words[0] if words else ""))
        return _compact([p for p in parts if p])
    return humanise(type(module).__name__)


def shortcut_words(module: nn.Module) -> str:
    """What a residual block's ``shortcut`` does ("identity", "conv 1x1 /2 · BN")."""
    shortcut = getattr(module, "shortcut", None)
    if shortcut is None or isinstance(shortcut, nn.Identity):
        return "identity"
    return module_words(shortcut)


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


def _pooled_inside(call: Call, calls) -> str:
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


def _unit_info(call: Call, calls) -> dict:
    features, branches = _features(call, calls)
    title = _describe(call.module)
    pooled = _pooled_inside(call, calls)
    detail = f"after {pooled}" if pooled else ""
    if has_children(call.module) and not features and any(has_children(c) for c in call.module.children()) \
            and type(call.module) not in (nn.Sequential, nn.ModuleList):
        detail = module_words(call.module, 70)
    return dict(call=call, title=title, detail=detail, features=features, branches=branches,
                key=(type(call.module), title, tuple(call.output.shape[1:]) if call.output is not None else ()))


def diagram_facts(model: nn.Module, image_size: int = 32) -> list[Stage]:
    """The stages of ``model`` (what the diagram draws), from one traced forward pass of a 3 x S x S image.

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
            shortcuts = [shortcut_words(g["call"].module) for g in group]
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


def _representative(group: list[dict], calls) -> Block:
    """The unit an inset draws: the first whose shortcut is not the identity, else the first."""
    for call in (g["call"] for g in group):
        if getattr(call.module, "use_skip", False) or not isinstance(getattr(call.module, "shortcut", nn.Identity()),
                                                                    nn.Identity):
            return Block(call, calls)
    return Block(group[0]["call"], calls)
