"""Shared fixtures: small data sets the tests make themselves (no downloads, no shared data needed), and the
running app (`python app.py` in a subprocess) for the HTTP and browser tests."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from preprocess import CIFAR10_CLASSES
from tools.app_http import AppDidNotStart, free_port, wait_until_answering  # noqa: F401  (free_port: for the tests too)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach the network

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
CIFAR10 = CIFAR10_CLASSES  # the name test_app_http.py and test_browser.py import; preprocess's tuple is the source
APP_STARTUP_TIMEOUT_S = 120  # generous: CI machines may be busy; the benchmark measures the real start time


def make_image_folder(root: Path, classes=("red", "green", "blue"), per_class=40, size=32, seed=0) -> Path:
    """An ImageFolder whose classes differ in their dominant colour (learnable in a few steps), with noise."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3))
            pixels[..., index % 3] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module", autouse=True)
def torch_threads_as_the_session_began():
    """Each module starts with the session's torch thread count: a module that sets one thread (importing app.py
    does, as the server runs one thread per request) would otherwise leave every later module on one core."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "images")


def random_checkpoint(folder: Path, name: str, seed: int = 0, **overrides) -> Path:
    """A random-weight checkpoint of ``name`` in ``folder / name`` (config fields overridable); its folder."""
    import torch

    from architectures import create_model, save_pretrained

    torch.manual_seed(seed)
    model = create_model(name)
    return save_pretrained(model, folder / name, {
        "display_name": type(model).display_name, "class_names": list(CIFAR10_CLASSES), "image_size": 32,
        "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "val_accuracy": 0.1, "epochs": 0,
        "train_seconds": 0.0, "hardware": "none (random weights, for the app tests)", **overrides})


@contextmanager
def running_app(checkpoint_dir: Path, workdir: Path, timeout_s: float = APP_STARTUP_TIMEOUT_S):
    """`python app.py` on a free local port serving ``checkpoint_dir``, once it answers: {url, process, log}.

    Its log and Gradio's temporary files go under ``workdir``; it runs in its own session, which is ended on exit.
    """
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "CHECKPOINT_DIR": str(checkpoint_dir), "CHECKPOINT_REPO": "", "OMP_NUM_THREADS": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(workdir / "gradio_tmp")}
    log = (workdir / "app.log").open("w+")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            print(f"app.py answered after {wait_until_answering(process, url, timeout_s, poll_s=0.5):.1f} s")
        except AppDidNotStart as error:
            log.seek(0)
            pytest.fail(f"{error}:\n{log.read()[-3000:]}")
        yield {"url": url, "process": process, "log": log}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # this test's own server (its own session), nothing else
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
