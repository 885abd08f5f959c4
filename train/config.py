"""Training options: one dataclass, a comment on each default, set from the command line.

Every field is a ``--flag`` (``--batch-size 256``); an unknown flag or a value of the wrong type is an
error, never a silent default. Fields left as ``None`` take the architecture's recipe (train/recipes.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass


@dataclass
class TrainConfig:
    arch: str = "resnet"                 # registered architecture name, or "all" for every one in turn
    data: str = "cifar10"                # "cifar10" (torchvision download) or a path: ImageFolder dir, .tar, .tar.gz
    out: str = "checkpoints/{arch}"      # where the finished checkpoint goes; {arch} is filled in
    run_dir: str = "runs/{arch}"         # resumable training state and logs while training
    cache_dir: str = "data/cache"        # decoded uint8 tensors, so the next run starts in seconds
    image_size: int = 32                 # side in pixels the images are resized to (CIFAR is 32)
    val_fraction: float = 0.1            # share of each class held out for validation (500 per CIFAR class)
    split_seed: int = 0                  # seed of the validation split: fixed, so every run sees the same split
    seed: int = 0                        # seed of initialisation, data order and augmentation
    init_from: str = ""                  # start from this checkpoint's weights (folder or Hub id; {arch} is filled in):
                                         # a further training stage
    arch_args: str = ""                  # the architecture's settings over its defaults, as JSON ('{"width": 48}');
                                         # a further stage keeps its parent's
    epochs: int | None = None            # passes over the training split
    time_budget: float = 0.0             # seconds to train for instead of --epochs: a timed trial picks the epoch count
    batch_size: int | None = None        # images per optimisation step, over all processes
    lr: float | None = None              # peak learning rate (SGD: per batch of batch_size)
    weight_decay: float | None = None    # L2 / decoupled (AdamW) weight decay on weights, not on norms or biases
    optimizer: str | None = None         # "sgd" (Nesterov momentum 0.9) or "adamw"
    label_smoothing: float | None = None # share of the target spread evenly over the other classes
    warmup_epochs: float | None = None   # linear warm-up from 0 to lr, in epochs; then linear decay to 0
    ema_decay: float | None = None       # exponential moving average of weights per step; 0 turns it off
    swa_epochs: int = 0                  # stochastic weight averaging: the checkpoint is the mean of
                                         # the last N epochs' weights; 0 = off
    swa_lr: float = 0.0                  # learning rate held through the averaged epochs (with --swa-epochs);
                                         # 0 = a fifth of --lr
    translate: int | None = None         # random-crop padding in pixels (reflect); 0 turns it off
    cutout: int | None = None            # side of a random square blanked per image, pixels; 0 turns it off
    cutmix: float | None = None          # probability a batch gets CutMix (a box pasted from another image); 0 = off
    teacher: str = ""                    # checkpoints to distil from (comma-separated; {arch} is filled in):
                                         # their mean prediction joins the labels
    teacher_weight: float = 0.5          # share of the target that is the teacher's probabilities (with --teacher)
    device: str = "auto"                 # "auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:1"...
    bf16: bool = True                    # bfloat16 autocast where the device supports it
    cpu_bf16: bool | None = None         # bf16 autocast on a CPU too (needs AVX512-BF16/AMX);
                                         # only some nets gain, so the recipe says
    channels_last: bool = True           # NHWC memory layout: faster convolutions on CPUs and tensor cores
    compile: bool = False                # torch.compile the model (pays off on long GPU runs)
    threads: int = 0                     # CPU threads for torch; 0 = torch's default (all cores)
    resume: bool = False                 # continue from run_dir's last finished epoch
    max_epochs_this_run: int = 0         # stop (resumably) after this many epochs; 0 = run to the end
    weights_dtype: str = "float16"       # precision the checkpoint stores its parameters in:
                                         # "float16" (half the size) or "float32"
    push_to_hub: str = ""                # Hugging Face repo id to upload the finished checkpoint to
    progress: bool = True                # show a progress bar

    def resolved(self, recipe: dict) -> TrainConfig:
        """A copy with every ``None`` filled from ``recipe``."""
        filled = {key: recipe[key] for key, value in dataclasses.asdict(self).items() if value is None}
        missing = [key for key, value in dataclasses.asdict(self).items() if value is None and key not in filled]
        if missing:
            raise ValueError(f"recipe for {self.arch} does not set {missing}")
        return dataclasses.replace(self, **filled)


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


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def field_comments(config_class) -> dict[str, str]:
    """The comment beside each field in the class source: the ``--help`` text, written once. A comment too long
    for one line goes on in comment-only lines right below it with their ``#`` under its ``#``."""
    comments, field, column = {}, None, -1
    for line in inspect.getsource(config_class).splitlines():
        beside = re.match(r"^\s+(\w+):[^#]*#\s*(.+)$", line)
        if beside:
            field, column = beside[1], line.index("#")
            comments[field] = beside[2]
            continue
        below = re.match(r"^(\s+)#\s*(.+)$", line)
        if below and field and len(below[1]) == column:
            comments[field] += " " + below[2]
        else:
            field = None
    return comments


def build_parser(config_class=TrainConfig, description: str = "", prog: str | None = None) -> argparse.ArgumentParser:
    """One ``--flag`` per dataclass field; booleans take ``--flag``/``--no-flag`` or ``--flag false``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints, comments = typing.get_type_hints(config_class), field_comments(config_class)
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        text = comments.get(f.name, "").replace("%", "%%")
        if base is bool:
            parser.add_argument(flag, type=_parse_bool, nargs="?", const=True, default=f.default, help=text)
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, type=base, default=f.default, help=text or None)
    return parser


def parse_config(argv=None, config_class=TrainConfig, description: str = "", prog: str | None = None):
    """Parse ``argv`` into ``config_class``; argparse exits with a message on unknown flags or bad values."""
    args = build_parser(config_class, description, prog).parse_args(argv)
    return config_class(**vars(args))
