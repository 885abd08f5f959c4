"""Per-architecture training recipes: one table, no branches.

Each entry fills the ``None`` fields of ``TrainConfig``. Recipes aim at high accuracy in few epochs
(airbench-style): Nesterov SGD, label smoothing, short warm-up then linear decay to zero, weight EMA,
flip-and-translate augmentation; the MLP-Mixer, which lacks a convolution's built-in locality, gets
AdamW. Learning rates are per batch of ``batch_size`` images.
"""
from __future__ import annotations

BASE = dict(epochs=5, batch_size=256, lr=0.2, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.1,
            warmup_epochs=0.5, ema_decay=0.0, translate=4, cutout=0, cutmix=0.0,
            cpu_bf16=False)

# Epoch counts fit the first checkpoints' budget: about 8 minutes each on a 2-core CPU (images/s measured
# per architecture; see bench/). Seven nets have since been widened (the shipped checkpoints, trained on a
# GPU), and an epoch of those costs up to 3.3 times as much on a CPU (bench/train_throughput.py: resnet
# 199 img/s, bn_convnet 240, against 663 and 658 before). ``cpu_bf16`` marks the nets that bf16 autocast
# speeds up on a CPU with AVX512-BF16; for the rest it was slower than fp32.
RECIPES: dict[str, dict] = {
    # A plain stack with no normalisation: a higher learning rate diverges.
    "basic_convnet": {**BASE, "lr": 0.05, "epochs": 6, "cpu_bf16": True},
    "alexnet": {**BASE, "lr": 0.1},
    "vgg": {**BASE, "epochs": 4},
    "nin": {**BASE, "lr": 0.1, "epochs": 4},
    "googlenet": {**BASE, "epochs": 4},
    "bn_convnet": {**BASE},
    # ResNet-20 is deep and thin: five epochs left it underfitting (74.4%, train accuracy 73%).
    "resnet": {**BASE, "epochs": 7},
    "densenet": {**BASE, "epochs": 4},
    "senet": {**BASE, "epochs": 7},
    "efficientnet": {**BASE, "weight_decay": 1e-4, "epochs": 6},
    # No convolutional prior: AdamW as for transformers. Cutout, which pays off over hundreds of epochs,
    # only slowed a ten-epoch run.
    "mlpmixer": {**BASE, "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "epochs": 10, "warmup_epochs": 1.0},
}


def lr_for_batch(arch: str, batch_size: int) -> float:
    """The recipe's learning rate moved to another batch size: linear scaling for SGD (Goyal et al., 2017),
    square-root scaling for AdamW (Malladi et al., 2022)."""
    recipe = recipe_for(arch)
    ratio = batch_size / recipe["batch_size"]
    return recipe["lr"] * (ratio if recipe["optimizer"] == "sgd" else ratio ** 0.5)


def recipe_for(arch: str) -> dict:
    """The recipe of ``arch``; a registered architecture without one trains with the base recipe."""
    return RECIPES.get(arch, BASE)
