"""SE attention's plots in Classify, drawn once per checkpoint's profiles file: the class-specificity plot by
depth, and the excitation plot whose fixed parts (the class profiles) are drawn once and each image's lines
per call."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

import explain

from .store import LoadedModel


def profiles_version(folder) -> tuple[str, int, int] | None:
    """(folder, mtime, size) of the SE class profiles saved beside a checkpoint; None when there are none."""
    path = Path(folder) / explain.PROFILES_NAME
    if not path.is_file():
        return None
    stat = path.stat()
    return str(folder), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=32)
def _read_se_profiles(folder: str, mtime_ns: int, size: int):
    try:
        return explain.load_se_profiles(folder)
    except ValueError:
        return None


@lru_cache(maxsize=32)
def class_specificity_plot(folder: str, mtime_ns: int, size: int):
    profiles = _read_se_profiles(folder, mtime_ns, size)
    return explain.plot_class_specificity(profiles) if profiles is not None and profiles.get("blocks") else None


@lru_cache(maxsize=32)
def _se_plotter(version: tuple | None, layout: tuple, class_names: tuple) -> explain.SEExcitationPlot:
    """A checkpoint's SE excitation plot, its fixed parts drawn once, each image's lines per call."""
    profiles = None if version is None else _read_se_profiles(*version)
    return explain.SEExcitationPlot(list(layout), profiles, class_names)


def se_plot(loaded: LoadedModel, excitations, predicted: int) -> Image.Image:
    """This image's SE excitations, per block, over the checkpoint's class profiles."""
    layout = tuple((block, len(values)) for block, values in excitations)
    plotter = _se_plotter(profiles_version(loaded.folder), layout, tuple(loaded.config["class_names"]))
    return plotter.draw(excitations, predicted)
