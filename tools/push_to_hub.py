"""``python -m tools.push_to_hub --checkpoint checkpoints/resnet --repo-id USER/NAME``: upload a checkpoint
folder with a model card (``train.hub.push_to_hub``, which training also calls for ``--push-to-hub``)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from train.config import parse_config
from train.hub import push_to_hub


@dataclass
class PushConfig:
    checkpoint: str = "checkpoints/resnet"   # local checkpoint folder
    repo_id: str = ""                        # Hugging Face repo id, USER/NAME
    private: bool = False                    # create the repository as private
    revision: str = ""                       # branch to push to; "" = main


def main(argv=None) -> int:
    cfg = parse_config(argv, PushConfig, description=__doc__, prog="python -m tools.push_to_hub")
    if not cfg.repo_id:
        print("error: --repo-id USER/NAME is required", file=sys.stderr)
        return 2
    push_to_hub(cfg.checkpoint, cfg.repo_id, cfg.private, cfg.revision or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
