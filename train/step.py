"""One training step and one evaluation pass, written once: the loop (train/trainer.py), the time-budget trial
(train/budget.py), ``python -m train.evaluate`` and bench/train_throughput.py all run these.

A step takes a batch of uint8 images on the training device, augments it there, asks the teacher (with
``--teacher``), runs forward and backward and updates the weights; every setting it reads is the run's
``TrainConfig``'s.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import TTA_COPIES, augment_batch, normalize, random_cutmix, served_probs
from .config import TrainConfig
from .distill import Teacher, distillation_targets

# Training images whose BatchNorm statistics score the weight average after each averaged epoch but the
# last, whose statistics, from every training image, the checkpoint keeps: a tenth of an epoch's forward passes.
SWA_EPOCH_BATCHNORM_IMAGES = 10_000


@dataclass
class Precision:
    """How the run computes: memory layout and bf16 autocast (``autocast`` is disabled without bf16)."""

    memory_format: torch.memory_format
    bf16: bool
    autocast: torch.autocast


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA when asked; on the CPU only with ``cpu_bf16`` (the recipe's: where it pays)."""
    if not cfg.bf16:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Without native bf16 instructions (AVX512-BF16/AMX) the CPU emulates it, far slower than fp32.
    return bool(cfg.cpu_bf16) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def choose_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bf16 = use_bf16(cfg, device)
    return Precision(memory_format, bf16, torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weight matrices and kernels only: decaying norms and biases only hurts."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: sgd, adamw")


def forward_backward(model, optimizer, x, y, autocast, label_smoothing, partner=None, own: float = 1.0,
                     targets=None):
    """One optimisation step's forward pass, loss and backward pass; returns (loss, logits).

    After CutMix, ``own`` of the loss is on each image's label ``y`` and the rest on its ``partner``'s.
    ``targets`` (class probabilities per image, from distillation) replace both when given.
    """
    with autocast:
        logits = model(x)
        if targets is not None:
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            if own < 1:
                partner_loss = F.cross_entropy(logits.float(), partner, label_smoothing=label_smoothing)
                loss = own * loss + (1 - own) * partner_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logits


def train_step(model, optimizer, images_uint8, labels, mean, std, cfg: TrainConfig, precision: Precision,
               generator: torch.Generator, teacher: Teacher | None = None, shard: slice = slice(None)):
    """Augment the batch, (ask the teacher,) forward, backward, update; returns (loss, logits, labels) of
    ``shard``, this process's share of the batch.

    Every process draws the augmentation of the whole batch, so that they all keep the same generator state,
    then trains on its own slice (distributed data parallel); a single process trains on all of it.
    """
    x = augment_batch(images_uint8, mean, std, cfg.translate, cfg.cutout, generator)
    x, partner, own = random_cutmix(x, labels, cfg.cutmix, generator)
    x, y, partner = x[shard].contiguous(memory_format=precision.memory_format), labels[shard], partner[shard]
    targets = distillation_targets(teacher, x, y, partner, own, cfg.teacher_weight, precision.autocast)
    loss, logits = forward_backward(model, optimizer, x, y, precision.autocast, cfg.label_smoothing, partner, own,
                                    targets)
    optimizer.step()
    return loss, logits, y


def raise_if_nonfinite(flags: list, arch: str, epoch: int, first_step: int, steps_per_epoch: int) -> None:
    """Raise naming the first step whose loss was NaN or inf; ``flags`` covers steps from ``first_step``."""
    bad = torch.stack(flags).nonzero()
    flags.clear()
    if len(bad):
        step = first_step + int(bad[0, 0]) + 1
        raise FloatingPointError(f"{arch}: the loss is not finite at epoch {epoch + 1}, step {step} "
                                 f"(global step {epoch * steps_per_epoch + step}); lower --lr?")


def recompute_batchnorm(model: nn.Module, images_uint8, mean, std, cfg: TrainConfig, memory_format,
                        limit: int | None = None, batch_size: int = 500) -> None:
    """BatchNorm statistics for averaged weights, which no training step ran with: one pass in training
    mode over ``limit`` training images (all by default), augmented as in training (torch's ``update_bn``).
    The images are a fixed random draw: the split is ordered by class, and its first images are two classes."""
    generator = torch.Generator().manual_seed(cfg.seed + 104_729)
    pick = torch.randperm(len(images_uint8), generator=generator)[:limit].to(images_uint8.device)
    batches = (augment_batch(images_uint8[pick[start:start + batch_size]], mean, std, cfg.translate, cfg.cutout,
                             generator).contiguous(memory_format=memory_format)
               for start in range(0, len(pick), batch_size))
    torch.optim.swa_utils.update_bn(batches, model)


@torch.inference_mode()
def evaluate(model, images_uint8, labels, mean, std, batch_size=1000, autocast=None, channels_last=True,
             tta=False):
    """Loss, accuracy and predictions of ``model`` on uint8 images; ``tta`` scores the probabilities
    averaged over the app's test-time augmentation (``served_probs``: shifted and mirrored copies)."""
    model.eval()
    total_loss, predictions = 0.0, []
    # served_probs runs each image TTA_COPIES times: fewer images per step keep its forward pass (and its
    # memory, which grows with the image size) at batch_size images.
    step = max(1, batch_size // TTA_COPIES) if tta else batch_size
    for start in range(0, len(labels), step):
        x = normalize(images_uint8[start:start + step], mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast or torch.autocast(x.device.type, enabled=False):
            if tta:
                log_probs = served_probs(model, x).clamp_min(1e-12).log()
            else:
                log_probs = F.log_softmax(model(x).float(), -1)
        total_loss += F.nll_loss(log_probs, labels[start:start + step], reduction="sum").item()
        predictions.append(log_probs.argmax(1))
    predictions = torch.cat(predictions)
    return total_loss / len(labels), (predictions == labels).float().mean().item(), predictions


def synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock reads work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
