"""The training loop: data on the device as uint8, batch augmentation, one-cycle-style schedule.

``train(config)`` trains one architecture and exports ``model.safetensors`` + ``config.json`` (with
``log.jsonl`` and ``curves.png``) to ``config.out``. State is saved after every epoch, so ``--resume``
continues a killed run from its last finished epoch and ends exactly where an uninterrupted run would.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import shlex
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from architectures import CheckpointError, check_name, create_model, default_args, load_pretrained, save_pretrained
from architectures.checkpoint import atomic_write_bytes, round_parameters, validate_arch_args
from .augment import TTA_COPIES, augment_batch, normalize, random_cutmix, served_probs
from .config import TrainConfig
from .data import ImageSet, describe_split, load_images, split_train_val
from .distill import Teacher, distillation_targets, split_mismatch
from .env import RunEnv, describe_hardware, git_commit, pass_trial_barrier, setup, teardown, wait_for_trial_barrier
from .plots import plot_curves
from .recipes import recipe_for
from .state import STATE_NAME, load_state, peek_info, save_state

# Settings that may differ between a run and its resumption without changing the result.
RESUME_FREE = {"resume", "max_epochs_this_run", "progress", "threads", "push_to_hub", "time_budget", "weights_dtype"}
# Fields the reproducing command does not list as options: those that never change what a run computes,
# and arch, data and epochs, which it always names first. weights_dtype may change on resuming (it only
# matters at export) but does change the stored checkpoint, so the command keeps it.
NOT_IN_COMMAND = (RESUME_FREE - {"weights_dtype"}) | {"arch", "data", "out", "run_dir", "cache_dir", "device",
                                                      "compile", "epochs"}
# How often (steps) a CUDA run checks the loss for NaN/inf: each check waits for the GPU to catch up.
FINITE_CHECK_EVERY_CUDA = 20
# Training images whose BatchNorm statistics score the weight average after each averaged epoch but the
# last, whose statistics, from every training image, the checkpoint keeps: a tenth of an epoch's forward passes.
SWA_EPOCH_BATCHNORM_IMAGES = 10_000


def lr_factor(step: int, total_steps: int, warmup_steps: int, hold_steps: int = 0, hold_factor: float = 0.0) -> float:
    """Linear warm-up from 0 to 1, then linear decay: to 0 at the last step or, with ``hold_steps``, to
    ``hold_factor``, held through the last ``hold_steps`` steps (the averaged epochs of ``--swa-epochs``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_end = total_steps - hold_steps
    if step >= decay_end:
        return hold_factor
    return hold_factor + (1 - hold_factor) * (decay_end - step) / max(1, decay_end - warmup_steps)


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


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param.detach(), 1 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


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


def augmented_step(model, optimizer, images_uint8, labels, mean, std, cfg: TrainConfig, autocast, memory_format,
                   generator, teacher: Teacher | None = None) -> None:
    """One batch through the hot loop's work: augment, (ask the teacher,) forward, backward, update. The
    epoch-count trial and bench/train_throughput.py time this; the loop itself splits it to check the loss
    before the update."""
    x = augment_batch(images_uint8, mean, std, cfg.translate, cfg.cutout, generator)
    x, partner, own = random_cutmix(x, labels, cfg.cutmix, generator)
    x = x.contiguous(memory_format=memory_format)
    targets = distillation_targets(teacher, x, labels, partner, own, cfg.teacher_weight, autocast)
    forward_backward(model, optimizer, x, labels, autocast, cfg.label_smoothing, partner, own, targets)
    optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epochs_for_budget(cfg: TrainConfig, num_classes, train_x, train_y, val_x, val_y, mean, std, device,
                      autocast, memory_format, state_path: Path, arch_args: dict | None = None,
                      teacher: Teacher | None = None, safety: float = 0.9) -> int:
    """How many whole epochs fit in ``cfg.time_budget`` seconds, timed on a throwaway model.

    The trial trains a fresh copy of the architecture for up to ten seconds (a twentieth of the budget for
    short budgets) after a few warm-up steps, so it measures this machine under its present load, other
    runs sharing the GPU included. It also times what each epoch adds after training (validation, saving
    the state): on a GPU shared by many runs that can be a large share of a short epoch, and leaving it out
    overruns the budget by as much. ``safety`` leaves room for drift.
    """
    model = create_model(cfg.arch, num_classes=num_classes, **(arch_args or {}))
    model = model.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed + 7919)

    def step():
        batch = torch.randint(len(train_y), (cfg.batch_size,), generator=generator).to(device)
        augmented_step(model, optimizer, train_x[batch], train_y[batch], mean, std, cfg, autocast, memory_format,
                       generator, teacher)

    for _ in range(3):  # cuDNN algorithm choice and allocator warm-up are not steady-state speed
        step()
    synchronize(device)
    waited = wait_for_trial_barrier(cfg.arch)  # runs side by side (train.parallel) time their trials together
    trial_seconds, steps, started = min(10.0, cfg.time_budget / 20), 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < trial_seconds:
        step()
        steps += 1
        if steps % 5 == 0:
            synchronize(device)  # the clock must read work done, not work queued
    synchronize(device)
    images_per_second = steps * cfg.batch_size / (time.perf_counter() - started)
    channels_last = memory_format == torch.channels_last
    # The first pass also pays one-off costs (cuDNN's algorithm search for the evaluation shapes, say): charged
    # to every epoch, they would leave much of the budget unused. Time the second.
    evaluate(model, val_x, val_y, mean, std, autocast=autocast, channels_last=channels_last)
    started = time.perf_counter()
    evaluate(model, val_x, val_y, mean, std, autocast=autocast, channels_last=channels_last)
    last_pass_seconds = 0.0  # the last epoch's BatchNorm pass covers every image, not the sample: its excess
    if cfg.swa_epochs:  # counted for every epoch, though the first ones average nothing
        pass_started = time.perf_counter()
        recompute_batchnorm(model, train_x, mean, std, cfg, memory_format, limit=SWA_EPOCH_BATCHNORM_IMAGES)
        sampled = min(len(train_y), SWA_EPOCH_BATCHNORM_IMAGES)
        last_pass_seconds = (time.perf_counter() - pass_started) * (len(train_y) - sampled) / sampled
    trial_state = state_path.with_name("trial_" + state_path.name)
    save_state(trial_state, model, None, optimizer, {"trial": True})
    trial_state.unlink()
    after_epoch_seconds = time.perf_counter() - started
    epoch_seconds = (len(train_y) // cfg.batch_size) * cfg.batch_size / images_per_second + after_epoch_seconds
    epochs = max(1, int((cfg.time_budget * safety - last_pass_seconds) / epoch_seconds))
    together = f" (after {waited:.1f} s waiting for the other runs)" if waited else ""
    last_pass = f", {last_pass_seconds:.2f} s more for the last BatchNorm pass" if cfg.swa_epochs else ""
    print(f"{cfg.arch}: trial ran {images_per_second:.0f} img/s{together}, {after_epoch_seconds:.2f} s per epoch to "
          f"validate and save{last_pass}; {epochs} epochs fit {cfg.time_budget:.0f} s", flush=True)
    del model, optimizer
    return epochs


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


def raise_if_nonfinite(flags: list, arch: str, epoch: int, first_step: int, steps_per_epoch: int) -> None:
    """Raise naming the first step whose loss was NaN or inf; ``flags`` covers steps from ``first_step``."""
    bad = torch.stack(flags).nonzero()
    flags.clear()
    if len(bad):
        step = first_step + int(bad[0, 0]) + 1
        raise FloatingPointError(f"{arch}: the loss is not finite at epoch {epoch + 1}, step {step} "
                                 f"(global step {epoch * steps_per_epoch + step}); lower --lr?")


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA when asked; on the CPU only with ``cpu_bf16`` (the recipe's: where it pays)."""
    if not cfg.bf16:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # Without native bf16 instructions (AVX512-BF16/AMX) the CPU emulates it, far slower than fp32.
    return bool(cfg.cpu_bf16) and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_swa(cfg: TrainConfig) -> None:
    """Refuse weight-averaging settings that cannot run: before any data is read where the epochs are known."""
    if cfg.swa_epochs < 0 or cfg.swa_lr < 0:
        raise ValueError(f"--swa-epochs and --swa-lr must not be negative, got {cfg.swa_epochs} and {cfg.swa_lr}")
    if cfg.swa_lr and not cfg.swa_epochs:
        raise ValueError("--swa-lr is the learning rate of the averaged epochs: give --swa-epochs too")
    if cfg.swa_epochs and cfg.ema_decay > 0:
        raise ValueError("--swa-epochs and --ema-decay both average the weights; choose one")
    if cfg.swa_epochs and cfg.epochs is not None and cfg.epochs - cfg.swa_epochs < cfg.warmup_epochs:
        raise ValueError(f"--swa-epochs {cfg.swa_epochs} leaves no room for the warm-up of {cfg.warmup_epochs} "
                         f"epochs in {cfg.epochs} epochs")


def train(config: TrainConfig) -> dict:
    """Train ``config.arch``; returns the exported config (or the partial history when paused)."""
    arch = check_name(config.arch)
    if config.time_budget and config.epochs is not None:
        raise ValueError("give --epochs or --time-budget, not both")
    if config.time_budget < 0:
        raise ValueError(f"--time-budget must be positive seconds, got {config.time_budget}")
    cfg = dataclasses.replace(config, out=config.out.format(arch=arch), run_dir=config.run_dir.format(arch=arch),
                              init_from=config.init_from.format(arch=arch), teacher=config.teacher.format(arch=arch))
    cfg = cfg.resolved(recipe_for(arch))
    check_swa(cfg)
    if cfg.swa_epochs and not cfg.swa_lr:
        cfg = dataclasses.replace(cfg, swa_lr=round(cfg.lr / 5, 8))
    # One spelling of the settings, so the fingerprint and the reproducing command do not depend on spacing.
    arch_args = parse_arch_args(arch, cfg.arch_args, cfg.image_size, inherited=bool(cfg.init_from))
    cfg = dataclasses.replace(cfg, arch_args=json.dumps(arch_args, sort_keys=True, separators=(",", ":"))
                              if arch_args else "")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = setup(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        teardown(env)


@dataclass
class TrainingData:
    """One run's images on the training device as uint8, split, with the normalisation they are trained with."""

    image_set: ImageSet
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    local_batch: int      # images per step on this process
    steps_per_epoch: int


@dataclass
class Precision:
    """How the run computes: memory layout and bf16 autocast (``autocast`` is disabled without bf16)."""

    memory_format: torch.memory_format
    bf16: bool
    autocast: torch.autocast


@dataclass
class Trainee:
    """The model being trained and what updates it: weight average (EMA or SWA), optimizer, schedule."""

    model: nn.Module
    ema_model: nn.Module | None
    swa_model: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    lr_at: Callable[[int], float]  # the schedule's factor at an optimizer step

    @property
    def averaged(self) -> nn.Module | None:
        """The averaged weights the saved state keeps beside the model's."""
        return self.ema_model if self.ema_model is not None else self.swa_model


@dataclass
class EpochTotals:
    """What one epoch's training steps add up to on this process."""

    seen: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    seconds: float


def prepare_data(cfg: TrainConfig, env: RunEnv) -> TrainingData:
    """Decode (or read from the cache) the images, split off the validation images, move both to the device,
    and take the normalisation statistics of the training split."""
    device = env.device
    image_set = load_images(cfg.data, cfg.image_size, cfg.cache_dir, progress=cfg.progress and env.is_main)
    train_idx, val_idx = split_train_val(image_set.labels, cfg.val_fraction, cfg.split_seed)
    train_x, train_y = image_set.images[train_idx].to(device), image_set.labels[train_idx].to(device)
    val_x, val_y = image_set.images[val_idx].to(device), image_set.labels[val_idx].to(device)
    # Normalisation statistics of the training split only (RGB, pixel values in [0, 1]).
    pixels = train_x.float().div(255)
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    del pixels
    if cfg.batch_size % env.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {env.world_size} processes")
    steps_per_epoch = len(train_y) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"the training split has {len(train_y)} images, fewer than one batch of {cfg.batch_size}")
    return TrainingData(image_set, train_x, train_y, val_x, val_y, mean, std, cfg.batch_size // env.world_size,
                        steps_per_epoch)


def choose_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    bf16 = use_bf16(cfg, device)
    return Precision(memory_format, bf16, torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))


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


def load_teacher(cfg: TrainConfig, data: TrainingData, device, memory_format) -> Teacher | None:
    if not cfg.teacher:
        return None
    if not 0 < cfg.teacher_weight <= 1:
        raise ValueError(f"--teacher-weight must be in (0, 1], got {cfg.teacher_weight}")
    return Teacher(cfg.teacher, data.image_set, cfg.image_size, cfg.split_seed, cfg.val_fraction, data.mean,
                   data.std, device, memory_format)


def settle_epochs(cfg: TrainConfig, env: RunEnv, saved: dict | None, data: TrainingData, precision: Precision,
                  state_path: Path, arch_args: dict, teacher: Teacher | None) -> TrainConfig:
    """``cfg`` with the epochs ``--time-budget`` fits: timed by a trial on a fresh run, kept from the saved state
    on a resumed one. Without a budget, ``cfg`` as it is."""
    if not cfg.time_budget:
        return cfg
    if env.world_size > 1:
        raise ValueError("--time-budget needs one process (each would time its own trial); pass --epochs")
    if saved:
        epochs = saved["fingerprint"]["epochs"]
        pass_trial_barrier(cfg.arch)  # runs beside it that do time one must not wait for it
    else:
        epochs = epochs_for_budget(cfg, len(data.image_set.class_names), data.train_x, data.train_y, data.val_x,
                                   data.val_y, data.mean, data.std, env.device, precision.autocast,
                                   precision.memory_format, state_path, arch_args, teacher)
    cfg = dataclasses.replace(cfg, epochs=epochs)
    check_swa(cfg)
    return cfg


def build_trainee(cfg: TrainConfig, num_classes: int, arch_args: dict, parent_weights: dict | None,
                  steps_per_epoch: int, device, memory_format) -> Trainee:
    """The model (from the parent's weights for a further stage), its weight average, optimizer and schedule:
    warm-up, then linear decay to zero or, with ``--swa-epochs``, to the rate held through the averaged epochs."""
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    hold_steps, hold_factor = cfg.swa_epochs * steps_per_epoch, (cfg.swa_lr / cfg.lr if cfg.swa_epochs else 0.0)

    def lr_at(step: int) -> float:
        return lr_factor(step, total_steps, warmup_steps, hold_steps, hold_factor)

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=num_classes, **arch_args)
    if parent_weights is not None:
        model.load_state_dict(parent_weights)
    model = model.to(device, memory_format=memory_format)
    ema_model = copy.deepcopy(model).eval() if cfg.ema_decay > 0 else None
    swa_model = torch.optim.swa_utils.AveragedModel(model) if cfg.swa_epochs else None
    optimizer = build_optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    return Trainee(model, ema_model, swa_model, optimizer, schedule, lr_at)


def run_fingerprint(cfg: TrainConfig) -> dict:
    """The settings a resumed run must share with the state it resumes."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUME_FREE}


def resume_from_state(cfg: TrainConfig, env: RunEnv, state_path: Path, saved: dict | None, trainee: Trainee,
                      fingerprint: dict, steps_per_epoch: int) -> tuple[list[dict], int, float]:
    """With ``--resume`` and a saved state: load it into ``trainee`` and put the schedule where an uninterrupted
    run would be. Returns (history, epochs done, training seconds so far): nothing done for a fresh run."""
    if not (cfg.resume and state_path.exists()):
        if state_path.exists() and env.is_main:
            print(f"note: {state_path} exists; starting afresh (pass --resume to continue it)")
        return [], 0, 0.0
    # Checked before loading (an unreadable state is load_state's to report): changed settings, arch_args
    # say, may not even fit the saved weights. A state saved before a setting existed ran with its default,
    # the recipe's for a setting the recipe fills.
    if saved:
        recipe = recipe_for(cfg.arch)
        defaults = {f.name: recipe.get(f.name) if f.default is None else f.default
                    for f in dataclasses.fields(TrainConfig)}
        before = {**defaults, **saved["fingerprint"]}
        changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
        if changed:
            raise ValueError(f"cannot resume {state_path}: settings changed since it was saved: {changed}")
    info = load_state(state_path, trainee.model, trainee.averaged, trainee.optimizer, env.device)
    start_epoch = info["epoch"]
    schedule = trainee.schedule
    # Put the schedule where an uninterrupted run would be after this many optimizer steps.
    schedule.last_epoch = start_epoch * steps_per_epoch
    for group, base_lr in zip(trainee.optimizer.param_groups, schedule.base_lrs):
        group["lr"] = base_lr * trainee.lr_at(schedule.last_epoch)
    if env.is_main:
        print(f"resuming {cfg.arch} from {state_path} after epoch {start_epoch}")
    return info["history"], start_epoch, info["train_seconds"]


def train_epoch(cfg: TrainConfig, env: RunEnv, epoch: int, step_fn, trainee: Trainee, data: TrainingData,
                teacher: Teacher | None, precision: Precision) -> EpochTotals:
    """One pass over the training split: augment, forward, backward, update, per batch; then, in the averaged
    epochs of ``--swa-epochs``, add the weights to their average."""
    device, model, memory_format = env.device, trainee.model, precision.memory_format
    # Every random draw of the epoch derives from (seed, epoch): a resumed run repeats it exactly.
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout
    order = torch.randperm(len(data.train_y), generator=generator).to(device)
    model.train()
    started = time.perf_counter()
    seen, loss_sum, correct = 0, torch.zeros((), device=device), torch.zeros((), device=device)
    # On a CPU every op has finished when it returns, so checking each step costs nothing; on a GPU
    # each check is a wait, so flags are gathered and read every few steps.
    nonfinite, check_every = [], 1 if device.type == "cpu" else FINITE_CHECK_EVERY_CUDA
    steps_per_epoch, local_batch = data.steps_per_epoch, data.local_batch
    bar = tqdm(range(steps_per_epoch), desc=f"{cfg.arch} {epoch + 1}/{cfg.epochs}", unit="step",
               disable=not (cfg.progress and env.is_main), leave=False)
    for step in bar:
        batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        # Everyone draws augmentation for the whole batch (same generator state on every process), then
        # keeps its own slice.
        x = augment_batch(data.train_x[batch], data.mean, data.std, cfg.translate, cfg.cutout, generator)
        x, partner, own = random_cutmix(x, data.train_y[batch], cfg.cutmix, generator)
        mine = slice(env.rank * local_batch, (env.rank + 1) * local_batch)
        x, y, partner = x[mine].contiguous(memory_format=memory_format), data.train_y[batch][mine], partner[mine]
        targets = distillation_targets(teacher, x, y, partner, own, cfg.teacher_weight, precision.autocast)
        loss, logits = forward_backward(step_fn, trainee.optimizer, x, y, precision.autocast, cfg.label_smoothing,
                                        partner, own, targets)
        nonfinite.append(~torch.isfinite(loss.detach()))
        if len(nonfinite) == check_every or step == steps_per_epoch - 1:
            raise_if_nonfinite(nonfinite, cfg.arch, epoch, step + 1 - len(nonfinite), steps_per_epoch)
        trainee.optimizer.step()
        trainee.schedule.step()
        if trainee.ema_model is not None:
            update_ema(trainee.ema_model, model, cfg.ema_decay)
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if not bar.disable and (step % 10 == 0 or step == steps_per_epoch - 1):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen * env.world_size / (time.perf_counter() - started):.0f}")
    if trainee.swa_model is not None and epoch >= cfg.epochs - cfg.swa_epochs:
        trainee.swa_model.update_parameters(model)
    return EpochTotals(seen, loss_sum, correct, time.perf_counter() - started)


def validate_epoch(cfg: TrainConfig, env: RunEnv, epoch: int, trainee: Trainee, data: TrainingData,
                   precision: Precision, totals: EpochTotals) -> dict:
    """Score the weights the checkpoint would keep after this epoch (the average's, with EMA or SWA) on the
    validation split, print the epoch's line and return its log record."""
    eval_model = trainee.ema_model if trainee.ema_model is not None else trainee.model
    swa_model = trainee.swa_model
    if swa_model is not None and swa_model.n_averaged > 0:
        recompute_batchnorm(swa_model.module, data.train_x, data.mean, data.std, cfg, precision.memory_format,
                            limit=None if epoch + 1 == cfg.epochs else SWA_EPOCH_BATCHNORM_IMAGES)
        eval_model = swa_model.module
    val_loss, val_acc, _ = evaluate(eval_model, data.val_x, data.val_y, data.mean, data.std,
                                    autocast=precision.autocast, channels_last=cfg.channels_last)
    seen = totals.seen
    record = {"epoch": epoch + 1, "train_loss": totals.loss_sum.item() / seen,
              "train_accuracy": totals.correct.item() / seen, "val_loss": val_loss, "val_accuracy": val_acc,
              "lr": trainee.optimizer.param_groups[0]["lr"], "seconds": round(totals.seconds, 2),
              "images_per_second": round(seen * env.world_size / totals.seconds, 1)}
    if swa_model is not None:
        record["averaged_epochs"] = int(swa_model.n_averaged)  # val_* score their mean's weights
    print(f"{cfg.arch} epoch {epoch + 1}/{cfg.epochs}: train loss {record['train_loss']:.3f} "
          f"acc {record['train_accuracy']:.4f} | val loss {val_loss:.3f} acc {val_acc:.4f} | "
          f"{record['images_per_second']:.0f} img/s", flush=True)
    return record


def save_progress(state_path: Path, trainee: Trainee, epochs_done: int, history: list[dict], train_seconds: float,
                  fingerprint: dict, parent: dict | None) -> None:
    """The resumable state after a finished epoch, and the log so far beside it."""
    info = {"epoch": epochs_done, "history": history, "train_seconds": train_seconds, "fingerprint": fingerprint}
    if parent:
        info["parent"] = parent
    save_state(state_path, trainee.model, trainee.averaged, trainee.optimizer, info)
    atomic_write_bytes(state_path.parent / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())


def final_scores(cfg: TrainConfig, trainee: Trainee, data: TrainingData, precision: Precision) -> tuple[nn.Module, dict]:
    """The weights the checkpoint keeps (the average's, with EMA or SWA), rounded as they will be stored, and
    their validation scores, alone and with the app's test-time augmentation."""
    final_model = trainee.ema_model if trainee.ema_model is not None else trainee.model
    if trainee.swa_model is not None:  # with the BatchNorm statistics of the last epoch's pass over every image
        final_model = trainee.swa_model.module
    # The figures a checkpoint reports are those of its weights as stored (float16 unless asked otherwise).
    round_parameters(final_model, cfg.weights_dtype)
    val_loss, val_accuracy, _ = evaluate(final_model, data.val_x, data.val_y, data.mean, data.std,
                                         autocast=precision.autocast, channels_last=cfg.channels_last)
    _, tta_accuracy, _ = evaluate(final_model, data.val_x, data.val_y, data.mean, data.std,
                                  autocast=precision.autocast, channels_last=cfg.channels_last, tta=True)
    return final_model, {"val_accuracy": val_accuracy, "val_loss": val_loss, "val_accuracy_tta": tta_accuracy}


def _train(cfg: TrainConfig, env: RunEnv) -> dict:
    code_version = git_commit()  # the code this run starts with, even if the tree changes while it trains
    data = prepare_data(cfg, env)
    precision = choose_precision(cfg, env.device)
    state_path = Path(cfg.run_dir) / STATE_NAME
    saved = peek_info(state_path) if cfg.resume and state_path.exists() else None
    # A further stage (--init-from) starts from the parent's weights and keeps its normalisation.
    parent_weights, parent = load_parent(cfg, data.image_set, saved)
    if parent:
        data = dataclasses.replace(data, mean=torch.tensor(parent["mean"], device=env.device),
                                   std=torch.tensor(parent["std"], device=env.device))
    arch_args = stage_arch_args(cfg.arch, json.loads(cfg.arch_args or "{}"), parent)
    teacher = load_teacher(cfg, data, env.device, precision.memory_format)
    cfg = settle_epochs(cfg, env, saved, data, precision, state_path, arch_args, teacher)
    trainee = build_trainee(cfg, len(data.image_set.class_names), arch_args, parent_weights, data.steps_per_epoch,
                            env.device, precision.memory_format)
    fingerprint = run_fingerprint(cfg)
    history, start_epoch, train_seconds = resume_from_state(cfg, env, state_path, saved, trainee, fingerprint,
                                                            data.steps_per_epoch)

    train_model = trainee.model
    if env.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(trainee.model, device_ids=[env.device]
                                                          if env.device.type == "cuda" else None)
    step_fn = torch.compile(train_model) if cfg.compile else train_model

    for epochs_this_run, epoch in enumerate(range(start_epoch, cfg.epochs)):
        if cfg.max_epochs_this_run and epochs_this_run >= cfg.max_epochs_this_run:
            if env.is_main:
                print(f"paused after epoch {epoch}; continue with --resume")
            return {"paused_at_epoch": epoch, "history": history}
        totals = train_epoch(cfg, env, epoch, step_fn, trainee, data, teacher, precision)
        train_seconds += totals.seconds
        if env.world_size > 1:
            torch.distributed.barrier()
        if env.is_main:
            history.append(validate_epoch(cfg, env, epoch, trainee, data, precision, totals))
            save_progress(state_path, trainee, epoch + 1, history, train_seconds, fingerprint, parent)
        if env.world_size > 1:
            torch.distributed.barrier()

    if not env.is_main:
        return {}
    final_model, scores = final_scores(cfg, trainee, data, precision)
    return export(cfg, env, final_model, data.image_set, len(data.val_y), data.mean, data.std, history,
                  train_seconds, precision.bf16, code_version, parent, scores, teacher.record if teacher else None)


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


def export(cfg, env, model, image_set, n_val, mean, std, history, train_seconds, bf16, code_version,
           parent: dict | None, scores: dict, teachers: list[dict] | None = None) -> dict:
    """Write the finished checkpoint (weights, config, log, curves) to ``cfg.out``."""
    out_dir = Path(cfg.out)
    model = model.to(memory_format=torch.contiguous_format).cpu().eval()
    config = {
        "display_name": type(model).display_name,
        "class_names": image_set.class_names,
        "image_size": cfg.image_size,
        "mean": [round(v, 6) for v in mean.tolist()],
        "std": [round(v, 6) for v in std.tolist()],
        "val_accuracy": round(scores["val_accuracy"], 4),
        "val_loss": round(scores["val_loss"], 4),
        # What the app serves: test-time augmentation over shifted and mirrored copies (train.augment.served_probs).
        "val_accuracy_tta": round(scores["val_accuracy_tta"], 4),
        "val_split": describe_split(image_set, cfg.val_fraction, cfg.split_seed, n_val),
        "epochs": cfg.epochs,
        "train_seconds": round(train_seconds, 1),
        "hardware": describe_hardware(env.device, env.world_size),
        "precision": "bf16 autocast" if bf16 else "fp32",
        "dataset": image_set.source,
        "git_commit": code_version,
        "torch_version": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "recipe": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "optimizer",
                                                 "label_smoothing", "warmup_epochs", "ema_decay", "swa_epochs",
                                                 "swa_lr", "translate", "cutout", "cutmix", "seed", "split_seed",
                                                 "val_fraction", "init_from", "teacher", "teacher_weight")},
        "command": reproducing_command(cfg),
    }
    if teachers:
        # Which weights taught this stage: a later checkpoint in the same folder is another teacher.
        config["teachers"] = teachers
    config, history = with_earlier_stages(config, history, parent)
    save_pretrained(model, out_dir, config, cfg.weights_dtype)
    atomic_write_bytes(out_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    plot_curves(history, out_dir / "curves.png", title=f"{config['display_name']} on {image_set.source}")
    print(f"{cfg.arch}: val accuracy {config['val_accuracy']:.4f} after {config['epochs']} epochs, "
          f"{config['train_seconds'] / 60:.1f} min; saved to {out_dir}")
    if cfg.push_to_hub:
        from .hub import push_to_hub

        push_to_hub(out_dir, cfg.push_to_hub)
    return config
