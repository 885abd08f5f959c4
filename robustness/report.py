"""A checkpoint's robustness facts as stored (``robustness.json``), and the figures read from them."""
from __future__ import annotations

import json
from pathlib import Path

RESULT_NAME = "robustness.json"
BARS_NAME = "robustness_bars.png"
RELIABILITY_NAME = "reliability.png"
BASELINE = "alexnet"  # the paper's mCE divides each corruption's error by AlexNet's


def load_result(folder, weights_sha256: str | None = None) -> dict | None:
    """The folder's robustness.json, or None when missing, unreadable or measured on other weights."""
    path = Path(folder) / RESULT_NAME
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if weights_sha256 and result.get("weights_sha256") != weights_sha256:
        return None
    return result


def relative_mce(result: dict, baseline: dict | None) -> float | None:
    """The paper's mCE: per corruption, error summed over severities over the baseline's; mean over corruptions.

    Only corruptions both measured count; None without a baseline."""
    if not result or not baseline:
        return None
    shared = [c for c in result["corruption_error"] if c in baseline["corruption_error"]]
    if not shared:
        return None
    return sum(result["corruption_error"][c] / baseline["corruption_error"][c] for c in shared) / len(shared)


def card_sentence(result: dict | None) -> str:
    """One sentence for the architecture card, e.g. keeps 78% of its accuracy; 90%-confident answers right 88%."""
    if not result:
        return ""
    kept = result["mean_corruption_accuracy"] / result["clean_accuracy"] if result["clean_accuracy"] else 0
    text = (f"Under common corruptions (12 CIFAR-10-C kinds x 5 severities, model alone) it keeps {kept:.0%} "
            f"of its accuracy ({result['mean_corruption_accuracy']:.1%}, worst: "
            f"{result['worst_corruption'].replace('_', ' ')})")
    cal = result["calibration"]
    sure = cal.get("confident_accuracy")
    if sure is not None:
        text += f"; its 90%-confident answers are right {sure:.0%} of the time"
    text += f" (ECE {cal['ece_served']:.1%}"
    if cal["temperature_adopted"]:
        text += (f", {cal['ece_scaled']:.1%} after temperature scaling, T = {cal['temperature']:.2f}: the app "
                 "serves the scaled probabilities and its out-of-distribution threshold was re-derived on them")
    return text + ")."
