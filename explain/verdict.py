"""Should this map be trusted for this image? The deletion check's three conditions, on one image's figures.

A map passes when blanking its hottest quarter lowers the class's probability more than blanking
(1) the centre square of the same area ("the object is in the middle"), (2) random squares of that
area, by at least ``MIN_RATIO_OVER_RANDOM`` times, and (3) the hottest quarter of the same method's map
from the same network with random weights (what the map's shape alone costs). The inputs are the figures
of ``explain.faithfulness``.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_RATIO_OVER_RANDOM = 1.25  # as the deletion check that chooses each checkpoint's method

FAILURE_MEANING = ("A failed map explains this prediction no better than a guess that ignores the model, so "
                   "don't read it as where the model looked.")


@dataclass(frozen=True)
class MapVerdict:
    passed: bool
    reasons: tuple[str, ...]  # each condition, met or not, in words with its figures

    @property
    def headline(self) -> str:
        return "✅ **Trustworthy for this image**" if self.passed else "❌ **Not trustworthy for this image**"

    @property
    def short(self) -> str:
        return "map passed" if self.passed else "map failed"

    def sentence(self) -> str:
        """The verdict, why, and (for a failure) what it means."""
        text = f"{self.headline}: {'; '.join(self.reasons)}."
        return text if self.passed else f"{text} {FAILURE_MEANING}"


def map_verdict(figures: dict) -> MapVerdict:
    """The verdict of one map from its deletion figures (``cam_drop``, ``centre_drop``, ``random_square_drop``
    and, where measured, ``random_weights_drop``)."""
    cam, centre, squares = figures["cam_drop"], figures["centre_drop"], figures["random_square_drop"]
    checks = [
        (cam > centre, f"{'beats' if cam > centre else 'does not beat'} the centre square "
                       f"({cam:.2f} against {centre:.2f})"),
        (cam >= MIN_RATIO_OVER_RANDOM * squares and cam > 0,
         f"{'beats' if cam >= MIN_RATIO_OVER_RANDOM * squares and cam > 0 else 'does not beat'} random squares "
         f"by {MIN_RATIO_OVER_RANDOM:g}x ({cam:.2f} against {squares:.2f})"),
    ]
    if figures.get("random_weights_drop") is not None:
        random_weights = figures["random_weights_drop"]
        checks.append((cam > random_weights, f"{'beats' if cam > random_weights else 'does not beat'} the "
                                             f"random-weights map ({cam:.2f} against {random_weights:.2f})"))
    return MapVerdict(all(ok for ok, _ in checks), tuple(reason for _, reason in checks))
