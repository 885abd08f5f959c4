"""Training recipes as data: ``BASE`` holds what the architectures share, each model class its own ``recipe``.

``recipe_for(arch)`` fills the ``None`` fields of ``TrainConfig``. The recipes aim at high accuracy in few
epochs (airbench-style): Nesterov SGD, label smoothing, short warm-up then linear decay to zero,
flip-and-translate augmentation; the MLP-Mixer, which lacks a convolution's built-in locality, gets AdamW.
Learning rates are per batch of ``batch_size`` images. An architecture's recipe is the first stage of its
shipped checkpoint, one GPU run; on a small machine ``--time-budget SECONDS`` picks the epochs that fit.
``recipe_table()`` lists them all in Markdown (``python -m train.recipes`` prints it).
"""
from __future__ import annotations

import json
from pathlib import Path

from architectures import list_models, model_class
from architectures.checkpoint import CONFIG_NAME

# What a recipe leaves unsaid, and all that an architecture without a recipe of its own trains with.
BASE = dict(epochs=5, batch_size=256, lr=0.2, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.1,
            warmup_epochs=0.5, ema_decay=0.0, translate=4, cutout=0, cutmix=0.0, cpu_bf16=False)
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
# Settings recipe_table gives columns of their own; the rest it lists where they differ from BASE.
TABLE_COLUMNS = ("epochs", "batch_size", "lr", "optimizer")


def lr_for_batch(arch: str, batch_size: int) -> float:
    """The recipe's learning rate moved to another batch size: linear scaling for SGD (Goyal et al., 2017),
    square-root scaling for AdamW (Malladi et al., 2022)."""
    recipe = recipe_for(arch)
    ratio = batch_size / recipe["batch_size"]
    return recipe["lr"] * (ratio if recipe["optimizer"] == "sgd" else ratio ** 0.5)


def recipe_for(arch: str) -> dict:
    """The recipe of registered architecture ``arch``: ``BASE`` overlaid with its class's ``recipe``."""
    return {**BASE, **getattr(model_class(arch), "recipe", {})}


def _stage_range(numbers: list[int]) -> str:
    """``[3, 4, 5]`` as "stages 3-5", ``[2]`` as "stage 2", ``[1, 3]`` as "stages 1, 3"."""
    if len(numbers) == 1:
        return f"stage {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"stages {numbers[0]}-{numbers[-1]}"
    return "stages " + ", ".join(map(str, numbers))


def training_summary(config: dict) -> str:
    """How a checkpoint was made, from its ``config.json``: its number of training stages and which of them
    distilled from teachers (and from which architectures), e.g. "4 stages; stages 3-4 distilled from vgg,
    resnet". A checkpoint trained in one go has no ``stages``: it is its own one stage."""
    stages = config.get("stages") or [config]
    distilled = [number for number, stage in enumerate(stages, 1) if stage.get("teachers")]
    teachers: list[str] = []
    for number in distilled:
        for teacher in stages[number - 1]["teachers"]:
            name = teacher.get("arch") or str(teacher.get("checkpoint", "?"))
            if name not in teachers:
                teachers.append(name)
    if len(stages) == 1:
        return "1 stage" + (f", distilled from {', '.join(teachers)}" if distilled else "")
    summary = f"{len(stages)} stages"
    if distilled:
        summary += f"; {_stage_range(distilled)} distilled from {', '.join(teachers)}"
    return summary


def _flag(key: str, value) -> str:
    shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
    return f"`--{key.replace('_', '-')} {shown}`"


def recipe_table(checkpoints: str | Path = CHECKPOINTS) -> str:
    """Every registered architecture's default recipe as a Markdown table, generated from the code, with
    how its shipped checkpoint in ``checkpoints/<arch>`` was made (``training_summary``)."""
    lines = ["| architecture | epochs | batch size | lr | optimizer | other settings | first-stage accuracy | "
             "shipped checkpoint |",
             "|---|---:|---:|---:|---|---|---:|---|"]
    for arch in list_models():
        cls, recipe = model_class(arch), recipe_for(arch)
        others = " ".join(_flag(key, value) for key, value in recipe.items()
                          if key not in TABLE_COLUMNS and value != BASE.get(key)) or "-"
        config_path = Path(checkpoints) / arch / CONFIG_NAME
        config = json.loads(config_path.read_text()) if config_path.is_file() else None
        shipped = training_summary(config) if config else "none"
        accuracy = getattr(cls, "recipe_accuracy", None)
        if accuracy is not None:
            accuracy_text = f"{accuracy:.2f}%"
        elif config and (config.get("stages") or [config])[0].get("teachers"):
            accuracy_text = "- (its stage 1 distilled)"
        else:
            accuracy_text = "-"
        lines.append(f"| {getattr(cls, 'display_name', '') or arch} (`{arch}`) | {recipe['epochs']} | "
                     f"{recipe['batch_size']} | {recipe['lr']:g} | {recipe['optimizer']} | {others} | "
                     f"{accuracy_text} | {shipped} |")
    lines += ["", "`python -m train --arch NAME` trains with its recipe, the first stage of the shipped checkpoint "
                  "(`--time-budget SECONDS` fits the epochs to a smaller machine). Other settings are those that "
                  "differ from `train.recipes.BASE`. First-stage accuracy: validation split, model alone, one run "
                  "of the recipe; '-' where none of the recipe as written is on record. Generated by "
                  "`train.recipes.recipe_table()`."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(recipe_table())
