"""``--time-budget SECONDS``: how many whole epochs fit, timed by a short trial on a throwaway model.

The trial runs the loop's own step (train.step.train_step) on this machine under its present load, other
runs sharing the GPU included, and times what each epoch adds after training too (validation, the BatchNorm
pass of weight averaging, saving the state). A resumed run keeps the epoch count its first part chose.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from architectures import create_model
from .config import TrainConfig, check_swa
from .data import TrainingData
from .distill import Teacher
from .env import RunEnv, pass_trial_barrier, wait_for_trial_barrier
from .state import STATE_NAME, save_state
from .step import (SWA_EPOCH_BATCHNORM_IMAGES, Precision, build_optimizer, evaluate, recompute_batchnorm,
                   synchronize, train_step)


def settle_epochs(cfg: TrainConfig, env: RunEnv, saved: dict | None, data: TrainingData, precision: Precision,
                  arch_args: dict, teacher: Teacher | None) -> TrainConfig:
    """``cfg`` with the epochs ``--time-budget`` fits: timed by a trial on a fresh run, kept from the saved state
    ``saved`` on a resumed one. Without a budget, ``cfg`` as it is."""
    if not cfg.time_budget:
        return cfg
    if env.world_size > 1:
        raise ValueError("--time-budget needs one process (each would time its own trial); pass --epochs")
    if saved:
        epochs = saved["fingerprint"]["epochs"]
        pass_trial_barrier(cfg.arch)  # runs beside it that do time one must not wait for it
    else:
        epochs = epochs_for_budget(cfg, data, precision, arch_args, teacher)
    cfg = dataclasses.replace(cfg, epochs=epochs)
    check_swa(cfg)
    return cfg


def epochs_for_budget(cfg: TrainConfig, data: TrainingData, precision: Precision, arch_args: dict | None = None,
                      teacher: Teacher | None = None, safety: float = 0.9) -> int:
    """How many whole epochs fit in ``cfg.time_budget`` seconds, timed on a throwaway model.

    The trial trains a fresh copy of the architecture for up to ten seconds (a twentieth of the budget for
    short budgets) after a few warm-up steps. It also times what each epoch adds after training (validation,
    saving the state): on a GPU shared by many runs that can be a large share of a short epoch, and leaving
    it out overruns the budget by as much. ``safety`` leaves room for drift.
    """
    device, memory_format = data.train_x.device, precision.memory_format  # the images live on the training device
    train_x, train_y = data.train_x, data.train_y
    model = create_model(cfg.arch, num_classes=len(data.image_set.class_names), **(arch_args or {}))
    model = model.to(device, memory_format=memory_format).train()
    optimizer = build_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed + 7919)

    def step():
        batch = torch.randint(len(train_y), (cfg.batch_size,), generator=generator).to(device)
        train_step(model, optimizer, train_x[batch], train_y[batch], data.mean, data.std, cfg, precision, generator,
                   teacher)

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
    evaluate(model, data.val_x, data.val_y, data.mean, data.std, autocast=precision.autocast,
             channels_last=channels_last)
    started = time.perf_counter()
    evaluate(model, data.val_x, data.val_y, data.mean, data.std, autocast=precision.autocast,
             channels_last=channels_last)
    last_pass_seconds = 0.0  # the last epoch's BatchNorm pass covers every image, not the sample: its excess
    if cfg.swa_epochs:  # counted for every epoch, though the first ones average nothing
        pass_started = time.perf_counter()
        recompute_batchnorm(model, train_x, data.mean, data.std, cfg, memory_format, limit=SWA_EPOCH_BATCHNORM_IMAGES)
        sampled = min(len(train_y), SWA_EPOCH_BATCHNORM_IMAGES)
        last_pass_seconds = (time.perf_counter() - pass_started) * (len(train_y) - sampled) / sampled
    trial_state = Path(cfg.run_dir) / ("trial_" + STATE_NAME)
    save_state(trial_state, model, None, optimizer, {"trial": True})
    trial_state.unlink()
    after_epoch_seconds = time.perf_counter() - started
    epoch_seconds = (len(train_y) // cfg.batch_size) * cfg.batch_size / images_per_second + after_epoch_seconds
    epochs = max(1, int((cfg.time_budget * safety - last_pass_seconds) / epoch_seconds))
    together = f" (after {waited:.1f} s waiting for the other runs)" if waited else ""
    last_pass = f", {last_pass_seconds:.2f} s more for the last BatchNorm pass" if cfg.swa_epochs else ""
    print(f"{cfg.arch}: trial ran {images_per_second:.0f} img/s{together}, {after_epoch_seconds:.2f} s per epoch to "
          f"validate and save{last_pass}; {epochs} epochs fit {cfg.time_budget:.0f} s", flush=True)
    return epochs
