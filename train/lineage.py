"""Where a checkpoint comes from: its parent (``--init-from``), its stages and the command that makes it again.

A further stage trains on from a parent checkpoint, on the same images with the same held-out split and the
same architecture settings. Its checkpoint records every stage since random weights (``stages``), a log that
continues the parent's epoch numbers, and one ``command`` that runs all the stages in order.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import warnings
from pathlib import Path

import torch

from architectures import CheckpointError, create_model, default_args, load_pretrained
from architectures.checkpoint import validate_arch_args
from .config import TrainConfig
from .distill import split_mismatch
from .recipes import recipe_for
from .state import RESUME_FREE

# Fields the reproducing command does not list as options: those that never change what a run computes,
# and arch, data and epochs, which it always names first. weights_dtype may change on resuming (it only
# matters at export) but does change the stored checkpoint, so the command keeps it.
NOT_IN_COMMAND = (RESUME_FREE - {"weights_dtype"}) | {"arch", "data", "out", "run_dir", "cache_dir", "device",
                                                      "compile", "epochs"}


def parse_arch_args(arch: str, text: str, image_size: int, option: str = "--arch-args ",
                    inherited: bool = False) -> dict:
    """``--arch-args``: a JSON object of ``arch``'s settings, checked as a checkpoint's are, then built and run
    once on the meta device (shapes only, no memory), so a bad value fails before any data is loaded.
    ``inherited``: none given means the ``--init-from`` checkpoint's, checked against the data there."""
    try:
        arch_args = json.loads(text) if text else {}
        validate_arch_args(arch, arch_args)
    except ValueError as error:
        raise ValueError(f"{option}{text}: {error}") from None
    # A model that takes its input size as a setting (MLP-Mixer's patch grid) must be built for the images.
    built_for = {**default_args(arch), **arch_args}.get("image_size", image_size)
    if built_for != image_size and (arch_args or not inherited):
        raise ValueError(f"{arch} is built for {built_for}-pixel images, the data is resized to {image_size}: "
                         f"add --arch-args '{{\"image_size\": {image_size}}}' (and a patch size that divides it)")
    if not arch_args:
        return {}
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-sized layers warn before they fail
            model = create_model(arch, **arch_args)
            if not any(p.numel() for p in model.parameters()):
                raise ValueError("the model has no parameters")
            model.eval()(torch.empty(2, 3, image_size, image_size))
    except Exception as error:  # a constructor or forward pass can fail in any way on a bad setting
        raise ValueError(f"{option}{text}: {type(error).__name__}: {error}") from None
    return arch_args


def load_parent(cfg: TrainConfig, image_set, saved: dict | None) -> tuple[dict | None, dict | None]:
    """A further stage's (``--init-from``) parent: its weights (None when resuming) and what the stage keeps of it.

    A resumed stage finds what it kept of the parent in its saved state (the parent's folder may be
    overwritten by now) and its weights in the state too.
    """
    if not cfg.init_from:
        return None, None
    if saved and "parent" in saved:
        return None, saved["parent"]
    return read_parent(cfg, image_set)


def read_parent(cfg: TrainConfig, image_set) -> tuple[dict, dict]:
    """The checkpoint ``--init-from`` names: its weights, and what the new stage keeps from it.

    A further stage must train on the same images with the same held-out split: otherwise it could train
    on images the parent was validated on, or validate on images the parent trained on.
    """
    try:
        parent = load_pretrained(cfg.init_from)
    except CheckpointError as error:
        raise ValueError(f"--init-from {cfg.init_from}: {error}") from None
    config = parent.config
    differ = split_mismatch(config, cfg.arch, image_set, cfg.image_size, cfg.split_seed, cfg.val_fraction)
    if differ:
        raise ValueError(f"--init-from {cfg.init_from} was trained differently: {'; '.join(differ)}")
    history = []
    log_path = Path(config["_folder"]) / "log.jsonl"
    if log_path.is_file():
        history = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    stages = config.get("stages") or [stage_summary(config)]
    summary = {"arch_args": config.get("arch_args", {}), "mean": config["mean"], "std": config["std"],
               "stages": stages, "history": history}
    return parent.state_dict(), summary


def stage_arch_args(arch: str, requested: dict, parent: dict | None) -> dict:
    """The settings a run builds its model with: a further stage's are its parent's, and asking for others
    is an error (its weights would not fit); a first stage's are the ``--arch-args`` given."""
    if parent is None:
        return requested

    def full(args: dict) -> dict:  # every setting, tuples and lists alike
        return json.loads(json.dumps({**default_args(arch), **args}))

    if requested and full(requested) != full(parent["arch_args"]):
        raise ValueError(f"--arch-args {json.dumps(requested)} differs from the --init-from checkpoint's "
                         f"{json.dumps(parent['arch_args'])}: a further stage keeps its parent's architecture")
    return parent["arch_args"]


def stage_summary(config: dict) -> dict:
    """One training stage as a checkpoint's config records it (with its teachers, if it was distilled)."""
    stage = {key: config.get(key) for key in ("command", "epochs", "train_seconds", "hardware", "precision",
                                              "val_accuracy", "git_commit", "date")}
    if config.get("teachers"):
        stage["teachers"] = config["teachers"]
    return stage


def reproducing_command(cfg: TrainConfig) -> str:
    """``python -m train`` with every setting that differs from the recipe and the defaults, quoted for a
    POSIX shell where it needs to be (``--arch-args '{"width":48}'``)."""
    recipe, defaults = recipe_for(cfg.arch), TrainConfig()
    parts = [f"python -m train --arch {cfg.arch} --data {shlex.quote(cfg.data)} --epochs {cfg.epochs}"]
    for f in dataclasses.fields(cfg):
        if f.name in NOT_IN_COMMAND:
            continue
        value, usual = getattr(cfg, f.name), recipe.get(f.name, getattr(defaults, f.name))
        if value != usual:
            shown = str(value).lower() if isinstance(value, bool) else shlex.quote(str(value))
            parts.append(f"--{f.name.replace('_', '-')} {shown}")
    return " ".join(parts)


def with_earlier_stages(config: dict, history: list[dict], parent: dict | None) -> tuple[dict, list[dict]]:
    """A further stage's config and log, covering every stage since random weights.

    ``epochs``, ``train_seconds`` and ``hardware`` become totals over the stages, ``command`` runs them
    all in order, ``stages`` keeps each one; the log continues the parent's epoch numbers.
    """
    if parent is None:
        return config, history
    stages = parent["stages"] + [stage_summary(config)]
    done = sum(stage["epochs"] for stage in parent["stages"])
    log = parent["history"] + [{**record, "epoch": record["epoch"] + done, "stage": len(stages)} for record in history]
    hardware = " + ".join(f"{stage['hardware']} ({stage['epochs']} epochs)" for stage in stages)
    return {**config, "epochs": done + config["epochs"], "hardware": hardware, "stages": stages,
            "train_seconds": round(sum(stage["train_seconds"] for stage in stages), 1),
            "command": " && ".join(stage["command"] for stage in stages)}, log
