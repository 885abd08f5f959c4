"""Train several architectures at once, one process each, side by side on one machine (one GPU, say).

A CIFAR-sized net leaves most of an H100 idle: each step is a few hundred small kernels launched from
Python, so one process is bound by its launch rate, not by the GPU. Running the zoo side by side fills the
gaps and finishes all eleven in about the time one takes. Each run gets the same ``--time-budget`` and
picks its own epoch count from a timed trial taken while all of them are running (see
``train.budget.epochs_for_budget``; each waits at a barrier until the others are ready to time theirs too),
so they finish together. A run whose loss goes NaN/inf is started
again, once per ``--retries``, at half the learning rate with the time that is left.

    python -m train.parallel --data PATH --time-budget 420 --batch-size 512 [--archs resnet,vgg] [-- FLAGS]

Anything after ``--`` goes to every ``python -m train``; ``--arch-flags mlpmixer='--cutmix 0.5'`` adds flags
to one architecture's run only (later flags win; an ``--lr`` there is the rate a retry halves).
``--lr-scale 0.5`` runs each at half its recipe's learning rate: a further stage from the shipped weights
(``-- --init-from checkpoints/{arch}``) starts nearer its goal.
Each run's output goes to ``LOG_DIR/ARCH.log``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from architectures import check_name, list_models

from .__main__ import EXIT_DIVERGED
from .env import SHARED_GPU_RUNS_VARIABLE, TRIAL_BARRIER_VARIABLE, mark_arrived
from .recipes import lr_for_batch, recipe_for

POLL_SECONDS = 2.0


@dataclass
class Run:
    arch: str
    lr: float
    budget: float
    attempts: int = 0
    process: subprocess.Popen | None = None
    outcome: str = "waiting"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m train.parallel", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="training images, as for python -m train")
    parser.add_argument("--time-budget", type=float, required=True, help="seconds of training per run")
    parser.add_argument("--archs", default="all", help="comma-separated architecture names, or all")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="batch size for every run, learning rates rescaled from each recipe; 0 keeps the recipes'")
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="each run's learning rate (its recipe's, rescaled for --batch-size) times this")
    parser.add_argument("--arch-flags", action="append", default=[], metavar="ARCH=FLAGS",
                        help="flags for one architecture's run only, after the shared ones; repeatable")
    parser.add_argument("--out", default="checkpoints/{arch}", help="checkpoint folder per run; {arch} is filled in")
    parser.add_argument("--run-dir", default="runs/{arch}", help="training state per run; {arch} is filled in")
    parser.add_argument("--log-dir", default="runs", help="where ARCH.log files go")
    parser.add_argument("--sharing-with", type=int, default=0, metavar="N",
                        help="processes started elsewhere that share the device too "
                             "(recorded in each checkpoint's hardware)")
    parser.add_argument("--retries", type=int, default=1,
                        help="restarts at half the learning rate after a NaN/inf loss")
    parser.add_argument("--deadline", type=float, default=0,
                        help="seconds after which unfinished runs are stopped; 0 = 1.25 x budget + 120")
    parser.add_argument("extra", nargs="*", help="flags passed on to every python -m train (after --)")
    args = parser.parse_args(argv)
    if args.time_budget <= 0:
        parser.error("--time-budget must be positive")
    if args.lr_scale <= 0:
        parser.error("--lr-scale must be positive")
    args.flags_for = {}
    for item in args.arch_flags:
        arch, equals, flags = item.partition("=")
        if not equals or not flags.strip():
            parser.error(f"--arch-flags expects ARCH=FLAGS, got {item!r}")
        try:
            args.flags_for[check_name(arch.strip())] = shlex.split(flags)
        except ValueError as error:
            parser.error(f"--arch-flags {item!r}: {error}")
    for flags in [args.extra, *args.flags_for.values()]:
        rate = last_flag_value(list(flags), "--lr")
        try:
            if rate is not None and not float(rate) > 0:
                raise ValueError
        except ValueError:
            parser.error(f"--lr must be a positive number, got {rate!r}")
    return args


def last_flag_value(flags: list[str], name: str) -> str | None:
    """The value the last ``name VALUE`` (or ``name=VALUE``) in ``flags`` gives, as argparse reads it."""
    value = None
    for i, flag in enumerate(flags):
        if flag == name and i + 1 < len(flags):
            value = flags[i + 1]
        elif flag.startswith(name + "="):
            value = flag.partition("=")[2]
    return value


def starting_lr(args, arch: str) -> float:
    """A run's learning rate: an explicit ``--lr`` among its flags, else its recipe's, rescaled and scaled."""
    explicit = last_flag_value(list(args.extra) + args.flags_for.get(arch, []), "--lr")
    if explicit is not None:
        return float(explicit)
    return args.lr_scale * (lr_for_batch(arch, args.batch_size) if args.batch_size else recipe_for(arch)["lr"])


def train_command(args, run: Run, threads: int) -> list[str]:
    command = [sys.executable, "-m", "train", "--arch", run.arch, "--data", args.data,
               "--time-budget", f"{run.budget:.0f}", "--out", args.out, "--run-dir", args.run_dir,
               "--threads", str(threads), "--no-progress"]
    rate_differs = bool(args.batch_size or run.attempts or args.lr_scale != 1)  # from the recipe's
    if rate_differs:
        command += ["--batch-size", str(args.batch_size or recipe_for(run.arch)["batch_size"])]
    command += list(args.extra) + args.flags_for.get(run.arch, [])
    if rate_differs:
        command += ["--lr", f"{run.lr:.6g}"]  # last, so a retry's halved rate wins over an --lr in the flags
    return command


def start(args, run: Run, threads: int, env: dict) -> None:
    log_path = Path(args.log_dir) / f"{run.arch}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(args, run, threads)
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        run.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    run.attempts += 1
    run.outcome = "running"


def summary_line(args, run: Run) -> str:
    config_path = Path(args.out.format(arch=run.arch)) / "config.json"
    if run.outcome == "done" and config_path.exists():
        config = json.loads(config_path.read_text())
        return (f"{run.arch:14s} {config['val_accuracy']:.2%} after {config['epochs']} epochs, "
                f"{config['train_seconds']:.0f} s, lr {run.lr:.4g}")
    return f"{run.arch:14s} {run.outcome}"


def main(argv=None) -> int:
    args = parse_args(argv)
    names = list_models() if args.archs == "all" else [check_name(name.strip()) for name in args.archs.split(",")]
    if len(set(names)) < len(names):  # they would share a checkpoint folder, a log and a place at the barrier
        raise SystemExit(f"--archs names an architecture more than once: {args.archs}")
    runs = [Run(name, starting_lr(args, name), args.time_budget) for name in names]
    barrier = tempfile.mkdtemp(prefix="trial-barrier-")
    try:
        return run_side_by_side(args, runs, barrier)
    finally:
        shutil.rmtree(barrier, ignore_errors=True)


def run_side_by_side(args, runs: list[Run], barrier: str) -> int:
    threads = max(1, (os.cpu_count() or 1) // len(runs))
    env = {**os.environ, SHARED_GPU_RUNS_VARIABLE: str(len(runs) + args.sharing_with), "PYTHONUNBUFFERED": "1",
           TRIAL_BARRIER_VARIABLE: f"{len(runs)}:{barrier}"}
    deadline = args.deadline or 1.25 * args.time_budget + 120
    started = time.monotonic()
    for run in runs:
        start(args, run, threads, env)
    print(f"started {len(runs)} runs, {threads} CPU thread(s) each, {args.time_budget:.0f} s budget each; "
          f"logs in {args.log_dir}/", flush=True)
    while any(run.outcome == "running" for run in runs):
        time.sleep(POLL_SECONDS)
        elapsed = time.monotonic() - started
        for run in (r for r in runs if r.outcome == "running"):
            code = run.process.poll()
            if code is None:
                if elapsed > deadline:
                    run.process.kill()
                    run.process.wait()
                    run.outcome = f"stopped at the {deadline:.0f} s deadline"
                continue
            mark_arrived(barrier, run.arch)  # one that ended before its trial must not hold the others back
            left = args.time_budget - elapsed
            if code == EXIT_DIVERGED and run.attempts <= args.retries and left > 0.2 * args.time_budget:
                run.lr, run.budget = run.lr / 2, left
                print(f"{run.arch}: loss diverged; restarting at lr {run.lr:.4g} with {left:.0f} s", flush=True)
                start(args, run, threads, env)
            else:
                run.outcome = "done" if code == 0 else f"failed (exit {code}; see {args.log_dir}/{run.arch}.log)"
                print(f"{run.arch}: {run.outcome} after {elapsed:.0f} s", flush=True)
    print("\n".join(summary_line(args, run) for run in runs), flush=True)
    return 0 if all(run.outcome == "done" for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
