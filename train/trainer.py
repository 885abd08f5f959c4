"""The training loop: data on the device as uint8, batch augmentation, one-cycle-style schedule.

``train(config)`` trains one architecture and exports ``model.safetensors`` + ``config.json`` (with
``log.jsonl`` and ``curves.png``) to ``config.out``. State is saved after every epoch, so ``--resume``
continues a killed run from its last finished epoch and ends exactly where an uninterrupted run would.

The file reads in the order a run goes: settings, model and optimiser, the loop, evaluation and saving, then
``train`` and ``run``, which call them in turn. The data is train/data.py's (``prepare_data``), the step
train/step.py's, where a checkpoint comes from train/lineage.py's, the ``--time-budget`` trial train/budget.py's
and the finished checkpoint train/export.py's.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm import tqdm

from architectures import check_name, create_model
from architectures.checkpoint import atomic_write_bytes, round_parameters
from .budget import settle_epochs
from .config import TrainConfig, check_swa
from .data import TrainingData, prepare_data
from .distill import Teacher
from .env import RunEnv, describe_hardware, git_commit, setup, teardown
from .export import FinishedRun, export
from .lineage import load_parent, parse_arch_args, stage_arch_args
from .recipes import recipe_for
from .state import STATE_NAME, load_state, peek_info, refuse_changed_settings, run_fingerprint, save_state
from .step import (SWA_EPOCH_BATCHNORM_IMAGES, Precision, build_optimizer, choose_precision, evaluate,
                   raise_if_nonfinite, recompute_batchnorm, synchronize, train_step)

# bench/inference.py imports parse_arch_args and synchronize from here.
__all__ = ["train", "lr_factor", "Trainee", "kept_weights", "parse_arch_args", "synchronize"]

# How often (steps) a CUDA run checks the loss for NaN/inf: each check waits for the GPU to catch up.
FINITE_CHECK_EVERY_CUDA = 20


# -- settings: the recipe filled in and every option checked, before any data is read --------------------------
def settle_settings(config: TrainConfig) -> TrainConfig:
    """``config`` with ``{arch}`` filled in, the recipe's values for what it leaves unset, and ``--arch-args``
    in one spelling, so the fingerprint and the reproducing command do not depend on spacing."""
    arch = check_name(config.arch)
    if config.time_budget and config.epochs is not None:
        raise ValueError("give --epochs or --time-budget, not both")
    if config.time_budget < 0:
        raise ValueError(f"--time-budget must be positive seconds, got {config.time_budget}")
    cfg = dataclasses.replace(config, out=config.out.format(arch=arch), run_dir=config.run_dir.format(arch=arch),
                              init_from=config.init_from.format(arch=arch), teacher=config.teacher.format(arch=arch))
    cfg = cfg.resolved(recipe_for(arch))
    check_swa(cfg)
    if cfg.teacher and not 0 < cfg.teacher_weight <= 1:
        raise ValueError(f"--teacher-weight must be in (0, 1], got {cfg.teacher_weight}")
    if cfg.swa_epochs and not cfg.swa_lr:
        cfg = dataclasses.replace(cfg, swa_lr=round(cfg.lr / 5, 8))
    arch_args = parse_arch_args(arch, cfg.arch_args, cfg.image_size, inherited=bool(cfg.init_from))
    return dataclasses.replace(cfg, arch_args=json.dumps(arch_args, sort_keys=True, separators=(",", ":"))
                               if arch_args else "")


# -- model and optimiser ------------------------------------------------------------------------------------------
def lr_factor(step: int, total_steps: int, warmup_steps: int, hold_steps: int = 0, hold_factor: float = 0.0) -> float:
    """Linear warm-up from 0 to 1, then linear decay: to 0 at the last step or, with ``hold_steps``, to
    ``hold_factor``, held through the last ``hold_steps`` steps (the averaged epochs of ``--swa-epochs``)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_end = total_steps - hold_steps
    if step >= decay_end:
        return hold_factor
    return hold_factor + (1 - hold_factor) * (decay_end - step) / max(1, decay_end - warmup_steps)


@dataclass
class Trainee:
    """The model being trained and what updates it: its weight average, optimizer and schedule."""

    model: nn.Module
    average: nn.Module | None  # an EMA copy (--ema-decay) or SWA's AveragedModel (--swa-epochs); None without
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    lr_at: Callable[[int], float]  # the schedule's factor at an optimizer step


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
    average = None
    if cfg.ema_decay > 0:
        average = copy.deepcopy(model).eval()
    elif cfg.swa_epochs:
        average = torch.optim.swa_utils.AveragedModel(model)
    optimizer = build_optimizer(model, cfg)
    return Trainee(model, average, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at), lr_at)


def kept_weights(trainee: Trainee) -> nn.Module:
    """The weights the checkpoint keeps, and so the ones validation scores: the weight average (SWA's once it
    has averaged an epoch), else the model's own. The one place that decides it."""
    average = trainee.average
    if isinstance(average, torch.optim.swa_utils.AveragedModel):
        return average.module if average.n_averaged > 0 else trainee.model
    return average if average is not None else trainee.model


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.lerp_(param.detach(), 1 - decay)
    for ema_buffer, buffer in zip(ema_model.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)


def resume_from_state(cfg: TrainConfig, env: RunEnv, state_path: Path, saved: dict | None, trainee: Trainee,
                      steps_per_epoch: int) -> tuple[list[dict], int, float]:
    """With ``--resume`` and a saved state: load it into ``trainee`` and put the schedule where an uninterrupted
    run would be. Returns (history, epochs done, training seconds so far): nothing done for a fresh run."""
    if not (cfg.resume and state_path.exists()):
        if state_path.exists() and env.is_main:
            print(f"note: {state_path} exists; starting afresh (pass --resume to continue it)")
        return [], 0, 0.0
    if saved:  # an unreadable state is load_state's to report
        refuse_changed_settings(state_path, saved, cfg)
    info = load_state(state_path, trainee.model, trainee.average, trainee.optimizer, env.device)
    start_epoch, schedule = info["epoch"], trainee.schedule
    # Put the schedule where an uninterrupted run would be after this many optimizer steps.
    schedule.last_epoch = start_epoch * steps_per_epoch
    for group, base_lr in zip(trainee.optimizer.param_groups, schedule.base_lrs):
        group["lr"] = base_lr * trainee.lr_at(schedule.last_epoch)
    if env.is_main:
        print(f"resuming {cfg.arch} from {state_path} after epoch {start_epoch}")
    return info["history"], start_epoch, info["train_seconds"]


# -- the loop -----------------------------------------------------------------------------------------------------
def train_epoch(cfg: TrainConfig, env: RunEnv, epoch: int, step_model, trainee: Trainee, data: TrainingData,
                teacher: Teacher | None, precision: Precision) -> dict:
    """One pass over the training split, a step per batch, then, in the averaged epochs of ``--swa-epochs``,
    the weights added to their average. ``step_model`` is the model as the step runs it (compiled, DDP)."""
    # Every random draw of the epoch derives from (seed, epoch): a resumed run repeats it exactly.
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout
    order = torch.randperm(len(data.train_y), generator=generator).to(env.device)
    trainee.model.train()
    started = time.perf_counter()
    seen, loss_sum, correct = 0, torch.zeros((), device=env.device), torch.zeros((), device=env.device)
    # On a CPU every op has finished when it returns, so checking each step costs nothing; on a GPU
    # each check is a wait, so flags are gathered and read every few steps.
    nonfinite, check_every = [], 1 if env.device.type == "cpu" else FINITE_CHECK_EVERY_CUDA
    steps, mine = data.steps_per_epoch, slice(env.rank * data.local_batch, (env.rank + 1) * data.local_batch)
    bar = tqdm(range(steps), desc=f"{cfg.arch} {epoch + 1}/{cfg.epochs}", unit="step",
               disable=not (cfg.progress and env.is_main), leave=False)
    for step in bar:
        batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        loss, logits, y = train_step(step_model, trainee.optimizer, data.train_x[batch], data.train_y[batch],
                                     data.mean, data.std, cfg, precision, generator, teacher, shard=mine)
        nonfinite.append(~torch.isfinite(loss.detach()))
        if len(nonfinite) == check_every or step == steps - 1:
            raise_if_nonfinite(nonfinite, cfg.arch, epoch, step + 1 - len(nonfinite), steps)
        trainee.schedule.step()
        if cfg.ema_decay > 0:
            update_ema(trainee.average, trainee.model, cfg.ema_decay)
        seen += len(y)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if not bar.disable and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen * env.world_size / (time.perf_counter() - started):.0f}")
    if cfg.swa_epochs and epoch >= cfg.epochs - cfg.swa_epochs:
        trainee.average.update_parameters(trainee.model)
    return {"seen": seen, "loss_sum": loss_sum, "correct": correct, "seconds": time.perf_counter() - started}


# -- evaluation and saving ----------------------------------------------------------------------------------------
def validate_epoch(cfg: TrainConfig, env: RunEnv, epoch: int, trainee: Trainee, data: TrainingData,
                   precision: Precision, totals: dict) -> dict:
    """Score the weights the checkpoint would keep after this epoch on the validation split, print the
    epoch's line and return its log record."""
    kept = kept_weights(trainee)
    if cfg.swa_epochs and kept is not trainee.model:  # no step ran with the averaged weights' BatchNorm statistics
        recompute_batchnorm(kept, data.train_x, data.mean, data.std, cfg, precision.memory_format,
                            limit=None if epoch + 1 == cfg.epochs else SWA_EPOCH_BATCHNORM_IMAGES)
    val_loss, val_acc, _ = evaluate(kept, data.val_x, data.val_y, data.mean, data.std, autocast=precision.autocast,
                                    channels_last=cfg.channels_last)
    seen, seconds = totals["seen"], totals["seconds"]
    record = {"epoch": epoch + 1, "train_loss": totals["loss_sum"].item() / seen,
              "train_accuracy": totals["correct"].item() / seen, "val_loss": val_loss, "val_accuracy": val_acc,
              "lr": trainee.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 2),
              "images_per_second": round(seen * env.world_size / seconds, 1)}
    if cfg.swa_epochs:
        record["averaged_epochs"] = int(trainee.average.n_averaged)  # val_* score their mean's weights
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
    save_state(state_path, trainee.model, trainee.average, trainee.optimizer, info)
    atomic_write_bytes(state_path.parent / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())


# -- the run ------------------------------------------------------------------------------------------------------
def train(config: TrainConfig) -> dict:
    """Train ``config.arch``; returns the exported config (or the partial history when paused)."""
    cfg = settle_settings(config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = setup(cfg.device)
    try:
        return run(cfg, env)
    finally:
        teardown(env)


def run(cfg: TrainConfig, env: RunEnv) -> dict:
    """One process's share of the run with settled settings: data, model and optimiser, the loop, the export."""
    code_version = git_commit()  # the code this run starts with, even if the tree changes while it trains
    data = prepare_data(cfg, env)  # every image on the training device, as uint8
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    precision = choose_precision(cfg, env.device)
    state_path = Path(cfg.run_dir) / STATE_NAME
    saved = peek_info(state_path) if cfg.resume and state_path.exists() else None
    # A further stage (--init-from) starts from the parent's weights and keeps its normalisation.
    parent_weights, parent = load_parent(cfg, data.image_set, saved)
    if parent:
        data = dataclasses.replace(data, mean=torch.tensor(parent["mean"], device=env.device),
                                   std=torch.tensor(parent["std"], device=env.device))
    arch_args = stage_arch_args(cfg.arch, json.loads(cfg.arch_args or "{}"), parent)
    teacher = None
    if cfg.teacher:
        teacher = Teacher(cfg.teacher, data.image_set, cfg.image_size, cfg.split_seed, cfg.val_fraction, data.mean,
                          data.std, env.device, precision.memory_format)
    cfg = settle_epochs(cfg, env, saved, data, precision, arch_args, teacher)  # --time-budget: a timed trial

    trainee = build_trainee(cfg, len(data.image_set.class_names), arch_args, parent_weights, data.steps_per_epoch,
                            env.device, precision.memory_format)
    history, start_epoch, train_seconds = resume_from_state(cfg, env, state_path, saved, trainee,
                                                            data.steps_per_epoch)
    step_model = trainee.model
    if env.world_size > 1:
        step_model = nn.parallel.DistributedDataParallel(step_model, device_ids=[env.device]
                                                         if env.device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model)

    for epochs_this_run, epoch in enumerate(range(start_epoch, cfg.epochs)):
        if cfg.max_epochs_this_run and epochs_this_run >= cfg.max_epochs_this_run:
            if env.is_main:
                print(f"paused after epoch {epoch}; continue with --resume")
            return {"paused_at_epoch": epoch, "history": history}
        totals = train_epoch(cfg, env, epoch, step_model, trainee, data, teacher, precision)
        train_seconds += totals["seconds"]
        if env.world_size > 1:
            torch.distributed.barrier()
        if env.is_main:
            history.append(validate_epoch(cfg, env, epoch, trainee, data, precision, totals))
            save_progress(state_path, trainee, epoch + 1, history, train_seconds, run_fingerprint(cfg), parent)
        if env.world_size > 1:
            torch.distributed.barrier()

    if not env.is_main:
        return {}
    kept = kept_weights(trainee)
    round_parameters(kept, cfg.weights_dtype)  # the figures a checkpoint reports are those of its weights as stored
    val_loss, val_accuracy, _ = evaluate(kept, data.val_x, data.val_y, data.mean, data.std,
                                         autocast=precision.autocast, channels_last=cfg.channels_last)
    _, tta_accuracy, _ = evaluate(kept, data.val_x, data.val_y, data.mean, data.std, autocast=precision.autocast,
                                  channels_last=cfg.channels_last, tta=True)  # as the app serves it
    scores = {"val_accuracy": val_accuracy, "val_loss": val_loss, "val_accuracy_tta": tta_accuracy}
    return export(cfg, FinishedRun(kept, scores, data.image_set, len(data.val_y), data.mean, data.std, history,
                                   train_seconds, describe_hardware(env.device, env.world_size), precision.bf16,
                                   code_version, parent, teacher.record if teacher else None))
