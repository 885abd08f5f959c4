"""Where training runs: device choice, distributed set-up, and a description of the hardware."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


SHARED_GPU_RUNS_VARIABLE = "TRAIN_SHARED_GPU_RUNS"
COMMIT_VARIABLE = "TRAIN_GIT_COMMIT"  # for copies of the code without .git (a remote GPU machine, say)
TRIAL_BARRIER_VARIABLE = "TRAIN_TRIAL_BARRIER"  # "PARTIES:FOLDER", set by train.parallel
TRIAL_BARRIER_TIMEOUT = 120.0  # seconds; a run that never arrives (stuck loading, say) must not hold the rest


@dataclass
class RunEnv:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def setup(device_name: str = "auto") -> RunEnv:
    """Single process, or one of ``torchrun``'s processes (it sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return RunEnv(pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return RunEnv(device, rank, world_size)


def trial_barrier() -> tuple[int, str] | None:
    """The (parties, folder) of the barrier train.parallel set up for its runs; None for a run on its own."""
    value = os.environ.get(TRIAL_BARRIER_VARIABLE)
    if not value:
        return None
    parties, _, folder = value.partition(":")
    return int(parties), folder


def mark_arrived(folder: str | Path, name: str) -> None:
    """Counts ``name`` as arrived at the trial barrier in ``folder`` (train.parallel marks runs that ended)."""
    Path(folder, name).touch()


def wait_for_trial_barrier(name: str, timeout: float = TRIAL_BARRIER_TIMEOUT, poll: float = 0.2) -> float:
    """Waits until every run train.parallel started side by side is ready to time its trial; seconds waited.

    Runs started together finish loading (data, teachers) at different times, and a trial timed while
    others are still loading measures a less crowded device than the training that follows: such a trial
    runs faster than the epochs after it, and the deadline stops the run short of its last epoch. Each run
    marks itself in the barrier's folder and waits for the others (or the timeout); runs that ended are
    marked by train.parallel, and a restarted run finds itself marked.
    Without the variable (a run on its own) there is nothing to wait for.
    """
    barrier = trial_barrier()
    if barrier is None:
        return 0.0
    parties, folder = barrier
    mark_arrived(folder, name)
    started = time.monotonic()
    while len(os.listdir(folder)) < parties:
        if time.monotonic() - started > timeout:
            print(f"{name}: timed its trial without the other runs after waiting {timeout:.0f} s for them",
                  flush=True)
            break
        time.sleep(poll)
    return time.monotonic() - started


def pass_trial_barrier(name: str) -> None:
    """Counts a run that times no trial (a resumed one keeps its epoch count) as arrived, without waiting."""
    barrier = trial_barrier()
    if barrier is not None:
        mark_arrived(barrier[1], name)


def teardown(env: RunEnv) -> None:
    if env.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def describe_hardware(device: torch.device, world_size: int = 1) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        name = f"{world_size} x {name}" if world_size > 1 else name
        # train.parallel runs several trainings on one GPU; their times only mean something with that said.
        shared = int(os.environ.get(SHARED_GPU_RUNS_VARIABLE, "1"))
        return f"{name}, shared by {shared} concurrent runs" if shared > 1 else name
    model = platform.processor() or "CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    processes = f", {world_size} processes" if world_size > 1 else ""
    return f"{model}, {torch.get_num_threads()} threads{processes} (CPU)"


def git_commit() -> str:
    """The commit the code came from, ``-dirty`` if it had local changes; "unknown" outside git."""
    if os.environ.get(COMMIT_VARIABLE):
        return os.environ[COMMIT_VARIABLE]
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
