"""``python -m tools.compact_checkpoint --checkpoint checkpoints/vgg --data PATH``: store a checkpoint's parameters in
float16, half the bytes, and record the validation figures of the weights as stored.

Training runs already export float16 (``--weights-dtype``); this converts a checkpoint written in float32.
The parameters are rounded in memory, scored on the checkpoint's own validation split exactly as
``train.evaluate`` scores them, and only then are weights and config replaced together (atomically), so
the folder never holds new weights beside old figures. A checkpoint already stored so is left as it is.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from architectures import CheckpointError, load_pretrained, save_pretrained
from architectures.checkpoint import WEIGHTS_NAME, round_parameters, weight_dtype
from train.config import parse_config
from train.data import DataError
from train.evaluate import EvalConfig, measure, with_accuracy

# Keys ``save_pretrained`` derives from the model itself, and the loader's note of where it read from.
DERIVED_KEYS = {"arch", "arch_args", "params", "weights_dtype", "_folder"}


@dataclass
class CompactConfig:
    checkpoint: str = "checkpoints/resnet"   # local checkpoint folder, rewritten in place
    data: str = "cifar10"                    # the data it was trained on: its validation split is scored again
    weights_dtype: str = "float16"           # precision to store the parameters in
    cache_dir: str = "data/cache"            # decoded-image cache, shared with training


def run(cfg: CompactConfig) -> dict:
    weight_dtype(cfg.weights_dtype)  # a bad name fails before any work
    folder = Path(cfg.checkpoint)
    if not folder.is_dir():
        raise CheckpointError(f"--checkpoint must be a local checkpoint folder, got {cfg.checkpoint!r}")
    model = load_pretrained(folder)
    before = {"bytes": (folder / WEIGHTS_NAME).stat().st_size, "accuracy": model.config.get("val_accuracy"),
              "accuracy_tta": model.config.get("val_accuracy_tta")}
    if model.config.get("weights_dtype", "float32") == cfg.weights_dtype:
        return {"checkpoint": str(folder), "changed": False, "before": before, "after": before}
    round_parameters(model, cfg.weights_dtype)
    scores = measure(model, EvalConfig(checkpoint=str(folder), data=cfg.data, cache_dir=cfg.cache_dir))
    config = {k: v for k, v in model.config.items() if k not in DERIVED_KEYS}
    config = with_accuracy(config, scores["accuracy"], scores["accuracy_tta"],
                           f"{scores['measured_by']}, weights stored in {cfg.weights_dtype}")
    save_pretrained(model, folder, config, cfg.weights_dtype)
    after = {"bytes": (folder / WEIGHTS_NAME).stat().st_size, "accuracy": config["val_accuracy"],
             "accuracy_tta": config["val_accuracy_tta"]}
    return {"checkpoint": str(folder), "changed": True, "before": before, "after": after}


def main(argv=None) -> int:
    cfg = parse_config(argv, CompactConfig, description=__doc__, prog="python -m tools.compact_checkpoint")
    try:
        result = run(cfg)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    before, after = result["before"], result["after"]
    if not result["changed"]:
        print(f"{result['checkpoint']}: already stored in {cfg.weights_dtype}; left as it is")
        return 0
    print(f"{result['checkpoint']}: {before['bytes'] / 1e6:.2f} MB -> {after['bytes'] / 1e6:.2f} MB; validation "
          f"accuracy {before['accuracy']} -> {after['accuracy']}, with test-time augmentation "
          f"{before['accuracy_tta']} -> {after['accuracy_tta']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
