"""Checkpoints for serving: found lazily, validated, loaded once, cached, and reloaded when they change.

Settings come from the environment (all optional):

- ``CHECKPOINT_DIR``: local folder with one ``<arch>/`` sub-folder per checkpoint (default ``checkpoints``).
- ``CHECKPOINT_REPO``: a Hugging Face Hub model repository used only for architectures whose local files
  are absent. Either one repository laid out like ``checkpoints/`` (``<arch>/config.json`` ...) or a
  pattern with ``{arch}`` (``user/cifar10-{arch}``) for one repository per architecture.
- ``CHECKPOINT_REVISION``: the commit, tag or branch every Hub download is pinned to.
- ``DEVICE``: ``cpu``, ``cuda``, ``cuda:1``...; default CUDA when available, else the CPU.

An architecture name is checked against the registry (``architectures.check_name``) before it is used
to build a path or a Hub file name. A missing or broken checkpoint raises ``ModelUnavailable`` for that
architecture only; the others keep working.
"""
from __future__ import annotations

import enum
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from architectures import CheckpointError, check_name, list_models, load_config, load_pretrained
from architectures.checkpoint import CONFIG_NAME, WEIGHTS_NAME, file_sha256
from explain.common import model_lock

from .recent import RecentlyUsed

HUB_RETRY_S = 300  # after a failed Hub download, the same architecture is retried at most every 5 minutes
# Random-weights twins kept at once on the CPU: one per architecture would double the weights the server
# holds, and a twin is rebuilt (seeded, so the same) in a fraction of an explanation's time. On a GPU (and in
# ZeroGPU's preload) every twin is kept: the server's memory is not what they take there.
TWINS_KEPT_ON_CPU = 2
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, "log.jsonl", "curves.png", "confusion.png", "se_profiles.safetensors",
             "probes.json", "probes.safetensors")


class Unavailable(enum.Enum):
    """Why an architecture cannot be served: what a caller that words it differently reads, not the message."""
    NO_CHECKPOINT = "no checkpoint"      # no files for it, locally or in the Hub repository
    UNUSABLE = "unusable"                # its files are there but cannot be loaded
    NOT_DOWNLOADED = "not downloaded"    # the Hub download failed (network, authentication, revision)


class ModelUnavailable(RuntimeError):
    """This architecture's checkpoint is missing or unusable: ``reason`` says which, the message why."""

    def __init__(self, message: str, reason: Unavailable):
        super().__init__(message)
        self.reason = reason


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` (or ``$DEVICE``) if given, else CUDA when available, else the CPU."""
    requested = requested if requested is not None else os.environ.get("DEVICE", "").strip()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"DEVICE={requested!r} is not a torch device ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={requested!r} asks for CUDA, but torch sees no CUDA device")
    return device


def _signature(folder: Path) -> tuple:
    """Changes whenever a checkpoint file is replaced (saves are atomic renames, so mtime and size move)."""
    parts = []
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        stat = (folder / name).stat()
        parts.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(parts)


def for_serving(model: torch.nn.Module) -> torch.nn.Module:
    """The model in the layout the app serves it in (the benchmarks time the same): channels_last, the
    layout oneDNN's CPU convolutions (and CUDA's) are fastest in. On the 2-core CPU it cuts the six-view
    served pass of GoogLeNet and DenseNet about in half; the outputs agree to 1e-6."""
    return model.to(memory_format=torch.channels_last)


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    config: dict
    folder: Path
    weights_sha256: str
    signature: tuple
    # Held while the model runs: Grad-CAM hooks must only ever see their own forward pass. It is the model's
    # own lock (``explain.common.model_lock``), the one explain/ takes, so serve and explain never hold two
    # different locks for one model, and two models never wait for each other.
    lock: threading.RLock = field(init=False, repr=False)

    def __post_init__(self):
        self.lock = model_lock(self.model)


class ModelStore:
    """Loads checkpoints on first use and keeps them; thread-safe."""

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None, repo: str | None = None,
                 revision: str | None = None, device: str | torch.device | None = None,
                 ood_thresholds: dict | None = None):
        self.checkpoint_dir = Path(checkpoint_dir if checkpoint_dir is not None
                                   else os.environ.get("CHECKPOINT_DIR", "checkpoints"))
        self.repo = repo if repo is not None else (os.environ.get("CHECKPOINT_REPO", "").strip() or None)
        self.revision = revision if revision is not None else (os.environ.get("CHECKPOINT_REVISION", "").strip()
                                                               or None)
        self.device = device if isinstance(device, torch.device) else pick_device(device)
        # Out-of-distribution thresholds by architecture in place of the checkpoints' own (for tests).
        self.ood_overrides = ood_thresholds
        self._loaded: dict[str, LoadedModel] = {}
        self._hub_folders: dict[str, Path] = {}
        self._hub_failures: dict[str, tuple[float, ModelUnavailable]] = {}
        self._failures: dict[str, tuple[tuple | None, str]] = {}
        self._name_locks = {name: threading.Lock() for name in list_models()}
        self.twins_kept = TWINS_KEPT_ON_CPU if self.device.type == "cpu" else len(self._name_locks)
        self._twins = RecentlyUsed(self.twins_kept)  # name -> (LoadedModel, its random-weights twin)

    # -- where a checkpoint lives ----------------------------------------------------------------------
    def local_folder(self, name: str) -> Path:
        return self.checkpoint_dir / check_name(name)

    def has_local(self, name: str) -> bool:
        folder = self.local_folder(name)
        return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()

    def _hub_folder(self, name: str) -> Path:
        """Download ``name``'s checkpoint from ``self.repo`` (pinned to ``self.revision``) once."""
        name = check_name(name)
        if name in self._hub_folders:
            return self._hub_folders[name]
        failed = self._hub_failures.get(name)
        if failed is not None and time.monotonic() - failed[0] < HUB_RETRY_S:
            raise failed[1]  # do not make every request wait for the same network error
        try:
            folder = self._download(name)
        except ModelUnavailable as error:
            self._hub_failures[name] = (time.monotonic(), error)
            raise
        self._hub_failures.pop(name, None)
        self._hub_folders[name] = folder
        return folder

    def _download(self, name: str) -> Path:
        from huggingface_hub import snapshot_download  # only when the Hub is really asked for

        try:
            if "{arch}" in self.repo:
                folder = Path(snapshot_download(self.repo.replace("{arch}", name), revision=self.revision,
                                                allow_patterns=list(HUB_FILES)))
            else:
                root = Path(snapshot_download(self.repo, revision=self.revision,
                                              allow_patterns=[f"{name}/{file}" for file in HUB_FILES]))
                folder = root / name
        except Exception as error:  # network, authentication, missing repository or revision
            raise ModelUnavailable(f"{name}: could not download its checkpoint from the Hugging Face Hub "
                                   f"({self.repo}, revision {self.revision or 'main'}): {error}",
                                   Unavailable.NOT_DOWNLOADED) from error
        if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
            raise ModelUnavailable(f"{name}: the Hub repository {self.repo} has no checkpoint for it",
                                   Unavailable.NO_CHECKPOINT)
        return folder

    def folder(self, name: str, fetch: bool = True) -> Path | None:
        """The folder holding ``name``'s checkpoint: local first, then the Hub (when ``fetch``); or None."""
        if self.has_local(name):
            return self.local_folder(name)
        if self.repo and fetch:
            return self._hub_folder(name)
        return self._hub_folders.get(check_name(name))

    def available(self, fetch: bool = False) -> list[str]:
        """Architectures with a checkpoint (locally; with ``fetch``, also those the Hub repository holds)."""
        names = []
        for name in list_models():
            try:
                if self.folder(name, fetch=fetch) is not None:
                    names.append(name)
            except ModelUnavailable:
                continue
        return names

    # -- configs and models ----------------------------------------------------------------------------
    def config(self, name: str, fetch: bool = False) -> dict | None:
        """The validated config.json of ``name``'s checkpoint, or None when absent or invalid."""
        if name in self._loaded and self._is_current(self._loaded[name]):
            return self._loaded[name].config
        try:
            folder = self.folder(name, fetch=fetch)
            return load_config(folder) if folder is not None else None
        except (CheckpointError, ModelUnavailable, OSError):
            return None

    def configs(self, fetch: bool = False) -> dict[str, dict]:
        """Every usable config, by architecture name, in the zoo's order."""
        found = {}
        for name in list_models():
            config = self.config(name, fetch=fetch)
            if config is not None:
                found[name] = config
        return found

    def _is_current(self, loaded: LoadedModel) -> bool:
        try:
            return _signature(loaded.folder) == loaded.signature
        except OSError:
            return False

    def get(self, name: str) -> LoadedModel:
        """``name``'s model, loaded on first use; raises ``ModelUnavailable`` with a clear reason."""
        name = check_name(name)
        loaded = self._loaded.get(name)
        if loaded is not None and self._is_current(loaded):
            return loaded
        with self._name_locks[name]:
            loaded = self._loaded.get(name)
            if loaded is not None and self._is_current(loaded):
                return loaded
            folder = self.folder(name, fetch=True)
            if folder is None:
                raise ModelUnavailable(f"{name}: no checkpoint yet (expected {name}/{WEIGHTS_NAME} and "
                                       f"{CONFIG_NAME} in the checkpoint folder); train it with "
                                       f"`python -m train --arch {name}`", Unavailable.NO_CHECKPOINT)
            try:
                signature = _signature(folder)
            except OSError as error:
                raise ModelUnavailable(f"{name}: checkpoint files vanished while loading ({error})",
                                       Unavailable.NO_CHECKPOINT) from None
            failure = self._failures.get(name)
            if failure is not None and failure[0] == signature:
                # The same broken files: do not parse them again.
                raise ModelUnavailable(failure[1], Unavailable.UNUSABLE)
            try:
                model = for_serving(load_pretrained(folder, device=self.device))
                sha = file_sha256(folder / WEIGHTS_NAME)
            except (CheckpointError, OSError, RuntimeError, ValueError) as error:
                # Say which checkpoint and why, without publishing the server's directory layout.
                detail = str(error).replace(f"{folder.parent}{os.sep}", "")
                message = f"{name}: its checkpoint cannot be used: {detail}"
                self._failures[name] = (signature, message)
                raise ModelUnavailable(message, Unavailable.UNUSABLE) from None
            self._failures.pop(name, None)
            loaded = LoadedModel(name, model, model.config, folder, sha, signature)
            self._loaded[name] = loaded
            return loaded

    def random_twin(self, loaded: LoadedModel) -> torch.nn.Module:
        """``loaded``'s architecture with random weights (``explain.randomised_twin``): the faithfulness panel
        compares each map with the same method's map from it. The ``twins_kept`` most recently used are kept."""
        kept = self._twins.get(loaded.name)
        if kept is not None and kept[0] is loaded:
            return kept[1]
        with self._name_locks[loaded.name]:
            kept = self._twins.get(loaded.name)
            if kept is None or kept[0] is not loaded:
                from explain import randomised_twin  # the explanation package is only needed once one is asked for

                kept = (loaded, for_serving(randomised_twin(loaded.model)))
                self._twins.put(loaded.name, kept)
            return kept[1]

    def ood_entry(self, name: str) -> dict | None:
        """The out-of-distribution threshold calibrated for ``name``'s checkpoint (its config's ``ood``), or None."""
        if self.ood_overrides is not None:
            return self.ood_overrides.get(name)
        return (self.config(name) or {}).get("ood")

    def recommended_cam(self, name: str) -> tuple[str, str | None]:
        """(method, layer) that explains ``name``'s checkpoint most faithfully (its config's ``cam``); layer
        None means the deepest."""
        from explain import recommended_cam

        return recommended_cam(self.config(name) or {})

    def status(self) -> dict[str, str]:
        """For each architecture: "loaded", "ready" (files present), "missing" or the error message."""
        result = {}
        for name in list_models():
            if name in self._loaded and self._is_current(self._loaded[name]):
                result[name] = "loaded"
            elif name in self._failures:
                result[name] = self._failures[name][1]
            elif self.has_local(name) or name in self._hub_folders:
                result[name] = "ready"
            else:
                result[name] = "on the Hub" if self.repo else "missing"
        return result
