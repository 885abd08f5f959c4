"""Everything the app says in words, and how it looks: sentences, notes, table headers, captions, bar colours,
the intro texts and the style sheet.

The service (``serve.service``) computes, caches and returns data, and calls these functions to put that data
into words; ``app.py`` reads the texts, headers and colours for its layout. A sentence is changed here, once.
The note under a map is assembled by one function, ``explanation_note``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from architectures import model_class
from architectures.checkpoint import hardware_summary, training_summary
from explain import methods
from explain.choice import CHOSEN_FROM
from explain.curves import VERDICT_FRACTIONS
from explain.faithfulness import curve_parts
from explain.verdict import COLOURS, SHORT, Outcome
from robustness import adversarial_report
from robustness import report as corruption_report
from robustness.adversarial_report import TABLE_BUDGET, attack_sentence

from .store import Unavailable

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
               "#zoo-adversarial", "#zoo-transfer", "#architecture-diagram", "#inside-probes", "#se-plot")
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


# -- Attack this image ---------------------------------------------------------------------------------------
ATTACK_LABELS = {"none": "none (the upload as it is)", "fgsm": "FGSM (one gradient step)",
                 "pgd": "PGD (10 projected gradient steps)"}
ATTACK_INFO = ("the worst case within a budget, where a corruption is the average case: the smallest change per "
               "pixel, in the direction that most hurts the served prediction (Goodfellow et al. 2015; Madry et "
               "al. 2018). The attacked 32 x 32 view replaces the upload for the top-5 and the map")
EPSILON_INFO = "largest change per pixel, in 1/255 of its range (L-infinity); 1-2 levels are invisible"
ATTACK_TARGET_INFO = "untargeted: away from the predicted class; or towards a class you pick"


def attack_note(result, class_names: list[str], scale: float, smallest: float | None) -> str:
    """Markdown under an attack: what it did in one sentence, the smallest budget that flips this image, how
    the perturbation is drawn, and what the file is."""
    before = (class_names[result.label], float(result.probs_before[result.label]))
    after = (class_names[result.new_label], float(result.probs_after[result.new_label]))
    target = None if result.target is None else class_names[result.target]
    lines = [f"**{attack_sentence(result.epsilon, before, after, result.fooled, target)}**"]
    aim = f" towards {target}" if target else ""
    if smallest is None:
        lines.append(f"Even PGD at the largest budget offered (8/255){aim} does not flip this image: a robust one.")
    else:
        lines.append(f"The smallest budget at which PGD{aim} flips this image: **{smallest:g}/255**.")
    changed = int(abs(result.perturbation).max())
    lines.append(f"The perturbation is drawn {scale:.0f} times stronger around grey (grey: unchanged); its largest "
                 f"change is {changed} level{'s' if changed != 1 else ''} of 255. The attacked view is a real 8-bit "
                 f"PNG: download it and upload it again, and it is classified as shown here.")
    return "\n\n".join(lines)


def compare_attack_summary(results: list, request, answered: list) -> str:
    """Compare under an attack: how many architectures their own attack flipped."""
    fooled = [row.display_name for row, result in zip(answered, results) if result is not None and result.fooled]
    aim = f" towards {request.target}" if request.target else ""
    return (f"🎯 **{ATTACK_LABELS[request.attack].split(' (')[0]} at {request.epsilon:g}/255{aim}**, each "
            f"architecture attacked on its own served prediction: **{len(fooled)} of {len(answered)} flipped**"
            + (f" ({', '.join(fooled)})." if fooled else ".") + " Each map is of the image its model was shown.")


# -- Model zoo ------------------------------------------------------------------------------------------------
# The zoo table's column widths (``ZOO_HEADERS`` below), as COMPARE_WIDTHS: the hardware's long description last.
ZOO_WIDTHS = ["10%", "8%", "6%", "6%", "7%", "7%", "6%", "6%", "6%", "5%", "6%", "5%", "6%", "16%"]
NO_CONFUSION = "No confusion matrix yet (`python -m tools.finish_checkpoint` writes `confusion.png`)."


def display_name(name: str) -> str:
    """The architecture's name for people (the registry's), whatever its checkpoint's config says."""
    return model_class(name).display_name or name


# The zoo table's columns, in the order ``serve.zoo.ZooTable.frame`` fills them (``serve.ZOO_HEADERS``).
ATTACKED_HEADER = f"attacked at {TABLE_BUDGET}/255"
ZOO_HEADERS = ["architecture", "name", "val accuracy", "without TTA", "corruption accuracy", ATTACKED_HEADER, "ECE",
               "params (M)", "MMACs", "size (MB)", "latency (ms)", "epochs", "training time (min)", "hardware"]
MODE_WORDS = {"served": "as served", "alone": "of the model alone"}
MODE_TITLES = {"served": "as served", "alone": "the model alone"}
ROBUSTNESS_COMMAND = "`python -m tools.robustness`"
ADVERSARIAL_COMMAND = "`python -m tools.adversarial`"
NOT_MEASURED = "not measured for these weights yet ({command})"
SO_FAR = " (so far)"  # a line of the attack plot whose measurement has not reached every budget yet


def choice_label(name: str, accuracy: float | None, trained: bool) -> str:
    """An architecture in the dropdowns: its name and served accuracy, or that it has no checkpoint."""
    return f"{display_name(name)}  ({accuracy or 0:.1%})" if trained else f"{display_name(name)}  (no checkpoint yet)"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def ood_description(entry: dict | None) -> str:
    """The out-of-distribution rule of a checkpoint in a visitor's words, for the card."""
    if not entry:
        return "not calibrated for these weights, so no image is flagged"
    keep = entry.get("keep_fraction", 0.95)
    if entry.get("score") == "max_prob":
        rule = f"its top class gets less than {entry['threshold']:.0%} of the probability"
    else:
        rule = (f"its probabilities are spread too evenly over the classes (entropy above "
                f"{entry['threshold']:.2f} nats)")
    return (f"an upload is flagged as looking like none of the classes when {rule}: that happens to only "
            f"{1 - keep:.0%} of the validation images")


def robustness_line(result: dict | None, mce: float | None) -> str:
    """The card's sentence on corruptions and calibration, with the error relative to AlexNet's (mCE)."""
    if result is None:
        return NOT_MEASURED.format(command=ROBUSTNESS_COMMAND)
    return (corruption_report.card_sentence(result)
            + ("" if mce is None else f" Corruption error relative to AlexNet (mCE): {mce:.0%}."))


def adversarial_line(result: dict | None) -> str:
    """The card's sentence on adversarial attacks (``robustness.adversarial_report.card_sentence``)."""
    if result is None:
        return NOT_MEASURED.format(command=ADVERSARIAL_COMMAND)
    return adversarial_report.card_sentence(result)


def card_markdown(name: str, key_idea: str, paper: str | None, config: dict | None, has_local: bool,
                  facts: dict | None = None) -> str:
    """The architecture card: its key idea and paper, and what its checkpoint scored and cost. ``facts`` (for a
    usable checkpoint) holds "served_accuracy", "ood" (its out-of-distribution entry), "robustness" and "mce",
    and "adversarial" (the results measured on these weights, or None)."""
    lines = [f"### {display_name(name)}", "", key_idea, ""]
    if config is None and has_local:
        lines.append(f"**Its checkpoint cannot be used** (`{name}/config.json` is invalid); choose it to see why.")
    elif config is None:
        lines.append(f"**No checkpoint yet** for `{name}`: it appears here once trained "
                     f"(`python -m train --arch {name}`).")
    else:
        facts = facts or {}
        # A list, not a table: a two-column Markdown table needs a header row and squeezes its first column.
        lines += [
            f"- **Parameters:** {config.get('params', 0) / 1e6:.2f} M",
            f"- **Validation accuracy:** **{facts.get('served_accuracy') or 0:.2%}** averaged over shifted and "
            f"mirrored copies, as served; {config.get('val_accuracy', 0):.2%} for the image alone "
            f"({config.get('val_split', 'held-out split')})",
            f"- **Training:** {config.get('epochs', '?')} epochs, {duration(config.get('train_seconds'))}; "
            f"{training_summary(config)}; on {hardware_summary(config)}",
            f"- **Out-of-distribution flag:** {ood_description(facts.get('ood'))}",
            f"- **Robustness and calibration:** {robustness_line(facts.get('robustness'), facts.get('mce'))}",
            f"- **Adversarial attacks:** {adversarial_line(facts.get('adversarial'))}",
        ]
    if paper:
        lines += ["", f"Paper: [{paper}]({paper})"]
    return "\n".join(lines)


def zoo_note(trained: int, missing: list[str], device: str, latency_done: bool, attacked: dict[str, str]) -> str:
    """The note above the zoo table: how many architectures are trained, how latency was measured, what the
    attacked column holds (``attacked``: display name -> the mode of its figure, "served" or "alone")."""
    total = trained + len(missing)
    text = (f"{trained} of {total} architectures have a checkpoint."
            + (f" Not yet: {', '.join(missing)}." if missing else "")
            + f" Latency: median of 20 forward passes of one image on this server's {device}, measured in the "
              "background after start-up"
            + ("" if latency_done else " (still being measured: press Reload checkpoints in a few seconds)")
            + ". MMACs: multiply-accumulates per image.")
    text += (f" {ATTACKED_HEADER.capitalize()}: accuracy under the stronger of PGD and APGD-CE when no pixel may "
             f"change by more than {TABLE_BUDGET}/255")
    groups = [f"{MODE_WORDS[mode]} for {', '.join(n for n, m in attacked.items() if m == mode)}"
              for mode in ("served", "alone") if mode in attacked.values()]
    text += (f", {'; '.join(groups)}" if groups else "") + (
        f"; empty where not measured on these weights or not finished ({ADVERSARIAL_COMMAND}).")
    return text


PAPERS = {
    "Szegedy et al. 2014": "https://arxiv.org/abs/1312.6199",
    "Goodfellow et al. 2015": "https://arxiv.org/abs/1412.6572",
    "Madry et al. 2018": "https://arxiv.org/abs/1706.06083",
    "Croce and Hein 2020": "https://arxiv.org/abs/2003.01690",
}


def _cite(name: str) -> str:
    return f"[{name}]({PAPERS[name]})"


def adversarial_note(measured: dict[str, str], under_way: list[str], unmeasured: list[str], settings: list[dict],
                     transfer: dict | None) -> str:
    """The card under the attack plots, for a learner: why an invisible change fools a network (the papers), how
    the worst case differs from CIFAR-10-C's average case, what is measured and how, and what the transfer
    matrix shows. ``measured``: display name -> "served" or "alone" (the mode the card shows); ``under_way``:
    those whose run has started but finished no budget under both attacks; ``unmeasured``: those with no result
    for their weights; ``settings``: each measured result's ``settings``; ``transfer``: the matrix measured on
    these weights, or None."""
    why = (f"**Why a change you cannot see fools a network.** {_cite('Szegedy et al. 2014')} found that nudging "
           "each pixel a little, in a direction chosen from the network's own gradients, changes its answer. "
           f"{_cite('Goodfellow et al. 2015')} showed that one step is enough (FGSM) and why: networks "
           "are close to linear, so 3,072 tiny changes (32 x 32 pixels x 3 colours) that each push the same way add "
           f"up to a large change in the output. {_cite('Madry et al. 2018')} made projected gradient descent "
           f"(PGD), many small steps kept inside the budget, the standard attack; {_cite('Croce and Hein 2020')} "
           "made APGD (and AutoAttack) the standard check, with a step size it tunes itself so that a weak attack "
           "cannot pass for a robust model.")
    contrast = ("**Worst case, not average case.** CIFAR-10-C's corruptions (the severity plot) are random noise, "
                "blur and fog: how a model copes with a typical bad photo. An attack searches for the one change "
                "within the budget that fools this model: the worst case. A model can shrug off heavy noise and "
                "still fall to a change far too small to see.")
    if measured:
        first = settings[0] if settings else {}
        shared = "pgd_steps" in first and all(other == first for other in settings)
        how = (f"{first['images']} validation images; PGD with {first['pgd_steps']} steps and "
               f"{first['pgd_restarts']} random starts, APGD-CE with {first['apgd_steps']} steps"
               if shared else "the settings each checkpoint's adversarial.json records")
        groups = "; ".join(f"{MODE_TITLES[mode]}: {', '.join(n for n, m in measured.items() if m == mode)}"
                           for mode in ("served", "alone") if mode in measured.values())
        what = (f"**What is measured.** {groups[0].upper() + groups[1:]} ({how}; each point is the accuracy "
                "under the stronger of the two, L-infinity, from the unattacked accuracy at \"clean\"). As served "
                "is the app's average over six shifted and mirrored views, the label you see; the model alone is "
                f"one view. Measured by {ADVERSARIAL_COMMAND}, beside each checkpoint's weights.")
    else:
        what = f"**What is measured.** Nothing finished yet for these weights: {ADVERSARIAL_COMMAND} measures it."
    if under_way:
        what += f" Under way: {', '.join(under_way)}."
    if unmeasured:
        what += f" Not measured for these weights yet: {', '.join(unmeasured)}."
    if transfer:
        moved = (f"**Transfer.** {adversarial_report.transfer_sentence(transfer)} In the heatmap, a column is the "
                 "architecture the examples were made on, a row the one shown them; the diagonal is the attack on "
                 "the model itself.")
    else:
        moved = "**Transfer.** Not measured for these weights yet (`python -m tools.adversarial --transfer`)."
    return "\n\n".join([why, contrast, what, moved])
