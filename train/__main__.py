"""``python -m train --arch NAME|all [--data PATH] [options]``: train one architecture or the whole zoo."""
from __future__ import annotations

import dataclasses
import sys

from architectures import check_name, list_models
from .config import parse_config
from .data import DataError
from .trainer import train

EXIT_DIVERGED = 3  # the loss went NaN/inf: train.parallel retries such a run at a lower learning rate


def main(argv=None) -> int:
    config = parse_config(argv, description=__doc__, prog="python -m train")
    names = list_models() if config.arch == "all" else [config.arch]
    if len(names) > 1 and config.arch_args:
        print("error: --arch-args holds one architecture's settings; name it with --arch", file=sys.stderr)
        return 2
    try:
        for name in names:
            check_name(name)
            train(dataclasses.replace(config, arch=name))
    except FloatingPointError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except (DataError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
