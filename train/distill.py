"""Knowledge distillation (Hinton et al., 2015): a student learns from trained checkpoints as well as labels.

``--teacher checkpoints/resnet,checkpoints/senet`` averages those checkpoints' class probabilities on the
very batch the student sees, after its augmentation ("consistent teaching", Beyer et al., 2022), and the
student's target becomes ``(1 - teacher_weight) x labels + teacher_weight x teacher``. The architectures
stay what they are: only the targets change, and the teacher is not needed to serve the student.

A teacher must have trained on the same images with the same held-out split as the student, or its
predictions would carry knowledge of the student's validation images into training: the run stops
saying what differs, as a further stage (``--init-from``) does.

``python -m train.distill --teacher a,b,c --data PATH`` reports how good a teacher is: each checkpoint's
validation accuracy and the averaged one's, on a single view per image, as the student is taught.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from architectures import CheckpointError, load_config, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from .augment import normalize
from .data import DataError, load_images, split_train_val


def split_mismatch(config: dict, arch: str | None, image_set, image_size: int, split_seed: int,
                   val_fraction: float) -> list[str]:
    """What differs between a checkpoint's data and held-out split and this run's (empty when they agree);
    ``arch`` None skips the architecture (a teacher may be any)."""
    recipe = config.get("recipe", {})
    expected = {"class_names": image_set.class_names, "image_size": image_size, "dataset": image_set.source,
                "split_seed": split_seed, "val_fraction": val_fraction}
    found = {**{k: config.get(k) for k in ("class_names", "image_size", "dataset")},
             "split_seed": recipe.get("split_seed"), "val_fraction": recipe.get("val_fraction")}
    if arch is not None:
        expected["arch"], found["arch"] = arch, config.get("arch")
    return [f"{k} {found[k]!r} (this run: {v!r})" for k, v in expected.items() if found[k] != v]


class Teacher:
    """The averaged probabilities of one or more checkpoints, for batches normalised the student's way."""

    def __init__(self, spec: str, image_set, image_size: int, split_seed: int, val_fraction: float,
                 student_mean: torch.Tensor, student_std: torch.Tensor, device, memory_format):
        self.models, self.shifts, self.record = [], [], []
        for path in (part.strip() for part in spec.split(",") if part.strip()):
            try:
                model = load_pretrained(path)
            except CheckpointError as error:
                raise ValueError(f"--teacher {path}: {error}") from None
            differ = split_mismatch(model.config, None, image_set, image_size, split_seed, val_fraction)
            if differ:
                raise ValueError(f"--teacher {path} was trained on other data or another split: {'; '.join(differ)}")
            mean = torch.tensor(model.config["mean"], device=device).view(1, 3, 1, 1)
            std = torch.tensor(model.config["std"], device=device).view(1, 3, 1, 1)
            # The student's normalised pixels x become the teacher's: (x * s_std + s_mean - t_mean) / t_std.
            scale = student_std.view(1, 3, 1, 1) / std
            offset = (student_mean.view(1, 3, 1, 1) - mean) / std
            self.models.append(model.to(device, memory_format=memory_format).eval())
            self.shifts.append((scale, offset))
            folder = Path(model.config["_folder"])
            self.record.append({"checkpoint": path, "arch": model.config["arch"],
                                "val_accuracy": model.config.get("val_accuracy"),
                                "sha256": file_sha256(folder / WEIGHTS_NAME)})
        if not self.models:
            raise ValueError("--teacher names no checkpoint")
        for model in self.models:
            for param in model.parameters():
                param.requires_grad_(False)

    @torch.no_grad()
    def each_probs(self, x: torch.Tensor, autocast) -> list[torch.Tensor]:
        """Each teacher's class probabilities; float32."""
        with autocast:
            return [torch.softmax(model(x * scale + offset).float(), -1)
                    for model, (scale, offset) in zip(self.models, self.shifts)]

    def probs(self, x: torch.Tensor, autocast) -> torch.Tensor:
        """Class probabilities averaged over the teachers; float32."""
        return torch.stack(self.each_probs(x, autocast)).mean(0)


def mixed_targets(teacher_probs: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, own: float,
                  teacher_weight: float) -> torch.Tensor:
    """Soft targets: the labels (after CutMix, ``own`` on each image's label, the rest on its partner's)
    weighted ``1 - teacher_weight``, the teacher's probabilities ``teacher_weight``."""
    classes = teacher_probs.shape[1]
    hard = own * F.one_hot(labels, classes).float() + (1 - own) * F.one_hot(partner, classes).float()
    return (1 - teacher_weight) * hard + teacher_weight * teacher_probs


def distillation_targets(teacher: Teacher | None, x: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor,
                         own: float, teacher_weight: float, autocast) -> torch.Tensor | None:
    """The targets of a training batch ``x``: None without a teacher (the labels alone, as usual)."""
    if teacher is None:
        return None
    return mixed_targets(teacher.probs(x, autocast), labels, partner, own, teacher_weight)


def report(spec: str, data: str, cache_dir: str = "data/cache", batch_size: int = 500) -> dict[str, float]:
    """Validation accuracy of each teacher and of their average, on the first teacher's held-out split."""
    # The split and normalisation come from the first teacher's config; Teacher loads the weights.
    config = load_config(spec.split(",")[0].strip())
    recipe = config.get("recipe", {})
    image_set = load_images(data, config["image_size"], cache_dir, progress=False)
    split_seed, val_fraction = recipe.get("split_seed", 0), recipe.get("val_fraction", 0.1)
    _, val_idx = split_train_val(image_set.labels, val_fraction, split_seed)
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    teacher = Teacher(spec, image_set, config["image_size"], split_seed, val_fraction, mean, std, "cpu",
                      torch.contiguous_format)
    names = [entry["checkpoint"] for entry in teacher.record]
    correct = torch.zeros(len(names) + 1)
    off = torch.autocast("cpu", enabled=False)
    for start in range(0, len(val_idx), batch_size):
        index = val_idx[start:start + batch_size]
        each = teacher.each_probs(normalize(image_set.images[index], mean, std), off)
        for i, probs in enumerate([*each, torch.stack(each).mean(0)]):
            correct[i] += (probs.argmax(1) == image_set.labels[index]).sum()
    return dict(zip([*names, "together"], (correct / len(val_idx)).tolist()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.distill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="comma-separated checkpoint folders, as for python -m train")
    parser.add_argument("--data", required=True, help="the images they trained on, as for python -m train")
    parser.add_argument("--cache-dir", default="data/cache", help="decoded-image cache, shared with training")
    args = parser.parse_args(argv)
    try:
        accuracies = report(args.teacher, args.data, args.cache_dir)
    except (CheckpointError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, accuracy in accuracies.items():
        print(f"{name:>30s}  {accuracy:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
