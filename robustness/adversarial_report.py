"""A checkpoint's robustness to adversarial attacks as stored (``adversarial.json``, ``tools.adversarial``), the
zoo's transfer matrix, and the sentences the app shows about them."""
from __future__ import annotations

import json
from pathlib import Path

from .adversarial import EPSILONS

RESULT_NAME = "adversarial.json"   # beside each checkpoint's weights
PLOT_NAME = "adversarial.png"      # ... its accuracy against epsilon
ZOO_PLOT = "adversarial_accuracy.png"   # in bench/: every architecture's accuracy against epsilon
TRANSFER_NAME = "adversarial_transfer.json"  # in bench/: the transfer matrix
TRANSFER_PLOT = "adversarial_transfer.png"
MODES = ("alone", "served")
EVALUATED = ("pgd", "apgd-ce")
TABLE_BUDGET = "2"  # the zoo table's column: where the architectures differ most (near 0% at 8/255)


def epsilon_key(epsilon: float) -> str:
    """config.json's key for a budget: "0.5", "1", "2", "4", "8"."""
    return f"{epsilon:g}"


BUDGETS = tuple(epsilon_key(epsilon) for epsilon in EPSILONS)  # "0.5", "1", "2", "4", "8"


def load_result(folder, weights_sha256: str | None = None) -> dict | None:
    """The folder's adversarial.json, or None when missing, unreadable or measured on other weights."""
    try:
        result = json.loads((Path(folder) / RESULT_NAME).read_text())
    except (OSError, ValueError):
        return None
    if weights_sha256 and result.get("weights_sha256") != weights_sha256:
        return None
    return result


def worst_case(result: dict, mode: str = "served") -> dict[str, float]:
    """Accuracy per budget under the stronger of the two attacks ({"0.5": ..., ...}), for ``mode``; only the
    budgets both attacks have finished."""
    pgd, apgd = result["accuracy"]["pgd"].get(mode, {}), result["accuracy"]["apgd-ce"].get(mode, {})
    return {key: min(pgd[key], apgd[key]) for key in pgd if key in apgd}


def finished_mode(result: dict | None) -> str | None:
    """The mode the zoo shows: "served" once any budget of it is finished under both attacks, else "alone" when
    that is, else None."""
    if not result:
        return None
    return next((mode for mode in ("served", "alone") if worst_case(result, mode)), None)


def missing(result: dict, mode: str) -> list[str]:
    """What the run has not finished yet for ``mode``, in words: ["PGD at 4/255 and 8/255", "APGD-CE"]."""
    gaps = []
    for attack in EVALUATED:
        left = [key for key in BUDGETS if key not in result["accuracy"].get(attack, {}).get(mode, {})]
        if len(left) == len(BUDGETS):
            gaps.append(attack.upper())
        elif left:
            gaps.append(f"{attack.upper()} at {' and '.join(f'{key}/255' for key in left)}")
    return gaps


def card_sentence(result: dict | None) -> str:
    """A few sentences for the architecture card: accuracy at each budget under the stronger attack ("as served"
    when measured, else "the model alone"), the smallest budget that halves it, and what is not finished yet;
    "" without a result."""
    if not result:
        return ""
    mode = finished_mode(result)
    if mode is None:
        return ("Being measured (`python -m tools.adversarial --resume`): no budget is finished under both "
                "attacks yet.")
    curve = worst_case(result, mode)
    clean = result["clean"][mode]
    shown = ", ".join(f"{value:.0%} at {key}/255" for key, value in curve.items())
    text = (f"Under attack (the stronger of PGD and APGD-CE, L-infinity, {result['images']} validation images, "
            f"{'as served' if mode == 'served' else 'the model alone'}): {clean:.0%} unattacked, {shown}.")
    halved = next((key for key, value in curve.items() if value <= clean / 2), None)
    if halved is not None:
        seen = "invisible to a person" if float(halved) <= 4 else "barely visible"
        text += f" A change of at most {halved}/255 per pixel, {seen}, already halves its accuracy."
    elif len(curve) == len(BUDGETS):
        text += f" Even at {BUDGETS[-1]}/255 it keeps more than half of its accuracy."
    gaps = missing(result, mode)
    if gaps:
        text += f" Not finished yet: {'; '.join(gaps)} (`python -m tools.adversarial --resume`)."
    if mode == "alone":
        text += " As served (the six-view average the app shows): not measured yet."
    return text


def load_transfer(path) -> dict | None:
    """The transfer matrix (bench/adversarial_transfer.json), or None when missing or unreadable."""
    try:
        transfer = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return transfer if isinstance(transfer, dict) and transfer.get("architectures") else None


def attack_sentence(epsilon: float, before: tuple[str, float], after: tuple[str, float], fooled: bool,
                    target: str | None = None) -> str:
    """What one attack did, in words: "A change of at most 2/255 per pixel turned cat (98%) into truck (71%)."."""
    budget = f"{epsilon:g}/255"
    if epsilon < 1:
        return (f"No 8-bit image lies within {budget} of this one (a pixel moves in whole steps of 1/255), so the "
                f"file cannot carry this change: it stays {before[0]} ({before[1]:.0%}).")
    if fooled:
        return (f"A change of at most {budget} per pixel turned {before[0]} ({before[1]:.0%}) into "
                f"{after[0]} ({after[1]:.0%}).")
    aim = f" towards {target}" if target else ""
    return (f"A change of at most {budget} per pixel{aim} did not flip it: still {after[0]} ({after[1]:.0%}, "
            f"was {before[1]:.0%}). Try a larger budget.")


def transfer_sentence(transfer: dict) -> str:
    """What the transfer matrix shows, in a few plain sentences, from its numbers: how much an attack hurts the
    model it was made on, how much the others, the vote, and which architecture its neighbours fool least."""
    names = transfer["architectures"]
    own = [transfer["accuracy"][n][n] for n in names]
    others = [transfer["accuracy"][s][t] for s in names for t in names if s != t]
    if not others:
        return ""
    votes = list(transfer["vote"].values())
    kept_by = {t: sum(transfer["accuracy"][s][t] for s in names if s != t) / (len(names) - 1) for t in names}
    hardest = max(kept_by, key=kept_by.get)
    return (f"Examples made on one architecture at {transfer['epsilon']:g}/255 leave it {sum(own) / len(own):.0%} "
            f"accuracy on average, while the others keep {sum(others) / len(others):.0%} on them ({min(others):.0%} "
            f"to {max(others):.0%}); the zoo's majority vote keeps {sum(votes) / len(votes):.0%} "
            f"({transfer['clean_vote']:.0%} without attack). The hardest to fool with another's examples: "
            f"{hardest} ({kept_by[hardest]:.0%}).")
