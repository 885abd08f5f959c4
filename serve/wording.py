"""Everything the app says in words, and how it looks: sentences, notes, table headers, captions, bar colours,
the intro texts and the style sheet.

The service (``serve.service``) computes, caches and returns data, and calls these functions to put that data
into words; ``app.py`` reads the texts, headers and colours for its layout. A sentence is changed here, once.
The note under a map is assembled by one function, ``explanation_note``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from explain import methods
from explain.choice import CHOSEN_FROM
from explain.curves import VERDICT_FRACTIONS
from explain.faithfulness import curve_parts
from explain.verdict import COLOURS, SHORT, Outcome

from .store import Unavailable
from .zoo import display_name

# -- The layout's texts --------------------------------------------------------------------------------------
INTRO = ("# CIFAR-10 model zoo\n"
         "Eleven classic image classifiers, from a plain ConvNet to ResNet, DenseNet, SENet, EfficientNet and "
         "MLP-Mixer, each trained on CIFAR-10's 32 x 32 images (airplane, automobile, bird, cat, deer, dog, "
         "frog, horse, ship, truck). Upload a picture, pick an architecture and see what it predicts and "
         "where it looked.")
METHOD_INFO = ("most faithful: the one whose maps the verdict calls faithful on the most validation images for "
               "this architecture (see README)")
LAYER_INFO = ("for a layer method: 1 = shallowest CAM layer, the deepest is the usual choice; the input methods "
              "(occlusion, gradients, RISE, chosen) take none")
COMPARE_INTRO = ("Every architecture with a checkpoint on the same image: do they agree, how sure are they, how fast, "
                 "and where did each look?")
INSIDE_INTRO = ("What every stage of the network makes of **the image and architecture chosen in Classify**, stage by "
                "stage in forward order, under the names of its diagram: the output's shape, its most informative "
                "channels as heatmaps, what happens there in words, and what a linear probe on that stage alone "
                "would guess. The chart: how well each stage's features tell the ten classes apart (validation split).")
INSIDE_EMPTY = "Upload an image in the Classify tab first."

# A small upload (a 32 x 32 CIFAR image) fills the input box instead of showing as a stamp. The galleries show
# whole pictures (contained, at their own height, no inner scroll box) with their captions below them, not over
# them. The tables wrap (``wrap=True`` in app.py) and take the page's width. A picture that draws its own title
# starts below the corner buttons (fullscreen, download, share), which would otherwise cover the title's end.
SELF_TITLED = ("#zoo-plot", "#zoo-evolution", "#zoo-probes", "#zoo-severity", "#zoo-robustness", "#zoo-diagram",
               "#architecture-diagram", "#inside-probes", "#se-plot")
CSS = """
#classify-image img, #compare-image img { width: 100%; height: 100%; object-fit: contain; }
#compare-gallery .grid-wrap, #inside-gallery .grid-wrap { max-height: none; min-height: 0; overflow-y: visible; }
#compare-gallery .grid-container, #inside-gallery .grid-container { grid-auto-rows: auto; }
#compare-gallery .thumbnail-item, #inside-gallery .thumbnail-item { aspect-ratio: auto; height: auto;
  display: flex; flex-direction: column; }
#compare-gallery .thumbnail-lg > img, #inside-gallery .thumbnail-lg > img { height: auto; object-fit: contain; }
#compare-gallery .caption-label, #inside-gallery .caption-label { position: static; max-width: 100%;
  white-space: normal; border: none; border-radius: 0; }
#compare-gallery .grid-wrap { padding-top: 40px; }
#compare-table table, #zoo-table table { width: 100%; }
""" + ",\n".join(f"{element} .image-frame" for element in SELF_TITLED) + " { padding-top: 34px; }\n"

EXAMPLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def example_paths(folder) -> list[str]:
    """The example images in ``folder`` (sorted; none when it is missing), for ``gr.Examples``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def example_labels(paths: list[str]) -> list[str]:
    """Each example's file name in words ("cat_chelsea.jpg" -> "cat chelsea")."""
    return [Path(p).stem.replace("_", " ") for p in paths]


# -- Classify: the out-of-distribution note, the faithfulness bars and the note under the map -----------------
def ood_note(prediction) -> str:
    """The line beside the top-5: the label, how sure, by which architecture, and the out-of-distribution check."""
    icon = {True: "⚠️ ", False: "✅ ", None: ""}[prediction.ood["ood"]]
    return (f"{icon}**{prediction.label}** at {prediction.confidence:.0%} by {prediction.display_name}. "
            f"{prediction.ood['message']}")


FAITHFULNESS_X, FAITHFULNESS_Y = "hottest 15% and 40% blurred away, then shown alone", "mean probability change"
# The plot's own titles. The x axis's stays short: Vega cuts an axis title longer than about 30 characters.
FAITHFULNESS_TITLE, FAITHFULNESS_AXIS = "Faithfulness: probability change when pixels are blurred", "pixels chosen by"
# Short bar names: four must fit side by side under the plot without running into each other.
FAITHFULNESS_BARS = {"map": "the map", "centre": "the centre", "random": "random maps",
                     "random_weights": "random weights"}
BASELINE = "baseline"
# The bars' colours: the map's bar in its verdict's colour, the references grey.
BAR_COLOURS = {**{f"this map: {SHORT[outcome]}": COLOURS[outcome] for outcome in Outcome}, BASELINE: "#9aa0a6"}
CHECKING = ("⏳ **Checking this map...** The verdict follows in a moment: blurring away what it marks, and showing "
            "only that, is being compared with random maps, the centre and the same network with random weights.")
# The note's first sentence: what the map shows and whether to trust it, in plain words ({architecture}, {shown}).
PLAIN_VERDICTS = {
    Outcome.EXPLAINS: "the bright parts are where {architecture} looked to call this **{shown}**; trust this map for "
                      "this image.",
    Outcome.CENTRE: "{architecture} did look at the bright parts for **{shown}**, but a map of the image's centre "
                    "does as well, so read it only as \"the object is in the middle\".",
    Outcome.NOT_EXPLAINED: "the bright parts mattered to {architecture}'s **{shown}** no more than a guess that "
                           "ignores the model would; don't read it as where the model looked.",
    Outcome.INCONCLUSIVE: "{architecture} stays as sure of **{shown}** whatever part of the image is blurred, so "
                          "this map cannot be checked on this image.",
}


def faithfulness_frame(verdict) -> pd.DataFrame:
    """The faithfulness bars: each ordering's mean over the verdict's curves, the map's bar in its verdict's
    colour (``BAR_COLOURS``); no bars (the same columns) while there is no verdict yet."""
    keys = [] if verdict is None else [key for key in FAITHFULNESS_BARS if key in verdict.scores]
    return pd.DataFrame({FAITHFULNESS_X: [FAITHFULNESS_BARS[key] for key in keys],
                         FAITHFULNESS_Y: [round(float(verdict.scores[key]), 4) for key in keys],
                         "bar": [f"this map: {verdict.short}" if key == "map" else BASELINE for key in keys]})


def map_description(method: str, layer_name: str, layers: list[str], shown: str, chosen: str | None = None) -> str:
    """What the map is, in words (no full stop: the curve's sentence may follow)."""
    entry = methods.get(method)
    if not entry.takes_layer:
        where = "the input (no layer)"
    else:
        where = (f"layers `{layer_name}` to `{layers[-1]}` fused" if entry.kind is methods.Kind.FUSED
                 and layer_name != layers[-1] else f"layer `{layer_name}`")
        where += f" ({layers.index(layer_name) + 1} of {len(layers)})"
    if chosen is not None:
        where += (f"; this map was **chosen** for this image: {chosen} cost the model the most when blanked, of "
                  f"{len(CHOSEN_FROM)} candidates ({', '.join(CHOSEN_FROM)}; the random-weights map was chosen the "
                  "same way, on the random network). The verdict reads other curves, and allows for the choice")
    return f"{method} at {where}, class **{shown}**"


def curve_description(figures: dict) -> str:
    """How the map's curves were measured and what they showed, in words."""
    parts = curve_parts(figures["map"])
    deleted = ", ".join(f"{f:.0%}: {d:.2f}" for f, d in zip(VERDICT_FRACTIONS, parts["deletion"]))
    inserted = ", ".join(f"{f:.0%}: {d:.2f}" for f, d in zip(VERDICT_FRACTIONS, parts["insertion"]))
    return (f"Its probability is {figures['probability']:.2f} on the image as uploaded (without the shifted and "
            f"mirrored copies the top-5 also averages in) and {figures['blurred_probability']:.2f} on a blurred "
            f"copy. Replacing the map's hottest pixels with the blur lowers it by {deleted}; pasting only them into "
            f"the blur raises it by {inserted}. The bars average each curve, for the map and for three references "
            f"that know nothing about this model: the centre, random maps as smooth as the map, and the same "
            f"method's map from the same network with random weights. No step that made or chose the map saw "
            f"these curves.")


def se_description(se_blocks: int, architecture: str) -> str:
    """The SE attention's line: what its plot and map show, or that this architecture has none."""
    if not se_blocks:
        return f"{architecture} has no SE blocks, so there is no SE attention to show."
    return (f"SE attention: {se_blocks} squeeze-and-excitation blocks; the plot shows how much each block turned "
            "each channel up (1) or down (0) for this image, and the SE-weighted map where the channels that the "
            "last block turned up are active.")


def explanation_note(verdict, figures: dict | None, map_words: str, se_words: str, shape_words: str = "",
                     architecture: str = "the model", shown: str = "this class") -> str:
    """The note under the map, in reading order: one plain sentence with the verdict, what the map shows and
    whether to trust it (or that the check is still running); then what the map is (``map_description``), the
    comparisons behind the verdict and its curves (``curve_description``); the SE attention and, for a thin
    picture, why it shows as a strip. ``verdict`` and ``figures`` are None while the check runs."""
    tail = "\n\n" + se_words + ("\n\n" + shape_words if shape_words else "")
    if verdict is None:
        return CHECKING + "\n\n" + map_words + "." + tail
    lead = f"{verdict.headline}: " + PLAIN_VERDICTS[verdict.outcome].format(architecture=architecture, shown=shown)
    checked = f"How it was checked: it {'; it '.join(verdict.reasons)}. {verdict.meaning}"
    return lead + "\n\n" + map_words + ". " + checked + " " + curve_description(figures) + tail


# -- Compare --------------------------------------------------------------------------------------------------
# Short headers: seven columns must fit beside the gallery without running off the table.
COMPARE_HEADERS = ["architecture", "top-1", "confidence", "ms", "with majority", "agreement", "map"]
# Each column's share of the table's width: together the page's width, so that no column runs off its right edge.
COMPARE_WIDTHS = ["21%", "8%", "10%", "7%", "9%", "10%", "35%"]
UNAVAILABLE = {Unavailable.NO_CHECKPOINT: "no checkpoint yet", Unavailable.UNUSABLE: "checkpoint unusable",
               Unavailable.NOT_DOWNLOADED: "checkpoint not downloaded"}


def compare_summary(answered: list, majority: str) -> str:
    """The vote, and first of all whether the image looks like none of the classes to most architectures."""
    agree = sum(row.agrees_with_majority for row in answered)
    checked = [row for row in answered if row.prediction.ood["ood"] is not None]
    flagged = [row for row in checked if row.prediction.ood["ood"]]
    vote = f"Majority vote: **{majority}** ({agree} of {len(answered)} architectures agree)."
    if checked and 2 * len(flagged) > len(checked):
        return (f"⚠️ **This image looks like none of the ten classes** to {len(flagged)} of {len(checked)} "
                f"architectures (each is less sure than on almost every validation image), so the vote is a "
                f"guess. {vote}")
    if flagged:
        vote += (f" {len(flagged)} of {len(checked)} find it unlike any class: "
                 f"{', '.join(row.display_name for row in flagged)}.")
    return vote


def compare_row(row, verdict=None, method: str = "", ms: float | None = None) -> list:
    """One row of Compare's table (``COMPARE_HEADERS``). Its map column: empty before the map exists (``ms``
    None), "checking" while its check runs (``verdict`` None), then the verdict."""
    if row.error is not None:
        return [display_name(row.arch), "—", None, None, "—", None, UNAVAILABLE[row.unavailable]]
    if ms is None:
        map_column = ""
    elif verdict is None:
        map_column = f"checking ({method}, {ms:.0f} ms)"
    else:
        flagged = "; looks like none of the classes" if row.prediction.ood["ood"] else ""
        map_column = f"{verdict.short} ({method}, {ms:.0f} ms){flagged}"
    return [row.display_name, row.label, round(row.confidence, 3), round(row.latency_ms, 1),
            "yes" if row.agrees_with_majority else "no", None if row.agreement is None else round(row.agreement, 2),
            map_column]


def compare_caption(row, verdict=None) -> str:
    """A map's caption in Compare's gallery: the architecture, its top-1 and how sure, and the verdict (or that
    the check is running)."""
    if verdict is None:
        return f"⏳ {row.display_name}: {row.label} {row.confidence:.0%} (checking)"
    return f"{verdict.icon} {row.display_name}: {row.label} {row.confidence:.0%} ({verdict.short})"


# -- Model zoo ------------------------------------------------------------------------------------------------
# The zoo table's columns (``serve.ZOO_HEADERS``), as COMPARE_WIDTHS: the hardware's long description last.
ZOO_WIDTHS = ["12%", "8%", "6%", "6%", "7%", "6%", "6%", "6%", "5%", "6%", "5%", "6%", "21%"]
NO_CONFUSION = "No confusion matrix yet (`python -m tools.finish_checkpoint` writes `confusion.png`)."
