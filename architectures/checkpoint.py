"""The checkpoint format: ``model.safetensors`` plus ``config.json`` in one folder (or Hub repository).

``config.json`` carries everything needed to rebuild and use the model (``arch``, ``arch_args``,
``class_names``, ``image_size``, ``mean``, ``std``) and what it scored and how it was made. It is checked
before anything is built: a checkpoint is untrusted input. Weights are safetensors, never a pickle.

Why not ``PyTorchModelHubMixin``: its ``from_pretrained`` rebuilds one known class from the config's
constructor arguments, while a zoo checkpoint names its class in the config (``arch``), carries metadata
that is not a constructor argument, and must be validated before construction. The folder layout it
writes is the same (``config.json`` + ``model.safetensors``), and the Hub side uses huggingface_hub.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._registry import check_name, create_model, default_args

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
MAX_CLASSES = 10_000
MAX_CONFIG_BYTES = 1_000_000
PUBLIC_FILE_MODE = 0o644  # mkstemp makes files private (0600); checkpoints are meant to be read by others
# How learned parameters may be stored. float16 halves a checkpoint (the zoo's 40 MB budget) and keeps 11
# significant bits, far finer than the weights' own noise; the model is always rebuilt and run in float32.
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupt, or describes something this code will not build."""


def _stage(path: Path, write) -> str:
    """``write(tmp)`` into a new temporary file beside ``path``; its name, or nothing left behind on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, PUBLIC_FILE_MODE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _write_synced(tmp: str, data: bytes) -> None:
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _save_tensors(tensors: dict[str, torch.Tensor], tmp: str, metadata: dict[str, str] | None) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)


def weight_dtype(name: str) -> torch.dtype:
    if name not in WEIGHT_DTYPES:
        raise CheckpointError(f"weights_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {name!r}")
    return WEIGHT_DTYPES[name]


def round_parameters(model: torch.nn.Module, weights_dtype: str) -> torch.nn.Module:
    """Round every learned parameter to ``weights_dtype`` and back, in place: the model then computes
    exactly what it will compute once saved with that dtype and loaded again, so figures measured on it
    are the stored checkpoint's figures."""
    dtype = weight_dtype(weights_dtype)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(dtype))
    return model


def stored_state(model: torch.nn.Module, weights_dtype: str) -> dict[str, torch.Tensor]:
    """The state dict as written: parameters in ``weights_dtype``; buffers (BatchNorm's running statistics,
    a few kilobytes) keep their own dtype, since a tiny running variance would lose digits in float16."""
    parameter_names = {name for name, _ in model.named_parameters()}
    dtype = weight_dtype(weights_dtype)
    return {name: tensor.to(dtype) if name in parameter_names else tensor
            for name, tensor in model.state_dict().items()}


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks: which weights a result came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: a crash leaves the old file intact."""
    path = Path(path)
    os.replace(_stage(path, lambda tmp: _write_synced(tmp, data)), path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None):
    """``safetensors.torch.save_file`` through a temporary file and an atomic rename."""
    path = Path(path)
    os.replace(_stage(path, lambda tmp: _save_tensors(tensors, tmp, metadata)), path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_arch_args(arch: str, arch_args) -> dict:
    """Check architecture settings from outside (a config file, ``--arch-args``) before anything is built
    from them: known keys only, numbers of sane size, no objects; raise ``CheckpointError``."""
    if not isinstance(arch_args, dict):
        raise CheckpointError("arch_args must be an object")
    unknown = set(arch_args) - set(default_args(arch))
    if unknown:
        raise CheckpointError(f"{arch} takes no argument(s) {sorted(unknown)}; it takes {sorted(default_args(arch))}")
    for key, value in arch_args.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if _is_number(item) and not (-1 <= item <= 4096):
                raise CheckpointError(f"arch_args.{key}={value!r} is outside sane sizes")
            if not (_is_number(item) or isinstance(item, (str, bool))):
                raise CheckpointError(f"arch_args.{key} has an unsupported value {value!r}")
    return arch_args


def validate_config(config) -> dict:
    """Check a parsed ``config.json`` before it is used to build anything; raise ``CheckpointError``."""
    if not isinstance(config, dict):
        raise CheckpointError("config.json must hold a JSON object")
    try:
        arch = check_name(config.get("arch"))
    except ValueError as error:
        raise CheckpointError(f"config.json: {error}") from None
    try:
        validate_arch_args(arch, config.get("arch_args", {}))
    except CheckpointError as error:
        raise CheckpointError(f"config.json: {error}") from None
    names = config.get("class_names")
    if (not isinstance(names, list) or not 2 <= len(names) <= MAX_CLASSES
            or not all(isinstance(n, str) and 0 < len(n) <= 200 for n in names)):
        raise CheckpointError("config.json: class_names must be a list of 2 to 10,000 non-empty strings")
    size = config.get("image_size", 32)
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise CheckpointError(f"config.json: image_size {size!r} must be an integer from 8 to 1024")
    for key in ("mean", "std"):
        value = config.get(key)
        if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
            raise CheckpointError(f"config.json: {key} must be three numbers (RGB)")
    if not all(v > 0 for v in config["std"]):
        raise CheckpointError("config.json: std must be positive")
    return config


def _resolve_folder(path_or_repo_id: str | os.PathLike, revision: str | None) -> Path:
    """A local folder as is; otherwise a Hub repo id, downloaded (pinned to ``revision`` when given)."""
    folder = Path(path_or_repo_id)
    if folder.is_dir():
        return folder
    text = str(path_or_repo_id)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", text) or ".." in text:
        raise CheckpointError(f"no checkpoint folder at {text!r} (and it is not a Hub repo id)")
    from huggingface_hub import snapshot_download  # only when the Hub is really asked for

    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.png",
                                                                              "*.csv", "*.md"]))
    except Exception as error:  # network, auth, missing repo: one clear message
        raise CheckpointError(f"could not download {text!r} from the Hugging Face Hub: {error}") from error


def load_config(path_or_repo_id, revision: str | None = None) -> dict:
    folder = _resolve_folder(path_or_repo_id, revision)
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no {CONFIG_NAME}")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{config_path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from None
    config = validate_config(config)
    config["_folder"] = str(folder)
    return config


def load_pretrained(path_or_repo_id, revision: str | None = None, device: str | torch.device = "cpu"):
    """Build the model a checkpoint describes and load its weights; returned in eval mode.

    The model gets ``config`` (the validated config.json) as an attribute, so callers find class names,
    normalisation and metrics beside the weights.
    """
    config = load_config(path_or_repo_id, revision)
    folder = Path(config["_folder"])
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise CheckpointError(f"{folder} has no {WEIGHTS_NAME}")
    model = create_model(config["arch"], num_classes=len(config["class_names"]), **config.get("arch_args", {}))
    try:
        # Read on the CPU: load_state_dict copies into the model's CPU tensors anyway, and ZeroGPU's CUDA
        # emulation at start-up does not catch safetensors' own device copy (serve/zerogpu.py).
        state = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights_path} is not a readable safetensors file: {error}") from None
    expected = model.state_dict()
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(f"{weights_path} does not match {config['arch']}: missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"{weights_path}: {key} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[key].shape)}")
        if tensor.dtype.is_floating_point != expected[key].dtype.is_floating_point:
            raise CheckpointError(f"{weights_path}: {key} is {tensor.dtype}, expected {expected[key].dtype}")
    model.load_state_dict(state)  # copies into the model's float32 tensors, whatever precision was stored
    model.config = config
    return model.to(device).eval()


def save_pretrained(model, folder, config: dict, weights_dtype: str = "float32") -> Path:
    """Write ``model.safetensors`` and ``config.json`` atomically (both written, then both renamed).

    ``config`` is completed with the model's ``arch``, ``arch_args``, parameter count and ``weights_dtype``
    (the parameters' stored precision: call ``round_parameters`` first to measure what is stored); the
    result is validated exactly as ``load_pretrained`` will validate it.
    """
    folder = Path(folder)
    state = stored_state(model, weights_dtype)
    config = {"arch": model.arch, "arch_args": model.arch_args, **config,
              "params": sum(p.numel() for p in model.parameters()), "weights_dtype": weights_dtype}
    config.pop("_folder", None)
    validate_config(json.loads(json.dumps(config)))
    if len(config["class_names"]) != model.num_classes:
        raise CheckpointError(f"{len(config['class_names'])} class names for a model with {model.num_classes} outputs")
    # Both files are written in full before either replaces its predecessor, so a save interrupted while
    # writing (all of its time but two renames) leaves the previous weights and config together.
    weights_path, config_path = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    metadata = {"format": "pt", "arch": model.arch}
    staged = [_stage(weights_path, lambda tmp: _save_tensors(state, tmp, metadata))]
    try:
        text = json.dumps(config, indent=2) + "\n"
        staged.append(_stage(config_path, lambda tmp: _write_synced(tmp, text.encode())))
        os.replace(staged[0], weights_path)
        os.replace(staged[1], config_path)
    except BaseException:
        for tmp in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    return folder


def _stage_range(numbers: list[int]) -> str:
    """``[3, 4, 5]`` as "stages 3-5", ``[2]`` as "stage 2", ``[1, 3]`` as "stages 1, 3"."""
    if len(numbers) == 1:
        return f"stage {numbers[0]}"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"stages {numbers[0]}-{numbers[-1]}"
    return "stages " + ", ".join(map(str, numbers))


def training_summary(config: dict) -> str:
    """How a checkpoint was made, from its ``config.json``: its number of training stages and which of them
    distilled from teachers (and from which architectures), e.g. "4 stages; stages 3-4 distilled from vgg,
    resnet". A checkpoint trained in one go has no ``stages``: it is its own one stage."""
    stages = config.get("stages") or [config]
    distilled = [number for number, stage in enumerate(stages, 1) if stage.get("teachers")]
    teachers: list[str] = []
    for number in distilled:
        for teacher in stages[number - 1]["teachers"]:
            name = teacher.get("arch") or str(teacher.get("checkpoint", "?"))
            if name not in teachers:
                teachers.append(name)
    if len(stages) == 1:
        return "1 stage" + (f", distilled from {', '.join(teachers)}" if distilled else "")
    summary = f"{len(stages)} stages"
    if distilled:
        summary += f"; {_stage_range(distilled)} distilled from {', '.join(teachers)}"
    return summary


def hardware_summary(config: dict) -> str:
    """The machines a checkpoint's stages ran on, each named once, without how many runs shared them."""
    stages = str(config.get("hardware") or "?").split(" + ")
    return "; ".join(sorted({re.sub(r" \(\d+ epochs\)$|, shared by \d+ concurrent runs", "", stage).strip()
                             for stage in stages}))
