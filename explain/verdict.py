"""Should this map be trusted for this image? The one function that decides (``map_verdict``), from the
held-out curves of ``explain.faithfulness`` (blurred-infill deletion and insertion, which no step that makes or
chooses a map sees); the app, Compare, ``tools.choose_cam``, the benchmark and the tests all use it.

A curve's score is its mean over the deletion drops and insertion gains. Four outcomes:

- **explains this prediction**: the map beats random maps of its own smoothness, the random-weights map and
  the centre prior;
- **faithful, but says no more than "the object is in the middle"**: it beats random maps and random weights,
  and the centre prior does as well;
- **does not explain this prediction**: it does not beat random maps or random weights;
- **inconclusive**: no blanking moves the probability by ``MIN_MOVEMENT``.

It is a test with a measured false-pass rate. "Beats random maps" means the map's score lies above the random
maps' mean by ``Z_RANDOM`` prediction-interval standard deviations (their spread, widened for estimating it
from ``N`` maps) and by ``MIN_RATIO_OVER_RANDOM``; ``Z_RANDOM`` is set so that a map chosen as the best of ten
uninformed ones passes on at most 5% of images. A lead over the random-weights map or the centre needs
``PAIR_NOISE`` standard deviations of single random maps' scores. Maps that know nothing about the model (random
smooth maps, the same put through the app's per-image choice, another random network's maps) are measured to
pass on at most 5% of images on every architecture, on images that set no threshold (``bench/faithfulness.py``).
Never less than ``MIN_MARGIN``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

MIN_RATIO_OVER_RANDOM = 1.25  # the map's score over the random maps' mean score
MIN_MARGIN = 0.02             # of mean probability change: no lead smaller than this counts
# Prediction-interval deviations over the random maps. The t quantile with R - 1 = 7 degrees of freedom at
# 1 - 0.05 / 10 (3.5: a best-of-ten choice of uninformed maps held to 5% by the union bound) is not enough:
# random maps' scores have a long upper tail (one that lands on the object scores far above the rest), so the
# threshold is the one at which bench/faithfulness.py measures every control at 5% or less on every architecture
# (docs/explanations.md gives the figures and the images they were set and checked on).
Z_RANDOM = 4.5
PAIR_NOISE = 1.0              # single random maps' deviations: the lead over the random-weights map or the centre
MIN_MOVEMENT = 0.05           # below this on every curve, the image cannot tell maps apart
# Which verdict a recorded figure was measured by (config.json's cam.verdict): figures of another are not comparable.
VERSION = f"held-out curves; Z_RANDOM {Z_RANDOM:g}, PAIR_NOISE {PAIR_NOISE:g}"


class Outcome(str, Enum):
    EXPLAINS = "explains"
    CENTRE = "centre"
    NOT_EXPLAINED = "not explained"
    INCONCLUSIVE = "inconclusive"

    @property
    def faithful(self) -> bool:
        return self in (Outcome.EXPLAINS, Outcome.CENTRE)


HEADLINES = {
    Outcome.EXPLAINS: "✅ **Explains this prediction**",
    Outcome.CENTRE: "🟡 **Faithful, but says no more than \"the object is in the middle\"**",
    Outcome.NOT_EXPLAINED: "❌ **Does not explain this prediction**",
    Outcome.INCONCLUSIVE: "⚪ **Inconclusive**",
}
MEANINGS = {
    Outcome.EXPLAINS: "Blurring away what it marks costs the model more confidence, and showing only what it marks "
                      "gives back more, than random regions of the same smoothness, the centre of the image or what "
                      "the same network with random weights marks: it shows where this model looked.",
    Outcome.CENTRE: "The model did look where it marks, but the centre of the image does as well: on this image "
                    "the map tells you no more than that the object is in the middle.",
    Outcome.NOT_EXPLAINED: "What it marks matters to the model no more than a guess that ignores the model, by a "
                           "test that passes such guesses on at most 5% of images, so don't read it as where "
                           "the model looked.",
    Outcome.INCONCLUSIVE: "The prediction barely moves whatever is blurred or restored, so this test cannot say "
                          "whether the map is right.",
}
COLOURS = {Outcome.EXPLAINS: "#1e8e3e", Outcome.CENTRE: "#f9ab00", Outcome.NOT_EXPLAINED: "#d93025",
           Outcome.INCONCLUSIVE: "#80868b"}
SHORT = {Outcome.EXPLAINS: "explains", Outcome.CENTRE: "faithful, centre", Outcome.NOT_EXPLAINED: "does not explain",
         Outcome.INCONCLUSIVE: "inconclusive"}
ICONS = {Outcome.EXPLAINS: "✅", Outcome.CENTRE: "🟡", Outcome.NOT_EXPLAINED: "❌", Outcome.INCONCLUSIVE: "⚪"}


@dataclass(frozen=True)
class MapVerdict:
    outcome: Outcome
    scores: dict            # mean curve of "map", "centre", "random" (their mean), "random_weights" (if measured)
    margin: float           # the lead over the random maps' mean a pass needed
    pair_margin: float      # ... over the random-weights map or the centre
    reasons: tuple[str, ...]
    z_random: float = 0.0   # the map's lead over the random maps, in prediction-interval deviations

    @property
    def faithful(self) -> bool:
        return self.outcome.faithful

    @property
    def beats_centre(self) -> bool:
        return self.outcome is Outcome.EXPLAINS

    @property
    def headline(self) -> str:
        return HEADLINES[self.outcome]

    @property
    def meaning(self) -> str:
        return MEANINGS[self.outcome]

    @property
    def short(self) -> str:
        return SHORT[self.outcome]

    @property
    def icon(self) -> str:
        return ICONS[self.outcome]

    @property
    def colour(self) -> str:
        return COLOURS[self.outcome]

    def sentence(self) -> str:
        """The verdict, what it means, and the comparisons behind it."""
        return f"{self.headline}. {self.meaning} ({'; '.join(self.reasons)}.)"


def _compare(name: str, lead: float, margin: float, theirs: float, ours: float) -> tuple[bool, str]:
    won = lead > margin
    return won, f"{'beats' if won else 'does not beat'} {name} ({ours:.2f} against {theirs:.2f}, margin {margin:.2f})"


def map_verdict(curves: dict) -> MapVerdict:
    """The verdict of one map from its curves (``explain.faithfulness``): ``curves["map"]`` (P values),
    ``["centre"]`` (P), ``["random"]`` (R x P, R >= 3) and, where measured, ``["random_weights"]`` (P)."""
    own = np.asarray(curves["map"], dtype=np.float64)
    centre = np.asarray(curves["centre"], dtype=np.float64)
    random = np.asarray(curves["random"], dtype=np.float64)
    if random.ndim != 2 or len(random) < 3:
        raise ValueError("map_verdict needs at least three random maps' curves (R x P)")
    twin = curves.get("random_weights")
    twin = None if twin is None else np.asarray(twin, dtype=np.float64)
    random_scores = random.mean(1)
    scores = {"map": own.mean(), "centre": centre.mean(), "random": random_scores.mean()}
    if twin is not None:
        scores["random_weights"] = twin.mean()
    spread = random_scores.std(ddof=1)
    # A new map drawn like the random ones would differ from their estimated mean by spread * sqrt(1 + 1/R).
    interval = spread * np.sqrt(1 + 1 / len(random_scores))
    margin = max(MIN_MARGIN, Z_RANDOM * interval)
    pair_margin = max(MIN_MARGIN, PAIR_NOISE * spread)
    lead = scores["map"] - scores["random"]
    z_random = float(lead / interval) if interval > 0 else float(np.sign(lead)) * float("inf") if lead else 0.0
    everything = [own, centre, random.ravel()] + ([] if twin is None else [twin])
    if max(np.abs(curve).max() for curve in everything) < MIN_MOVEMENT:
        reason = f"no blurring or restoring moved the probability by {MIN_MOVEMENT:g} or more"
        return MapVerdict(Outcome.INCONCLUSIVE, scores, margin, pair_margin, (reason,), z_random)
    random_won = scores["map"] >= MIN_RATIO_OVER_RANDOM * scores["random"] and lead > margin
    checks = [(random_won, f"{'beats' if random_won else 'does not beat'} random maps of its smoothness "
                           f"({scores['map']:.2f} against {scores['random']:.2f}, needed a lead of {margin:.2f} "
                           f"and {MIN_RATIO_OVER_RANDOM:g}x)")]
    if twin is not None:
        checks.append(_compare("the random-weights map", scores["map"] - scores["random_weights"], pair_margin,
                               scores["random_weights"], scores["map"]))
    centre_won, centre_reason = _compare("the centre", scores["map"] - scores["centre"], pair_margin,
                                         scores["centre"], scores["map"])
    reasons = tuple(reason for _, reason in checks) + (centre_reason,)
    if not all(ok for ok, _ in checks):
        return MapVerdict(Outcome.NOT_EXPLAINED, scores, margin, pair_margin, reasons, z_random)
    return MapVerdict(Outcome.EXPLAINS if centre_won else Outcome.CENTRE, scores, margin, pair_margin, reasons,
                      z_random)


def batch_verdicts(curves: dict) -> list[MapVerdict]:
    """``map_verdict`` of each image of a batch of ``explain.faithfulness.evidence``."""
    keys = [key for key in ("map", "centre", "random", "random_weights") if key in curves]
    return [map_verdict({key: curves[key][i] for key in keys}) for i in range(len(curves["map"]))]


def outcome_shares(verdicts: list[MapVerdict]) -> dict[str, float]:
    """The share of each outcome, and of "faithful" (explains + centre), over a list of verdicts."""
    n = max(1, len(verdicts))
    shares = {outcome.value: sum(v.outcome is outcome for v in verdicts) / n for outcome in Outcome}
    shares["faithful"] = shares[Outcome.EXPLAINS.value] + shares[Outcome.CENTRE.value]
    return shares
