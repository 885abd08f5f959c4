"""The Model zoo tab's adversarial pieces (serve/zoo.py, serve/zoo_plots.py, serve/wording.py's Model zoo
section): the table's attacked column, the card's sentence, the accuracy-against-epsilon plot, the transfer
heatmap and the learner's note, each from synthetic adversarial.json and transfer files written beside small
random-weight checkpoints, and each refusing a result measured on other weights.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import random_checkpoint
from PIL import Image

import serve
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from robustness import adversarial_report
from robustness.adversarial_report import BUDGETS, RESULT_NAME, TABLE_BUDGET, TRANSFER_NAME
from serve import wording, zoo_plots
from serve.zoo import ZooTable

ARCHS = ("basic_convnet", "alexnet")
# Accuracy under PGD and APGD-CE per budget; APGD-CE is the stronger at 2/255, so the column must take it.
PGD = {"0.5": 0.7, "1": 0.55, "2": 0.4, "4": 0.1, "8": 0.02}
APGD = {"0.5": 0.68, "1": 0.5, "2": 0.3, "4": 0.05, "8": 0.0}
PAPERS = ("Szegedy et al. 2014", "Goodfellow et al. 2015", "Madry et al. 2018", "Croce and Hein 2020")


def sha(folder: Path) -> str:
    return file_sha256(folder / WEIGHTS_NAME)


def write_result(folder: Path, modes=("alone",), weights_sha256: str | None = None, pgd=PGD, apgd=APGD,
                 clean=0.8) -> dict:
    """An adversarial.json as tools.adversarial writes it, measured in ``modes``; a served figure 5 points
    above the alone one so that the two can be told apart."""
    lift = {"alone": 0.0, "served": 0.05}
    result = {"command": "python -m tools.adversarial", "weights_sha256": weights_sha256 or sha(folder),
              "images": 40, "seed": 0, "settings": {"images": 40, "seed": 0, "pgd_steps": 20, "pgd_restarts": 2,
                                                    "apgd_steps": 100, "apgd_restarts": 1},
              "clean": {mode: clean + lift[mode] for mode in modes},
              "accuracy": {"pgd": {mode: {k: v + lift[mode] for k, v in pgd.items()} for mode in modes},
                           "apgd-ce": {mode: {k: v + lift[mode] for k, v in apgd.items()} for mode in modes}},
              "complete": set(modes) == {"alone", "served"} and len(pgd) == len(apgd) == len(BUDGETS)}
    (folder / RESULT_NAME).write_text(json.dumps(result))
    return result


def write_transfer(bench: Path, folders: dict[str, Path], shas: dict[str, str] | None = None) -> dict:
    names = list(folders)
    transfer = {"command": "python -m tools.adversarial --transfer", "epsilon": 4, "images": 20, "seed": 0,
                "architectures": names, "weights_sha256": shas or {n: sha(f) for n, f in folders.items()},
                "clean": {n: 0.8 for n in names}, "clean_vote": 0.85,
                "accuracy": {s: {t: 0.01 if s == t else 0.6 for t in names} for s in names},
                "vote": {s: 0.7 for s in names}}
    bench.mkdir(parents=True, exist_ok=True)
    (bench / TRANSFER_NAME).write_text(json.dumps(transfer))
    return transfer


def coloured(image: Image.Image) -> int:
    """Pixels with a clear colour: a plot's lines or cells; a placeholder is grey text on white."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return int(((pixels.max(-1) - pixels.min(-1)) > 60).sum())


@pytest.fixture()
def zoo(tmp_path):
    """(ZooTable over two random-weight checkpoints, their folders, the bench folder)."""
    checkpoints = tmp_path / "checkpoints"
    folders = {name: random_checkpoint(checkpoints, name, seed=i, val_accuracy=0.5 + i / 10)
               for i, name in enumerate(ARCHS)}
    store = serve.ModelStore(checkpoints, repo="", device="cpu", ood_thresholds={})
    return ZooTable(store, bench_dir=tmp_path / "bench"), folders, tmp_path / "bench"


def column(table: ZooTable, name: str):
    frame = table.frame(table.store.configs())
    value = frame.loc[frame["name"] == name, wording.ATTACKED_HEADER].item()
    return None if value is None or np.isnan(value) else value


# -- the table ------------------------------------------------------------------------------------------------
def test_the_headers_and_their_widths_keep_in_step(zoo):
    table, _, _ = zoo
    frame = table.frame(table.store.configs())
    assert list(frame.columns) == wording.ZOO_HEADERS == serve.ZOO_HEADERS
    assert wording.ATTACKED_HEADER == f"attacked at {TABLE_BUDGET}/255" and wording.ATTACKED_HEADER in frame
    assert len(wording.ZOO_WIDTHS) == len(wording.ZOO_HEADERS)
    assert sum(float(width.rstrip("%")) for width in wording.ZOO_WIDTHS) == pytest.approx(100)
    assert frame["name"].tolist() == ["alexnet", "basic_convnet"]  # the most accurate as served first


def test_the_attacked_column_takes_the_stronger_attack_served_when_measured(zoo):
    table, folders, _ = zoo
    assert column(table, "alexnet") is None  # not measured
    write_result(folders["alexnet"], modes=("alone",))
    assert column(table, "alexnet") == pytest.approx(APGD[TABLE_BUDGET])
    assert "of the model alone for AlexNet" in table.note(table.store.configs())
    write_result(folders["alexnet"], modes=("alone", "served"))
    assert column(table, "alexnet") == pytest.approx(APGD[TABLE_BUDGET] + 0.05)
    note = table.note(table.store.configs())
    assert "as served for AlexNet" in note and "of the model alone" not in note
    assert column(table, "basic_convnet") is None


def test_the_attacked_column_is_empty_for_other_weights_or_an_unfinished_budget(zoo):
    table, folders, _ = zoo
    write_result(folders["alexnet"], weights_sha256="0" * 64)  # measured on other weights
    assert column(table, "alexnet") is None
    assert "AlexNet" not in table.note(table.store.configs())
    # Both attacks must have finished the budget: PGD alone at 2/255 is not the worst case.
    write_result(folders["alexnet"], apgd={"0.5": 0.68, "1": 0.5})
    assert column(table, "alexnet") is None
    write_result(folders["alexnet"], apgd={"0.5": 0.68, "1": 0.5, "2": 0.3})
    assert column(table, "alexnet") == pytest.approx(0.3)


# -- the card -------------------------------------------------------------------------------------------------
def test_the_card_says_what_attacks_do_or_that_nothing_is_measured(zoo):
    table, folders, _ = zoo
    line = next(line for line in serve.architecture_card(table.store, "alexnet").splitlines()
                if line.startswith("- **Adversarial attacks:**"))
    assert "not measured for these weights yet (`python -m tools.adversarial`)" in line
    write_result(folders["alexnet"], modes=("alone",))
    line = next(line for line in serve.architecture_card(table.store, "alexnet").splitlines()
                if line.startswith("- **Adversarial attacks:**"))
    assert "the model alone" in line and "80% unattacked" in line and "30% at 2/255" in line
    assert "halves" in line and "1/255" not in line.split("halves")[0].split("at most")[-1]  # 2/255 halves it
    assert "As served" in line and "not measured yet" in line
    write_result(folders["alexnet"], weights_sha256="f" * 64)
    assert "not measured for these weights yet" in serve.architecture_card(table.store, "alexnet")


def test_the_card_sentence_marks_an_unfinished_run():
    result = {"images": 40, "clean": {"alone": 0.8}, "accuracy": {"pgd": {"alone": PGD},
                                                                  "apgd-ce": {"alone": {"0.5": 0.6}}}}
    text = adversarial_report.card_sentence(result)
    assert "60% at 0.5/255" in text and "1/255" not in text.split("Not finished")[0]
    assert "Not finished yet: APGD-CE at 1/255 and 2/255 and 4/255 and 8/255" in text
    result["accuracy"]["apgd-ce"]["alone"] = {}
    assert "no budget is finished under both attacks" in adversarial_report.card_sentence(result)
    assert adversarial_report.card_sentence(None) == ""
    robust = {"images": 40, "clean": {"served": 0.8}, "accuracy": {"pgd": {"served": dict.fromkeys(BUDGETS, 0.7)},
                                                                   "apgd-ce": {"served": dict.fromkeys(BUDGETS, 0.6)}}}
    text = adversarial_report.card_sentence(robust)
    assert "as served" in text and "keeps more than half" in text and "halves" not in text
    assert "not measured yet" not in text and "Not finished" not in text


# -- the plots ------------------------------------------------------------------------------------------------
def test_five_plots_the_attack_curves_follow_the_results(zoo):
    table, folders, _ = zoo
    frame = table.frame(table.store.configs())
    before = table.plots(frame)
    assert len(before) == 5 and all(isinstance(image, Image.Image) for image in before)
    assert table.plots(frame) is before  # cached while nothing changed
    empty_attack = coloured(before[3])
    write_result(folders["alexnet"], modes=("alone",))
    after = table.plots(frame)
    assert after is not before  # a new adversarial.json redraws
    assert coloured(after[3]) > empty_attack + 500  # a line where the placeholder had none
    assert table.adversarial_curves(frame["name"]) == {
        "alone": {"AlexNet": pytest.approx([0.8, *(min(PGD[k], APGD[k]) for k in BUDGETS)])}, "served": {}}
    write_result(folders["basic_convnet"], modes=("alone", "served"), apgd={"0.5": 0.6})
    curves = table.adversarial_curves(frame["name"])
    assert curves["served"] == {"Basic ConvNet" + wording.SO_FAR: pytest.approx([0.85, 0.65])}
    two_panels = table.plots(frame)[3]
    assert two_panels.width > after[3].width  # served and alone side by side


def test_the_attack_plot_and_the_heatmap_have_placeholders():
    for placeholder in (zoo_plots.adversarial_by_epsilon({}), zoo_plots.adversarial_by_epsilon({"served": {}}),
                        zoo_plots.transfer_heatmap(None)):
        assert placeholder.size == (800, 500) and coloured(placeholder) == 0
    curves = {"alone": {"A": [0.9, 0.6, 0.3, 0.1, 0.0, 0.0]}}
    assert coloured(zoo_plots.adversarial_by_epsilon(curves)) > 500


def test_the_heatmap_shows_a_matrix_measured_on_these_weights_only(zoo):
    table, folders, bench = zoo
    frame = table.frame(table.store.configs())
    assert coloured(table.plots(frame)[4]) == 0
    write_transfer(bench, folders)
    assert table.plots(frame)[4].size != (800, 500) and coloured(table.plots(frame)[4]) > 5000
    assert "Not measured for these weights yet (`python -m tools.adversarial --transfer`)" not in \
        table.adversarial_note()
    write_transfer(bench, folders, shas={name: "0" * 64 for name in folders})
    os.utime(bench / TRANSFER_NAME, ns=(1, 1))  # a different mtime even on a coarse clock
    assert coloured(table.plots(frame)[4]) == 0
    assert "--transfer" in table.adversarial_note()


def test_tools_adversarial_saves_the_heatmap_the_app_shows(zoo, tmp_path):
    from tools.adversarial import plot_transfer

    _, folders, bench = zoo
    transfer = write_transfer(bench, folders)
    plot_transfer(transfer, tmp_path / "transfer.png")
    with Image.open(tmp_path / "transfer.png") as saved:
        assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(zoo_plots.transfer_heatmap(transfer)))


# -- the note -------------------------------------------------------------------------------------------------
def test_the_note_names_the_papers_the_measurement_and_the_transfer(zoo):
    table, folders, bench = zoo
    note = table.adversarial_note()
    for paper, link in wording.PAPERS.items():
        assert f"[{paper}]({link})" in note and link.startswith("https://arxiv.org/abs/")
    assert set(wording.PAPERS) == set(PAPERS)
    assert "CIFAR-10-C" in note and "worst case" in note
    assert "Nothing finished yet" in note and "AlexNet" in note and "`python -m tools.adversarial`" in note
    write_result(folders["alexnet"], modes=("alone", "served"))
    write_result(folders["basic_convnet"], pgd={"0.5": 0.7}, apgd={})
    note = table.adversarial_note()
    assert "As served: AlexNet (40 validation images; PGD with 20 steps and 2 random starts" in note
    assert "Under way: Basic ConvNet" in note
    transfer = write_transfer(bench, folders)
    assert adversarial_report.transfer_sentence(transfer) in table.adversarial_note()
