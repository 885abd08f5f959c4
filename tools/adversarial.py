"""Robustness of the zoo's checkpoints to adversarial attacks, and whether an attack made on one fools the others.

    python -m tools.adversarial checkpoints/vgg checkpoints/resnet --resume   # none named: every checkpoint
    python -m tools.adversarial --transfer

Per checkpoint, on a seeded subset of its validation split (500 images): accuracy under L-infinity PGD (20
steps, 2 random starts) and APGD-CE (100 steps) at each budget of ``robustness.adversarial.EPSILONS``, of the
model alone and as served (the six-view average the app shows). An image fooled at a budget is fooled at every
larger one (the same perturbation lies inside the larger ball), so each budget attacks only the images still
standing, and each image stops at its first fooling step. After every budget, adversarial.json beside the
weights is rewritten (atomically) with what is finished, so ``--resume`` continues where a run stopped; once
complete, config.json gains ``adversarial`` and the folder ``adversarial.png``; bench/ gets the zoo's plot.

``--transfer``: PGD at 4/255 on 200 validation images (the same for every checkpoint) against each served
checkpoint, rounded to 8-bit files, then every checkpoint's served accuracy on them and the zoo's majority
vote's: bench/adversarial_transfer.json and its heatmap. The examples are cached under --cache-dir.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from architectures import CheckpointError, list_models, load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, atomic_save_tensors, atomic_write_json, file_sha256
from robustness.adversarial import EPSILONS, PixelClassifier, run_attack
from robustness.adversarial_report import (EVALUATED, MODES, PLOT_NAME, RESULT_NAME, TRANSFER_NAME, TRANSFER_PLOT,
                                           ZOO_PLOT, epsilon_key, load_result, transfer_sentence, worst_case)
from serve.predict import served_temperature
from serve.store import for_serving
from serve.zoo_plots import transfer_heatmap
from tools._config import update_config
from train.data import DataError, checkpoint_split, load_images

BATCH = 50                 # images attacked at once (served: six views each)
TRANSFER_EPSILON = 4       # in 1/255, the budget for the transfer matrix
ATTACKS_DESCRIBED = ("PGD: a random start in the ball, steps of 2.5 epsilon / steps along the gradient's sign "
                     "(Madry et al.), restarts for the images standing; APGD-CE: Croce and Hein's schedule (first "
                     "step 2 epsilon, halved at checkpoints, momentum 0.75, rho 0.75). Untargeted, cross-entropy, "
                     "each image stopped at its first fooling step")
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers; a stored result is resumed only under the same settings."""
    images: int = 500          # validation images per checkpoint
    seed: int = 0              # the subset's shuffle and every attack's random starts
    pgd_steps: int = 20        # step size 2.5 epsilon / steps (Madry et al.)
    pgd_restarts: int = 2      # random starts, the later ones for the images still standing
    apgd_steps: int = 100      # AutoAttack's APGD-CE budget
    apgd_restarts: int = 1

    def steps(self, attack: str) -> tuple[int, int]:
        return {"pgd": (self.pgd_steps, self.pgd_restarts), "apgd-ce": (self.apgd_steps, self.apgd_restarts)}[attack]


def evaluation_indices(config: dict, image_set, n: int, seed: int) -> torch.Tensor:
    """The first ``n`` of a seeded shuffle of the checkpoint's validation split (the transfer matrix uses a
    prefix of the same shuffle)."""
    _, val_idx = checkpoint_split(config, image_set)
    if not 1 <= n <= len(val_idx):
        raise ValueError(f"need 1..{len(val_idx)} validation images, got {n}")
    return val_idx[torch.randperm(len(val_idx), generator=torch.Generator().manual_seed(seed))][:n]


def stage_seed(seed: int, *parts) -> int:
    """A fixed seed per (attack, mode, budget, batch): a resumed run draws what an uninterrupted one would."""
    return seed * 1_000_003 + zlib.crc32(repr(parts).encode())


def classifier(model, mode: str, weights_sha256: str) -> PixelClassifier:
    temperature = served_temperature(model.config, weights_sha256) if mode == "served" else 1.0
    return PixelClassifier.of(model, served=mode == "served", temperature=temperature)


@torch.no_grad()
def predictions(clf: PixelClassifier, pixels: torch.Tensor) -> torch.Tensor:
    """Probabilities of uint8 images, batch-wise."""
    return torch.cat([clf.probs(pixels[i:i + BATCH].float() / 255) for i in range(0, len(pixels), BATCH)])


def attack_chain(clf: PixelClassifier, images: torch.Tensor, labels: torch.Tensor, attack: str, settings: Settings,
                 mode: str, state: dict, on_budget=None, progress: bool = True, name: str = "") -> dict:
    """Accuracy under ``attack`` at every budget, the smallest first, each attacking only the images standing.

    ``state`` ({"fallen_at": per image the budget that fooled it, 0 when misclassified unattacked, None while
    standing; "accuracy": {budget: share}; "seconds": {budget: s}}) is continued and returned; ``on_budget(state)``
    is called after each budget."""
    x = images.float() / 255
    if state.get("fallen_at") is None:
        right = predictions(clf, images).argmax(1).cpu() == labels
        state = {"fallen_at": [None if ok else 0 for ok in right.tolist()], "accuracy": {}, "seconds": {}}
    steps, restarts = settings.steps(attack)
    for epsilon in EPSILONS:
        key = epsilon_key(epsilon)
        if key in state["accuracy"]:
            continue
        start = time.perf_counter()
        standing = [i for i, fell in enumerate(state["fallen_at"]) if fell is None]
        bar = tqdm(total=len(standing), desc=f"{name} {mode} {attack} {key}/255", unit="img", disable=not progress,
                   mininterval=30, file=sys.stdout)
        for batch, first in enumerate(range(0, len(standing), BATCH)):
            chunk = torch.tensor(standing[first:first + BATCH], dtype=torch.long)
            _, fooled = run_attack(clf, x[chunk], labels[chunk], attack, epsilon, seed=stage_seed(
                settings.seed, attack, mode, key, batch), steps=steps, restarts=restarts)
            for i in chunk[fooled.cpu()].tolist():
                state["fallen_at"][i] = epsilon
            bar.update(len(chunk))
        bar.close()
        state["accuracy"][key] = round(sum(fell is None for fell in state["fallen_at"]) / len(labels), 4)
        state["seconds"][key] = round(time.perf_counter() - start, 1)
        if on_budget is not None:
            on_budget(state)
    return state


def is_complete(result: dict) -> bool:
    keys = {epsilon_key(e) for e in EPSILONS}
    return all(set(result["accuracy"].get(a, {}).get(m, {})) == keys for a in EVALUATED for m in MODES)


def config_entry(result: dict) -> dict:
    """config.json's ``adversarial`` (the contract of issue 45): accuracies per budget under "pgd" and
    "apgd-ce", each "alone" and "served"; the image count, the command and the weights it was measured on."""
    return {**{attack: result["accuracy"][attack] for attack in EVALUATED}, "clean": result["clean"],
            "images": result["images"], "command": result["command"], "weights_sha256": result["weights_sha256"]}


def evaluate(folder, image_set, settings: Settings = Settings(), modes=MODES, attacks=EVALUATED,
             resume: bool = False, command: str = "", progress: bool = True) -> dict:
    """Measure one checkpoint folder; writes adversarial.json after every budget, and once every attack and
    mode is done, config.json's ``adversarial`` and the plot. Returns the stored result."""
    folder = Path(folder)
    model = for_serving(load_pretrained(folder))
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # gradients are taken with respect to the pixels only
    config = model.config
    if image_set.class_names != config["class_names"]:
        raise DataError(f"the data has classes {image_set.class_names}, the checkpoint {config['class_names']}")
    sha = file_sha256(folder / WEIGHTS_NAME)
    indices = evaluation_indices(config, image_set, settings.images, settings.seed)
    images, labels = image_set.images[indices], image_set.labels[indices]
    fresh = {"command": command or f"python -m tools.adversarial {folder}", "weights_sha256": sha,
             "images": settings.images, "seed": settings.seed, "settings": asdict(settings),
             "val_split": config.get("val_split", ""), "threads": torch.get_num_threads(),
             "prediction": "alone: the model on the plain view; served: the app's average over six shifted and "
                           "mirrored views, at the checkpoint's temperature",
             "clean": {}, "accuracy": {a: {} for a in EVALUATED}, "fallen_at": {a: {} for a in EVALUATED},
             "seconds": {a: {} for a in EVALUATED}, "complete": False}
    stored = load_result(folder, sha) if resume else None
    same = stored is not None and stored.get("settings") == asdict(settings)
    if resume and stored is not None and not same:
        print(f"{folder}: stored {RESULT_NAME} has other settings; starting again", flush=True)
    result = stored if same else fresh
    result.update(command=fresh["command"], attacks=ATTACKS_DESCRIBED)
    for mode in modes:
        clf = classifier(model, mode, sha)
        for attack in attacks:
            state = {"fallen_at": result["fallen_at"][attack].get(mode), "accuracy": result["accuracy"][attack].get(
                mode, {}), "seconds": result["seconds"][attack].get(mode, {})}

            def keep(state, attack=attack, mode=mode):
                result["fallen_at"][attack][mode] = state["fallen_at"]
                result["accuracy"][attack][mode] = state["accuracy"]
                result["seconds"][attack][mode] = state["seconds"]
                result["clean"][mode] = round(sum(f != 0 for f in state["fallen_at"]) / len(labels), 4)
                result["complete"] = is_complete(result)
                atomic_write_json(folder / RESULT_NAME, result)

            attack_chain(clf, images, labels, attack, settings, mode, state, keep, progress, folder.name)
    if result["complete"]:
        update_config(folder, {"adversarial": config_entry(result)})
        plot_checkpoint(result, folder / PLOT_NAME, config.get("display_name", config["arch"]))
    return result


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_checkpoint(result: dict, path, title: str) -> None:
    """Accuracy against epsilon: PGD and APGD-CE, alone and served, from the unattacked accuracy at 0."""
    plt = _pyplot()
    keys = [epsilon_key(e) for e in EPSILONS]
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for attack, style in zip(EVALUATED, ("-", "--")):
        for mode, colour in zip(MODES, ("tab:blue", "tab:orange")):
            curve = result["accuracy"][attack].get(mode, {})
            if curve:
                ax.plot(range(len(curve) + 1), [result["clean"][mode]] + [curve[k] for k in keys if k in curve],
                        style, color=colour, marker="o", markersize=3, label=f"{attack.upper()}, {mode}")
    ax.set_xticks(range(len(keys) + 1), ["0"] + keys)
    ax.set(xlabel="epsilon (1/255 per pixel, L-infinity)", ylabel="accuracy", ylim=(0, 1),
           title=f"{title}: accuracy under attack ({result['images']} images)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_zoo(checkpoint_dir: Path, path: Path) -> Path | None:
    """One line per architecture: accuracy against epsilon under the stronger attack, alone and served."""
    results = {arch: load_result(checkpoint_dir / arch) for arch in list_models()}
    results = {arch: result for arch, result in results.items() if result}
    if not any(worst_case(result, mode) for result in results.values() for mode in MODES):
        return None
    plt = _pyplot()
    keys = [epsilon_key(e) for e in EPSILONS]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=True)
    for ax, mode in zip(axes, MODES):
        for arch, result in results.items():
            curve = worst_case(result, mode)
            if curve:
                ax.plot(range(len(curve) + 1), [result["clean"][mode]] + [curve[k] for k in keys if k in curve],
                        marker="o", markersize=3, label=arch)
        ax.set_xticks(range(len(keys) + 1), ["0"] + keys)
        ax.set(xlabel="epsilon (1/255 per pixel, L-infinity)", ylim=(0, 1),
               title="the model alone" if mode == "alone" else "as served (six-view average)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy under the stronger of PGD and APGD-CE")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def majority_vote(probs: torch.Tensor) -> torch.Tensor:
    """The zoo's vote per image from every model's probabilities (models x N x classes): the most frequent
    top-1; a tie goes to the label with the highest summed confidence among the tied (as Compare's)."""
    top, label = probs.max(-1)
    classes = probs.shape[-1]
    hits = label.unsqueeze(-1) == torch.arange(classes)           # models x N x classes
    count = hits.sum(0).float()
    confidence = (hits * top.unsqueeze(-1)).sum(0)
    return (count + confidence / (len(probs) + 1)).argmax(-1)    # the confidence sum only breaks ties


def transfer_examples(model, clf: PixelClassifier, images, labels, settings: Settings, epsilon: float,
                      cache: Path | None) -> torch.Tensor:
    """Untargeted PGD on ``clf`` without early stop (the highest-loss point: an example that stops at its own
    model's boundary would transfer badly), rounded to 8-bit files; cached in ``cache`` when given."""
    if cache is not None and cache.is_file():
        from safetensors.torch import load_file
        return load_file(cache)["images"]
    out = []
    for batch, first in enumerate(range(0, len(images), BATCH)):
        x = images[first:first + BATCH].float() / 255
        x_adv, _ = run_attack(clf, x, labels[first:first + BATCH], "pgd", epsilon,
                              seed=stage_seed(settings.seed, "transfer", epsilon, batch),
                              steps=settings.pgd_steps, restarts=1, early_stop=False)
        out.append((x_adv.cpu() * 255).round().to(torch.uint8))  # an integer budget: rounding stays in the ball
    adversarial = torch.cat(out)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors({"images": adversarial}, cache)
    return adversarial


def transfer(folders, image_set, settings: Settings, n: int = 200, epsilon: float = TRANSFER_EPSILON,
             cache_dir: Path | None = None, command: str = "", progress: bool = True) -> dict:
    """The transfer matrix: accuracy of every (served) checkpoint on the examples made on each, and the vote's."""
    models, shas, clfs = {}, {}, {}
    for folder in map(Path, folders):
        model = for_serving(load_pretrained(folder))
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        models[folder.name], shas[folder.name] = model, file_sha256(folder / WEIGHTS_NAME)
        clfs[folder.name] = classifier(model, "served", shas[folder.name])
    names = list(models)
    splits = {name: tuple(evaluation_indices(model.config, image_set, n, settings.seed).tolist())
              for name, model in models.items()}
    if len(set(splits.values())) != 1:
        raise ValueError("the checkpoints have different validation splits; a transfer matrix needs shared images")
    indices = torch.tensor(splits[names[0]])
    images, labels = image_set.images[indices], image_set.labels[indices]
    clean = torch.stack([predictions(clfs[t], images).cpu() for t in names])
    accuracy, vote = {}, {}
    for source in tqdm(names, desc="transfer sources", disable=not progress, file=sys.stdout):
        cache = None if cache_dir is None else (Path(cache_dir) / "adversarial" /
                                                f"transfer-{source}-{shas[source][:16]}-{n}-{settings.seed}-"
                                                f"{epsilon:g}-{settings.pgd_steps}.safetensors")
        adversarial = transfer_examples(models[source], clfs[source], images, labels, settings, epsilon, cache)
        probs = torch.stack([predictions(clfs[t], adversarial).cpu() for t in names])
        accuracy[source] = {t: round(float((probs[i].argmax(-1) == labels).float().mean()), 4)
                            for i, t in enumerate(names)}
        vote[source] = round(float((majority_vote(probs) == labels).float().mean()), 4)
    result = {"command": command or "python -m tools.adversarial --transfer", "epsilon": epsilon, "images": n,
              "seed": settings.seed, "attack": f"PGD-{settings.pgd_steps}, one random start, no early stop, against "
              "the served model; rounded to 8-bit", "architectures": names, "weights_sha256": shas,
              "clean": {t: round(float((clean[i].argmax(-1) == labels).float().mean()), 4)
                        for i, t in enumerate(names)},
              "clean_vote": round(float((majority_vote(clean) == labels).float().mean()), 4),
              "accuracy": accuracy, "vote": vote}
    result["summary"] = transfer_sentence(result)
    return result


def plot_transfer(result: dict, path) -> None:
    """The heatmap (``serve.zoo_plots.transfer_heatmap``, the one the Model zoo tab shows), as a PNG."""
    transfer_heatmap(result).save(path)


def summary(name: str, result: dict) -> str:
    parts = []
    for mode in MODES:
        curve = worst_case(result, mode)
        if curve:
            shown = ", ".join(f"{value:.1%}@{key}" for key, value in curve.items())
            parts.append(f"{mode} {result['clean'][mode]:.1%} -> {shown}")
    return f"{name}: " + ("; ".join(parts) or "nothing finished") + ("" if result["complete"] else " (incomplete)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.adversarial", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="*", help="checkpoint folders (default: every one in checkpoints/)")
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg/train.tar.gz")
    parser.add_argument("--cache-dir", default="data/cache")
    parser.add_argument("--images", type=int, default=Settings.images, help="validation images per checkpoint")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--pgd-steps", type=int, default=Settings.pgd_steps)
    parser.add_argument("--pgd-restarts", type=int, default=Settings.pgd_restarts)
    parser.add_argument("--apgd-steps", type=int, default=Settings.apgd_steps)
    parser.add_argument("--apgd-restarts", type=int, default=Settings.apgd_restarts)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: alone, served")
    parser.add_argument("--attacks", default=",".join(EVALUATED), help="comma-separated: pgd, apgd-ce")
    parser.add_argument("--resume", action="store_true", help="continue from each adversarial.json's finished budgets")
    parser.add_argument("--transfer", action="store_true", help="the transfer matrix instead of the accuracy table")
    parser.add_argument("--transfer-images", type=int, default=200)
    parser.add_argument("--bench-dir", default=str(ROOT / "bench"), help="where the zoo's plots and matrix go")
    args = parser.parse_args(argv)
    modes, attacks = args.modes.split(","), args.attacks.split(",")
    if not set(modes) <= set(MODES) or not set(attacks) <= set(EVALUATED):
        parser.error(f"--modes takes {', '.join(MODES)}; --attacks takes {', '.join(EVALUATED)}")
    if min(args.images, args.pgd_steps, args.pgd_restarts, args.apgd_steps, args.apgd_restarts) < 1:
        parser.error("--images, the steps and the restarts must be positive")
    settings = Settings(args.images, args.seed, args.pgd_steps, args.pgd_restarts, args.apgd_steps, args.apgd_restarts)
    folders = [Path(f) for f in args.checkpoint] or [ROOT / "checkpoints" / a for a in list_models()
                                                      if (ROOT / "checkpoints" / a / WEIGHTS_NAME).is_file()]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    bench = Path(args.bench_dir)
    try:
        sizes = {json.loads((f / "config.json").read_text())["image_size"] for f in folders}
        if len(sizes) != 1:
            raise ValueError(f"the checkpoints take different image sizes {sorted(sizes)}; run them apart")
        image_set = load_images(args.data, sizes.pop(), args.cache_dir, progress=False)
        if args.transfer:
            command = shlex.join(["python", "-m", "tools.adversarial", "--transfer", "--data", args.data,
                                  "--transfer-images", str(args.transfer_images), "--seed", str(args.seed),
                                  "--pgd-steps", str(args.pgd_steps)])
            result = transfer(folders, image_set, settings, args.transfer_images, TRANSFER_EPSILON,
                              Path(args.cache_dir), command)
            atomic_write_json(bench / TRANSFER_NAME, result)
            plot_transfer(result, bench / TRANSFER_PLOT)
            print(result["summary"])
            return 0
        for folder in folders:
            command = shlex.join(["python", "-m", "tools.adversarial", str(folder), "--data", args.data,
                                  "--images", str(args.images), "--seed", str(args.seed),
                                  "--pgd-steps", str(args.pgd_steps), "--pgd-restarts", str(args.pgd_restarts),
                                  "--apgd-steps", str(args.apgd_steps), "--apgd-restarts", str(args.apgd_restarts)])
            result = evaluate(folder, image_set, settings, modes, attacks, args.resume, command)
            print(summary(folder.name, result), flush=True)
            plot_zoo(folders[0].parent, bench / ZOO_PLOT)
    except (CheckpointError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
