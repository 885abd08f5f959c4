"""Upload a checkpoint folder to the Hugging Face Hub with a model card made from its config.

Training calls ``push_to_hub`` itself when given ``--push-to-hub REPO_ID``; ``python -m tools.push_to_hub``
uploads an existing folder.
"""
from __future__ import annotations

from pathlib import Path

from architectures import load_config
from architectures.checkpoint import atomic_write_bytes

UPLOADED = ["model.safetensors", "config.json", "log.jsonl", "curves.png", "confusion.png", "se_profiles.safetensors",
            "README.md"]


def model_card(config: dict) -> str:
    """A Hub model card (README.md with YAML front matter) from a checkpoint's config."""
    recipe = config.get("recipe", {})
    trained = (f"{config.get('dataset', '?')}; {config.get('epochs', '?')} epochs in "
               f"{config.get('train_seconds', 0) / 60:.1f} min on {config.get('hardware', '?')}")
    return f"""---
library_name: pytorch
license: mit
tags: [image-classification, cifar10, safetensors, {config['arch']}]
---
# {config.get('display_name', config['arch'])} trained from scratch

Architecture `{config['arch']}` of the CIFAR model zoo, arguments `{config.get('arch_args', {})}`,
{config.get('params', 0):,} parameters, input {config['image_size']}x{config['image_size']} RGB normalised with
mean {config['mean']} and std {config['std']}.

- Classes: {', '.join(config['class_names'])}
- Validation accuracy: {config.get('val_accuracy', float('nan')):.2%} on {config.get('val_split', 'a held-out split')}
- Data: {trained}
- Recipe: {recipe}
- Reproduce: `{config.get('command', '')}` (code commit {config.get('git_commit', '?')})

Load with `architectures.load_pretrained("<this repo id>")` from the project's code; the weights are safetensors.
"""


def push_to_hub(folder, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    from huggingface_hub import HfApi

    folder = Path(folder)
    config = load_config(folder)
    atomic_write_bytes(folder / "README.md", model_card(config).encode())
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    files = [name for name in UPLOADED if (folder / name).is_file()]
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, allow_patterns=files, revision=revision,
                               commit_message=f"Upload {config['arch']} checkpoint")
    print(f"pushed {files} to https://huggingface.co/{repo_id} ({commit.oid if hasattr(commit, 'oid') else commit})")
    return repo_id
