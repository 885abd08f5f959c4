"""``python -m train.evaluate --checkpoint checkpoints/resnet --data PATH``: accuracy, per-class accuracy
and a confusion-matrix PNG.

By default it scores the checkpoint's own fixed validation split of ``--data`` (the split the training
run held out, rebuilt from the split seed and fraction in its config); ``--split all`` scores every image
of ``--data``, for a separate test folder. It gives the accuracy of the model alone and with the
app's test-time augmentation (``train.augment.served_probs``: shifted and mirrored copies averaged); ``--record`` stores
both in a checkpoint folder's ``config.json`` (``val_accuracy``, ``val_accuracy_tta``), so the two
columns of the zoo table come from one float32 evaluation, as the app computes them, rather than from a
bf16 training run's last epoch (they differ by a few hundredths of a point).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from architectures import CheckpointError, load_pretrained
from architectures.checkpoint import CONFIG_NAME, atomic_write_json
from .config import parse_config
from .data import DataError, ImageSet, checkpoint_split, load_images
from .env import pick_device
from .plots import plot_confusion
from .step import evaluate


@dataclass
class EvalConfig:
    checkpoint: str = "checkpoints/resnet"   # checkpoint folder or Hugging Face repo id
    data: str = "cifar10"                    # "cifar10" or a path: ImageFolder dir, .tar, .tar.gz
    split: str = "val"                       # "val": the checkpoint's validation split; "all": every image
    confusion: str = ""                      # confusion-matrix PNG path; "" = confusion.png in the checkpoint folder
    cache_dir: str = "data/cache"            # decoded-image cache, shared with training
    device: str = "auto"                     # "auto", "cpu", "cuda"
    json_out: str = ""                       # also write the results as JSON here
    record: bool = False                     # store both validation figures in the checkpoint's config.json


def run(cfg: EvalConfig) -> dict:
    if cfg.record and (cfg.split != "val" or not Path(cfg.checkpoint).is_dir()):
        raise ValueError("--record stores a validation figure in a local checkpoint folder: "
                         "give a folder and --split val")
    model = load_pretrained(cfg.checkpoint, device=pick_device(cfg.device))
    result = measure(model, cfg)
    if cfg.record:
        record_accuracy(Path(model.config["_folder"]), result["accuracy"], result["accuracy_tta"],
                        result["measured_by"])
    return result


def measure(model, cfg: EvalConfig, image_set: ImageSet | None = None) -> dict:
    """Score a loaded checkpoint (``model.config`` is its config) on ``cfg.data`` and draw its confusion
    matrix; records nothing. ``image_set``: ``cfg.data`` already decoded, for a caller that uses it again."""
    config = model.config
    device = next(model.parameters()).device
    if image_set is None:
        image_set = load_images(cfg.data, config["image_size"], cfg.cache_dir)
    _, val_index = checkpoint_split(config, image_set)
    if cfg.split == "val":
        index = val_index
    elif cfg.split == "all":
        index = torch.arange(len(image_set.labels))
    else:
        raise ValueError(f"--split must be 'val' or 'all', got {cfg.split!r}")
    images, labels = image_set.images[index].to(device), image_set.labels[index].to(device)
    mean, std = torch.tensor(config["mean"], device=device), torch.tensor(config["std"], device=device)
    loss, accuracy, predictions = evaluate(model, images, labels, mean, std, channels_last=False)
    tta_loss, tta_accuracy, _ = evaluate(model, images, labels, mean, std, channels_last=False, tta=True)
    num_classes = len(config["class_names"])
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((labels.cpu(), predictions.cpu()), torch.ones(len(labels), dtype=torch.int64), accumulate=True)
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    folder = Path(config["_folder"])
    png = Path(cfg.confusion) if cfg.confusion else folder / "confusion.png"
    plot_confusion(confusion.numpy(), config["class_names"], png,
                   title=f"{config.get('display_name', config['arch'])}: {cfg.split} split, {accuracy:.1%}")
    result = {"checkpoint": cfg.checkpoint, "split": cfg.split, "images": len(labels), "accuracy": accuracy,
              "loss": loss, "accuracy_tta": tta_accuracy, "loss_tta": tta_loss,
              "per_class_accuracy": dict(zip(config["class_names"], per_class)),
              "confusion": confusion.tolist(), "confusion_png": str(png),
              "measured_by": f"python -m train.evaluate, float32 on {device.type}"}
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def with_accuracy(config: dict, accuracy: float, tta_accuracy: float, measured_by: str) -> dict:
    """``config`` with both validation figures set and every other key as it was, except the flip-only
    figure earlier versions served (the training run's own last-epoch figure stays in ``stages`` and
    ``log.jsonl``)."""
    config = {k: v for k, v in config.items() if k != "val_accuracy_flip_tta"}
    config.update(val_accuracy=round(accuracy, 4), val_accuracy_tta=round(tta_accuracy, 4),
                  val_accuracy_measured_by=measured_by)
    return config


def record_accuracy(folder: Path, accuracy: float, tta_accuracy: float, measured_by: str) -> None:
    """Set both validation figures in the checkpoint's config.json."""
    config_path = folder / CONFIG_NAME
    atomic_write_json(config_path, with_accuracy(json.loads(config_path.read_text()), accuracy, tta_accuracy,
                                                 measured_by))


def main(argv=None) -> int:
    cfg = parse_config(argv, EvalConfig, description=__doc__, prog="python -m train.evaluate")
    try:
        result = run(cfg)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result['checkpoint']}: accuracy {result['accuracy']:.2%} on {result['images']} images "
          f"({result['split']} split), loss {result['loss']:.3f}; with the app's test-time augmentation "
          f"{result['accuracy_tta']:.2%}")
    for name, value in result["per_class_accuracy"].items():
        print(f"  {name:>12s}  {value:.2%}")
    print(f"confusion matrix: {result['confusion_png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
