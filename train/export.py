"""The finished checkpoint: ``model.safetensors``, ``config.json``, ``log.jsonl`` and ``curves.png`` in ``cfg.out``.

``config.json`` carries what the weights need to be used and judged (class names, normalisation, validation
scores and split) and how they were made (recipe, hardware, code version, every stage and the command that
reproduces them: train/lineage.py).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from architectures import save_pretrained
from architectures.checkpoint import atomic_write_bytes
from .config import TrainConfig
from .data import ImageSet, describe_split
from .hub import push_to_hub
from .lineage import reproducing_command, with_earlier_stages
from .plots import plot_curves

# The settings config.json lists as the checkpoint's recipe.
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "optimizer", "label_smoothing", "warmup_epochs",
                 "ema_decay", "swa_epochs", "swa_lr", "translate", "cutout", "cutmix", "seed", "split_seed",
                 "val_fraction", "init_from", "teacher", "teacher_weight")


@dataclass
class FinishedRun:
    """What a finished run hands to the export, besides its settings."""

    model: nn.Module               # the weights the checkpoint keeps (train.trainer.kept_weights), rounded as stored
    scores: dict                   # val_accuracy, val_loss and val_accuracy_tta of those weights
    image_set: ImageSet
    val_images: int                # size of the held-out split
    mean: torch.Tensor             # the normalisation the weights were trained with
    std: torch.Tensor
    history: list[dict]            # this stage's log, a record per epoch
    train_seconds: float
    hardware: str
    bf16: bool
    code_version: str              # the git commit the run started from
    parent: dict | None            # what a further stage keeps of its parent (train.lineage.read_parent)
    teachers: list[dict] | None    # the checkpoints that taught it (train.distill.Teacher.record)


def export(cfg: TrainConfig, run: FinishedRun) -> dict:
    """Write the finished checkpoint (weights, config, log, curves) to ``cfg.out``; returns its config."""
    out_dir = Path(cfg.out)
    model = run.model.to(memory_format=torch.contiguous_format).cpu().eval()
    config = {
        "display_name": type(model).display_name,
        "class_names": run.image_set.class_names,
        "image_size": cfg.image_size,
        "mean": [round(v, 6) for v in run.mean.tolist()],
        "std": [round(v, 6) for v in run.std.tolist()],
        "val_accuracy": round(run.scores["val_accuracy"], 4),
        "val_loss": round(run.scores["val_loss"], 4),
        # What the app serves: test-time augmentation over shifted and mirrored copies (train.augment.served_probs).
        "val_accuracy_tta": round(run.scores["val_accuracy_tta"], 4),
        "val_split": describe_split(run.image_set, cfg.val_fraction, cfg.split_seed, run.val_images),
        "epochs": cfg.epochs,
        "train_seconds": round(run.train_seconds, 1),
        "hardware": run.hardware,
        "precision": "bf16 autocast" if run.bf16 else "fp32",
        "dataset": run.image_set.source,
        "git_commit": run.code_version,
        "torch_version": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "recipe": {k: getattr(cfg, k) for k in RECIPE_FIELDS},
        "command": reproducing_command(cfg),
    }
    if run.teachers:
        # Which weights taught this stage: a later checkpoint in the same folder is another teacher.
        config["teachers"] = run.teachers
    config, history = with_earlier_stages(config, run.history, run.parent)
    save_pretrained(model, out_dir, config, cfg.weights_dtype)
    atomic_write_bytes(out_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    plot_curves(history, out_dir / "curves.png", title=f"{config['display_name']} on {run.image_set.source}")
    print(f"{cfg.arch}: val accuracy {config['val_accuracy']:.4f} after {config['epochs']} epochs, "
          f"{config['train_seconds'] / 60:.1f} min; saved to {out_dir}")
    if cfg.push_to_hub:
        push_to_hub(out_dir, cfg.push_to_hub)
    return config
