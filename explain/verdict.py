"""Should this map be trusted for this image? The one function that decides (``map_verdict``), from the
deletion curves of ``explain.faithfulness``; the app, Compare, ``tools.choose_cam`` and the tests all use it.

A curve's score is its mean probability drop over the blanked fractions. Four outcomes:

- **explains this prediction**: the map beats random maps of its own smoothness (by ``MIN_RATIO_OVER_RANDOM``
  and by more than their noise), the random-weights map, and the centre prior;
- **faithful, but says no more than "the object is in the middle"**: it beats random maps and random weights,
  and the centre prior does as well;
- **does not explain this prediction**: it is no better than random maps or than random weights;
- **inconclusive**: no blanking moves the probability by ``MIN_MOVEMENT``: the model is as sure with half
  the image gone, so deletion cannot tell a good map from a bad one.

"Beats" means by more than the measurement's noise, measured on this image by the spread of the random maps'
scores (how much the score of an uninformed map of this smoothness varies): the lead over their mean must
exceed ``NOISE_Z`` standard errors of that mean, and a lead over one other map (the random-weights map, the
centre) ``PAIR_NOISE`` standard deviations of single random maps' scores, since a single map's score varies
like one of theirs. Never less than ``MIN_MARGIN`` of mean probability drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

MIN_RATIO_OVER_RANDOM = 1.25
MIN_MARGIN = 0.02
NOISE_Z = 2.0
PAIR_NOISE = 1.0
MIN_MOVEMENT = 0.05


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
    Outcome.EXPLAINS: "Blanking what it marks lowers the model's confidence faster than blanking random regions "
                      "of the same smoothness, the centre, or what the same network with random weights marks: "
                      "it shows where this model looked.",
    Outcome.CENTRE: "The model did look where it marks, but blanking the centre of the image costs as much: "
                    "on this image the map tells you no more than that the object is in the middle.",
    Outcome.NOT_EXPLAINED: "Blanking what it marks costs the model no more than blanking a guess that ignores the "
                           "model, so don't read it as where the model looked.",
    Outcome.INCONCLUSIVE: "The prediction barely moves whatever is blanked (even half of the image), so deletion "
                          "cannot say whether this map is right.",
}
COLOURS = {Outcome.EXPLAINS: "#1e8e3e", Outcome.CENTRE: "#f9ab00", Outcome.NOT_EXPLAINED: "#d93025",
           Outcome.INCONCLUSIVE: "#80868b"}
SHORT = {Outcome.EXPLAINS: "explains", Outcome.CENTRE: "faithful, centre", Outcome.NOT_EXPLAINED: "does not explain",
         Outcome.INCONCLUSIVE: "inconclusive"}
ICONS = {Outcome.EXPLAINS: "✅", Outcome.CENTRE: "🟡", Outcome.NOT_EXPLAINED: "❌", Outcome.INCONCLUSIVE: "⚪"}


@dataclass(frozen=True)
class MapVerdict:
    outcome: Outcome
    scores: dict            # mean drop of "map", "centre", "random" (their mean), "random_weights" (if measured)
    margin: float           # the noise margin a lead over the random maps' mean must exceed
    pair_margin: float      # ... and a lead over one other map (random weights, the centre)
    reasons: tuple[str, ...]

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
        return f"{self.headline}. {MEANINGS[self.outcome]} ({'; '.join(self.reasons)}.)"


def _compare(name: str, lead: float, margin: float, theirs: float, ours: float) -> tuple[bool, str]:
    won = lead > margin
    return won, f"{'beats' if won else 'does not beat'} {name} ({ours:.2f} against {theirs:.2f}, margin {margin:.2f})"


def map_verdict(curves: dict) -> MapVerdict:
    """The verdict of one map from its deletion curves: ``curves["map"]`` (F drops), ``["centre"]`` (F),
    ``["random"]`` (R x F, R >= 2) and, where measured, ``["random_weights"]`` (F)."""
    own = np.asarray(curves["map"], dtype=np.float64)
    centre = np.asarray(curves["centre"], dtype=np.float64)
    random = np.asarray(curves["random"], dtype=np.float64)
    if random.ndim != 2 or len(random) < 2:
        raise ValueError("map_verdict needs at least two random maps' curves (R x F)")
    twin = curves.get("random_weights")
    twin = None if twin is None else np.asarray(twin, dtype=np.float64)
    random_scores = random.mean(1)
    scores = {"map": own.mean(), "centre": centre.mean(), "random": random_scores.mean()}
    if twin is not None:
        scores["random_weights"] = twin.mean()
    spread = random_scores.std(ddof=1)
    margin = max(MIN_MARGIN, NOISE_Z * spread / np.sqrt(len(random_scores)))
    pair_margin = max(MIN_MARGIN, PAIR_NOISE * spread)
    everything = [own, centre, random.ravel()] + ([] if twin is None else [twin])
    if max(np.abs(curve).max() for curve in everything) < MIN_MOVEMENT:
        reason = f"no blanking moved the probability by {MIN_MOVEMENT:g} or more"
        return MapVerdict(Outcome.INCONCLUSIVE, scores, margin, pair_margin, (reason,))
    random_won = (scores["map"] >= MIN_RATIO_OVER_RANDOM * scores["random"]
                  and scores["map"] - scores["random"] > margin)
    checks = [(random_won, f"{'beats' if random_won else 'does not beat'} random maps of its smoothness by "
                           f"{MIN_RATIO_OVER_RANDOM:g}x and by more than their noise ({scores['map']:.2f} against "
                           f"{scores['random']:.2f}, noise margin {margin:.2f})")]
    if twin is not None:
        checks.append(_compare("the random-weights map", scores["map"] - scores["random_weights"], pair_margin,
                               scores["random_weights"], scores["map"]))
    centre_won, centre_reason = _compare("the centre", scores["map"] - scores["centre"], pair_margin, scores["centre"],
                                         scores["map"])
    reasons = tuple(reason for _, reason in checks) + (centre_reason,)
    if not all(ok for ok, _ in checks):
        return MapVerdict(Outcome.NOT_EXPLAINED, scores, margin, pair_margin, reasons)
    return MapVerdict(Outcome.EXPLAINS if centre_won else Outcome.CENTRE, scores, margin, pair_margin, reasons)


def batch_verdicts(curves: dict) -> list[MapVerdict]:
    """``map_verdict`` of each image of a batch of ``explain.faithfulness.deletion_curves``."""
    keys = [key for key in ("map", "centre", "random", "random_weights") if key in curves]
    return [map_verdict({key: curves[key][i] for key in keys}) for i in range(len(curves["map"]))]


def outcome_shares(verdicts: list[MapVerdict]) -> dict[str, float]:
    """The share of each outcome, and of "faithful" (explains + centre), over a list of verdicts."""
    n = max(1, len(verdicts))
    shares = {outcome.value: sum(v.outcome is outcome for v in verdicts) / n for outcome in Outcome}
    shares["faithful"] = shares[Outcome.EXPLAINS.value] + shares[Outcome.CENTRE.value]
    return shares
