"""Shared fixtures: small data sets the tests make themselves (no downloads, no shared data needed)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach the network

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"


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


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tiny") / "images")
