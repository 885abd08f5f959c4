"""Adversarial examples (issue 45): the attacks against their defining properties, the 8-bit file's round trip,
the command-line contract, the sanity checks that catch a broken attack (gradient masking), and the shipped
adversarial.json files against their own commands.

The attacks run on the real checkpoints of the fastest architectures, on a few validation images.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from architectures import load_pretrained
from architectures.checkpoint import WEIGHTS_NAME, file_sha256
from preprocess import CIFAR10_CLASSES, load_image, model_view, normalize, served_probs
from robustness import adversarial
from robustness.adversarial import EPSILONS, PixelClassifier, attack_image, run_attack, smallest_epsilon
from robustness.adversarial_report import RESULT_NAME, TRANSFER_NAME, epsilon_key
from serve.store import for_serving

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
CAT = ROOT / "examples" / "cat_chelsea.jpg"
DATA = ROOT.parent / "shared/data/cifar10-jpeg/train.tar.gz"
SHIPPED = sorted(p.parent.name for p in CHECKPOINTS.glob(f"*/{RESULT_NAME}"))
TRANSFER = ROOT / "bench" / TRANSFER_NAME
FAST, OTHER = "basic_convnet", "mlpmixer"  # the quickest to attack, and a very different design for transfer


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def served_model(arch: str):
    model = for_serving(load_pretrained(CHECKPOINTS / arch))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def temperature(model) -> float:
    from serve.predict import served_temperature
    return served_temperature(model.config, file_sha256(CHECKPOINTS / model.config["arch"] / WEIGHTS_NAME))


@pytest.fixture(scope="module")
def fast():
    return served_model(FAST)


@pytest.fixture(scope="module")
def images():
    """32 validation images of the checkpoints' split (the shared data set), or the repository's ten examples
    (validation images too, one per class) where it is absent; [0, 1] floats and labels."""
    try:
        from tools.adversarial import evaluation_indices
        from train.data import load_images
        image_set = load_images(str(DATA), 32, ROOT / "data/cache", progress=False)
        index = evaluation_indices(load_pretrained(CHECKPOINTS / FAST).config, image_set, 32, seed=1)
        return image_set.images[index].float() / 255, image_set.labels[index]
    except Exception:  # noqa: BLE001 - the data set is not part of the repository
        files = sorted((ROOT / "examples").glob("val_*.png"))
        pixels = np.stack([model_view(load_image(f), {"image_size": 32}) for f in files])
        labels = torch.tensor([CIFAR10_CLASSES.index(f.stem.split("_")[1]) for f in files])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, labels


@pytest.fixture(scope="module")
def standing(fast, images):
    """The images the model alone gets right (an attack has something to fool)."""
    x, y = images
    with torch.no_grad():
        right = PixelClassifier.of(fast)(x).argmax(1) == y
    assert right.sum() >= 8
    return x[right], y[right]


def accuracy_under(clf, x, y, attack, epsilon, **options) -> float:
    _, fooled = run_attack(clf, x, y, attack, epsilon, **options)
    return 1 - fooled.float().mean().item()


# -- the attacks' defining properties ----------------------------------------------------------------------


def test_the_served_classifier_is_the_apps_served_probabilities(fast, images):
    x = images[0][:6]
    t = temperature(fast)
    expected = served_probs(fast, normalize((x * 255).round().to(torch.uint8), torch.tensor(fast.config["mean"]),
                                            torch.tensor(fast.config["std"])), t)
    assert torch.allclose(PixelClassifier.of(fast, served=True, temperature=t).probs(x), expected, atol=1e-6)
    assert not torch.allclose(PixelClassifier.of(fast).probs(x), expected, atol=1e-3)  # alone is another function


@pytest.mark.parametrize("attack", list(adversarial.ATTACKS))
@pytest.mark.parametrize("served", [False, True])
def test_every_attack_stays_in_the_ball_and_in_pixel_range(fast, standing, attack, served):
    x, y = standing[0][:6], standing[1][:6]
    clf = PixelClassifier.of(fast, served=served, temperature=temperature(fast))
    for epsilon in (1, 8):
        x_adv, fooled = run_attack(clf, x, y, attack, epsilon, steps=4 if attack != "fgsm" else None)
        assert (x_adv - x).abs().max() <= epsilon / 255 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            assert torch.equal(clf(x_adv).argmax(1) != y, fooled)  # "fooled" is what the classifier says


def test_fgsm_is_one_signed_gradient_step(fast, standing):
    x, y = standing
    clf = PixelClassifier.of(fast)
    pixels = x.clone().requires_grad_(True)
    torch.nn.functional.nll_loss(clf(pixels), y, reduction="sum").backward()
    expected = (x + 2 / 255 * pixels.grad.sign()).clamp(0, 1)
    assert torch.equal(run_attack(clf, x, y, "fgsm", 2)[0], expected)


@pytest.mark.parametrize("epsilon", [1, 2])
def test_pgd_and_apgd_are_never_weaker_than_fgsm(fast, standing, epsilon):
    clf = PixelClassifier.of(fast)
    fgsm = accuracy_under(clf, *standing, "fgsm", epsilon)
    pgd = accuracy_under(clf, *standing, "pgd", epsilon, steps=10)
    assert pgd <= fgsm
    assert accuracy_under(clf, *standing, "apgd-ce", epsilon, steps=20) <= fgsm


def test_a_targeted_attack_reaches_its_target_on_an_easy_case(fast, standing):
    """At 8/255, towards each image's second most likely class."""
    x, _ = standing
    clf = PixelClassifier.of(fast)
    with torch.no_grad():
        runner_up = clf(x).topk(2).indices[:, 1]
    for attack in ("pgd", "apgd-ce"):
        x_adv, reached = run_attack(clf, x, runner_up, attack, 8, targeted=True, steps=20)
        assert reached.all(), attack
        with torch.no_grad():
            assert torch.equal(clf(x_adv).argmax(1), runner_up)


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce"])
def test_the_same_seed_gives_the_same_attack(fast, standing, attack):
    x, y = standing[0][:4], standing[1][:4]
    clf = PixelClassifier.of(fast)
    # 0.5/255: these images mostly stand, so every step is taken and the random start shows in the result.
    first, again = (run_attack(clf, x, y, attack, 0.5, seed=3, steps=3)[0] for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, run_attack(clf, x, y, attack, 0.5, seed=4, steps=3)[0])


def test_apgd_checkpoints_follow_the_paper():
    # p0 = 0, p1 = 0.22, p(j+1) = p(j) + max(p(j) - p(j-1) - 0.03, 0.06), times the steps, rounded up
    assert adversarial.apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("bad, match", [
    ({"attack": "deepfool"}, "unknown attack 'deepfool'; choose one of none, fgsm, pgd, apgd-ce"),
    ({"epsilon": 3}, r"epsilon must be one of 0.5, 1, 2, 4, 8"),
    ({"epsilon": "a lot"}, r"epsilon must be one of 0.5, 1, 2, 4, 8"),
    ({"target": "plane"}, "target 'plane' is not a class; choose one of airplane, automobile"),
    ({"target": 10}, "target 10 is not a class"),
])
def test_bad_settings_are_clear_errors_naming_the_choices(fast, bad, match):
    view = model_view(load_image(CAT), fast.config)
    settings = {"attack": "pgd", "epsilon": 1, "target": None, **bad}
    with pytest.raises(ValueError, match=match):
        attack_image(PixelClassifier.of(fast, served=True), view, settings["attack"], settings["epsilon"],
                     settings["target"], fast.config["class_names"])


# -- one image, as the app and tools.attack make it --------------------------------------------------------


def test_the_attacked_png_fools_the_served_model_when_uploaded_again(fast, tmp_path):
    config = fast.config
    clf = PixelClassifier.of(fast, served=True, temperature=temperature(fast))
    view = model_view(load_image(CAT), config)
    result = attack_image(clf, view, "pgd", 4, class_names=config["class_names"], seed=0)
    assert result.fooled and result.new_label != result.label
    assert np.abs(result.perturbation).max() <= 4
    path = tmp_path / "attacked.png"
    path.write_bytes(result.png_bytes())
    again = model_view(load_image(path), config)  # the app's own path for an upload
    assert np.array_equal(again, result.attacked)
    pixels = torch.from_numpy(again.copy()).permute(2, 0, 1)[None]
    probs = served_probs(fast, normalize(pixels, torch.tensor(config["mean"]), torch.tensor(config["std"])),
                         temperature(fast))[0]
    assert int(probs.argmax()) == result.new_label != result.label
    assert np.allclose(probs.numpy(), result.probs_after, atol=1e-6)
    # Seeded: the same upload and settings give the same file, also when the caller passes its prediction.
    again = attack_image(clf, view, "pgd", 4, class_names=config["class_names"], seed=0,
                         probs_before=result.probs_before)
    assert again.png_bytes() == path.read_bytes() and np.array_equal(again.probs_after, result.probs_after)


def test_rounding_that_undoes_an_attack_is_repaired_on_the_8_bit_grid(fast, monkeypatch):
    """A float attack that rounds back to the image itself is continued by steps of one level."""
    clf = PixelClassifier.of(fast, served=True, temperature=temperature(fast))
    view = model_view(load_image(CAT), fast.config)

    def rounds_away(classifier, x, labels, *args, **kwargs):
        return (x + 0.4 / 255).clamp(0, 1), torch.ones(len(x), dtype=torch.bool)  # "fooled", but under a level

    monkeypatch.setattr(adversarial, "run_attack", rounds_away)
    result = attack_image(clf, view, "pgd", 4, seed=0)
    assert result.fooled_before_rounding and 0 < result.grid_steps <= adversarial.GRID_STEPS
    assert result.fooled and np.abs(result.perturbation).max() <= 4


def test_half_a_level_leaves_the_file_unchanged_and_none_leaves_everything(fast):
    clf = PixelClassifier.of(fast, served=True)
    view = model_view(load_image(CAT), fast.config)
    for attack in ("fgsm", "pgd"):
        half = attack_image(clf, view, attack, 0.5)
        assert np.array_equal(half.attacked, view) and not half.fooled  # no other 8-bit image within 0.5/255
    none = attack_image(clf, view, "none", 8)
    assert np.array_equal(none.attacked, view) and np.array_equal(none.probs_after, none.probs_before)


def test_the_smallest_epsilon_is_the_first_budget_that_flips_the_file(fast):
    clf = PixelClassifier.of(fast, served=True, temperature=temperature(fast))
    view = model_view(load_image(CAT), fast.config)
    epsilon, result = smallest_epsilon(clf, view, "pgd", seed=0)
    assert epsilon in EPSILONS and epsilon >= 1 and result.fooled and result.epsilon == epsilon
    for smaller in (e for e in EPSILONS if 1 <= e < epsilon):
        assert not attack_image(clf, view, "pgd", smaller, seed=0).fooled


def test_the_perturbation_is_amplified_to_its_budget():
    pixels, scale = adversarial.amplified(np.array([[-4, 0, 4]]), 4)
    assert pixels.tolist() == [[1, 128, 255]] and scale == pytest.approx(127 / 4)


# -- the app's service: "Attack this image" in Classify and Compare -----------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The app's service over two real checkpoints (the fastest, and a very different design)."""
    import serve
    folder = tmp_path_factory.mktemp("two_checkpoints")
    for arch in (FAST, OTHER):
        (folder / arch).symlink_to(CHECKPOINTS / arch)
    return serve.ZooService(serve.ModelStore(folder))


def test_no_attack_changes_nothing(service):
    """The trailing parameters' defaults are the answer without them (an old API client's call)."""
    plain = service.predict(str(CAT), FAST)
    assert service.predict(str(CAT), FAST, "none", 3, "none", 2, "untargeted") == plain
    assert service.attack(str(CAT), FAST) is None
    note, view = service.describe(str(CAT), FAST)
    assert service.describe(str(CAT), FAST, "none", 3, "none", 8, "cat")[1].tobytes() == view.tobytes()


def test_every_event_of_a_click_sees_the_attacked_file_and_it_fools_again(service, tmp_path):
    import serve
    before = service.predict(str(CAT), FAST)
    after = service.predict(str(CAT), FAST, "none", 3, "pgd", 4)
    shown = service.attack(str(CAT), FAST, "none", 3, "pgd", 4)
    assert shown.fooled and max(after, key=after.get) != max(before, key=before.get)
    attacked = load_image(shown.png_path)
    assert attacked.size == (32, 32) and shown.png_path.endswith(".png")
    # The preview is the attacked file, blown up; a fresh server given the file says what this one said.
    _, preview = service.describe(str(CAT), FAST, "none", 3, "pgd", 4)
    assert np.array_equal(np.asarray(preview.resize((32, 32), 0)), np.asarray(attacked))
    fresh = serve.ZooService(service.store)
    assert fresh.predict(shown.png_path, FAST) == pytest.approx(after, abs=1e-6)
    # Seeded: another server makes the same file.
    assert Path(fresh.attack(str(CAT), FAST, "none", 3, "pgd", 4).png_path).read_bytes() == \
        Path(shown.png_path).read_bytes()
    assert "4/255" in shown.note and shown.smallest_epsilon is not None and shown.smallest_epsilon <= 4
    assert shown.perturbation.size[0] < shown.perturbation.size[1]  # the scale is written under the picture


def test_an_attack_evicted_from_the_cache_is_made_again_the_same(service):
    """A busy server may drop an attack between the top-5 and the panel: the panel makes it again, seeded."""
    import serve
    from serve.recent import RecentlyUsed
    kept = service.attack(str(CAT), FAST, "none", 3, "fgsm", 2)
    forgetful = serve.ZooService(service.store)
    forgetful._attacks = RecentlyUsed(0)  # keeps nothing
    again = forgetful.attack(str(CAT), FAST, "none", 3, "fgsm", 2)
    assert Path(again.png_path).read_bytes() == Path(kept.png_path).read_bytes() and again.note == kept.note


def test_a_targeted_attack_in_the_app_aims_at_its_class(service):
    before = service.predict(str(CAT), FAST)
    aim = sorted(before, key=before.get)[-2]  # the runner-up: reachable within 8/255
    after = service.predict(str(CAT), FAST, "none", 3, "pgd", 8, aim)
    assert max(after, key=after.get) == aim and after[aim] > before[aim]


@pytest.mark.parametrize("setting, match", [
    (("cw", 2, "untargeted"), "unknown attack 'cw'; choose one of none, fgsm, pgd"),
    (("pgd", 3, "untargeted"), "epsilon must be one of 0.5, 1, 2, 4, 8"),
    (("pgd", 2, "dragon"), "not a class; choose 'untargeted' or one of airplane"),
    (("none", 16, "untargeted"), "epsilon must be one of"),  # checked even without an attack
])
def test_bad_attack_settings_in_the_app_name_the_choices(service, setting, match):
    import serve
    for call in (service.predict, service.attack):
        with pytest.raises(serve.RequestError, match=match) as error:
            call(str(CAT), FAST, "none", 3, *setting)
        assert error.value.title == "Unknown attack setting"


def test_compare_attacks_each_architecture_on_its_own_prediction(service):
    table, gallery, summary = service.compare(str(CAT), None, "none", 3, "fgsm", 8)
    flipped = [service._attacks.get(key).fooled for key in list(service._attacks._entries)
               if key[2] in (FAST, OTHER) and key[-1] == ("fgsm", 8.0, None)]
    assert len(flipped) == 2  # one white-box attack per architecture
    assert f"{sum(flipped)} of 2 flipped" in summary
    plain_table, plain_gallery, _ = service.compare(str(CAT))
    assert len(gallery) == len(plain_gallery) == 2
    assert any(a[0].tobytes() != b[0].tobytes() for a, b in zip(gallery, plain_gallery))  # maps of the attacked


def test_the_command_line_contract(tmp_path, capsys):
    from tools import attack as tool
    out = tmp_path / "cat.png"
    code = tool.main([str(CAT), "--arch", FAST, "--attack", "pgd", "--epsilon", "4", "--out", str(out)])
    assert code == 0 and "fooled" in capsys.readouterr().out
    clf = tool.served_classifier(CHECKPOINTS / FAST)
    view = model_view(load_image(out), clf.model.config)
    before = model_view(load_image(CAT), clf.model.config)
    assert view.shape == (32, 32, 3) and np.abs(view.astype(int) - before).max() <= 4
    assert clf.probs(torch.from_numpy(view.copy()).permute(2, 0, 1)[None] / 255).argmax() != \
        clf.probs(torch.from_numpy(before.copy()).permute(2, 0, 1)[None] / 255).argmax()
    code = tool.main([str(CAT), "--arch", FAST, "--attack", "fgsm", "--epsilon", "8", "--target", "truck",
                      "--out", str(out)])
    assert code in (0, 1)
    for bad in (["--epsilon", "3"], ["--epsilon", "1", "--target", "plane"], ["--epsilon", "1", "--arch", "lenet"]):
        args = {"--arch": FAST, "--epsilon": "1", "--target": None}
        args.update(dict(zip(bad[::2], bad[1::2])))
        argv = [str(CAT), "--attack", "pgd", "--out", str(out)] + [w for k, v in args.items() if v for w in (k, v)]
        assert tool.main(argv) == 2


# -- the sanity checks of a robustness evaluation, on a few images -----------------------------------------


def test_accuracy_falls_monotonically_with_epsilon_for_independent_attacks(fast, images):
    """Each budget attacked on its own (the tool's chain makes this true by construction; the attack must too)."""
    clf = PixelClassifier.of(fast)
    x, y = images
    curve = [accuracy_under(clf, x, y, "pgd", e, steps=10) for e in EPSILONS]
    assert curve == sorted(curve, reverse=True), curve
    assert curve[-1] <= 0.1, curve  # near 0% at 8/255, as RobustBench reports for standard training


def test_the_stronger_attack_is_never_weaker(fast, images):
    clf = PixelClassifier.of(fast)
    for epsilon in (1, 2):
        fgsm, pgd = (accuracy_under(clf, *images, a, epsilon, steps=20) for a in ("fgsm", "pgd"))
        apgd = accuracy_under(clf, *images, "apgd-ce", epsilon, steps=50)
        assert apgd <= pgd <= fgsm, (epsilon, fgsm, pgd, apgd)


def test_a_transfer_attack_is_weaker_than_the_white_box_one(fast, standing):
    other = served_model(OTHER)
    x, y = standing
    on_fast, _ = run_attack(PixelClassifier.of(fast), x, y, "pgd", 4, steps=10, early_stop=False)
    target = PixelClassifier.of(other)
    with torch.no_grad():
        transferred = (target(on_fast).argmax(1) == y).float().mean().item()
    white_box = accuracy_under(target, x, y, "pgd", 4, steps=10)
    assert white_box < transferred, (white_box, transferred)


def test_the_majority_vote_breaks_ties_by_confidence():
    from tools.adversarial import majority_vote
    probs = torch.tensor([[[0.9, 0.1, 0.0]], [[0.2, 0.7, 0.1]], [[0.1, 0.6, 0.3]], [[0.4, 0.0, 0.6]]])
    assert majority_vote(probs).tolist() == [1]  # two votes for class 1
    assert majority_vote(probs[:2]).tolist() == [0]  # one each: 0.9 beats 0.7


# -- the tool: resuming gives what an uninterrupted run gives ----------------------------------------------


@pytest.fixture(scope="module")
def validation_set():
    from train.data import load_images
    try:
        return load_images(str(DATA), 32, ROOT / "data/cache", progress=False)
    except Exception as error:  # noqa: BLE001 - the data set is not part of the repository
        pytest.skip(f"CIFAR-10 training data not available: {error}")


def test_a_resumed_evaluation_equals_an_uninterrupted_one(tmp_path, validation_set, monkeypatch):
    import shutil

    from tools import adversarial as tool
    settings = tool.Settings(images=12, seed=0, pgd_steps=3, pgd_restarts=2, apgd_steps=4)
    whole, parts = tmp_path / "whole" / FAST, tmp_path / "parts" / FAST
    for folder in (whole, parts):
        folder.mkdir(parents=True)
        for name in ("config.json", WEIGHTS_NAME):
            shutil.copy(CHECKPOINTS / FAST / name, folder / name)
    expected = tool.evaluate(whole, validation_set, settings, progress=False)
    assert expected["complete"] and json.loads((whole / "config.json").read_text())["adversarial"]["images"] == 12
    writes, write = [], tool.atomic_write_json

    def stopped_during_the_third_budget(path, data):
        if len(writes) == 2:
            raise KeyboardInterrupt
        writes.append(path)
        write(path, data)

    monkeypatch.setattr(tool, "atomic_write_json", stopped_during_the_third_budget)
    with pytest.raises(KeyboardInterrupt):
        tool.evaluate(parts, validation_set, settings, progress=False)
    monkeypatch.undo()
    partial = json.loads((parts / RESULT_NAME).read_text())
    assert not partial["complete"] and list(partial["accuracy"]["pgd"]["alone"]) == ["0.5", "1"]
    assert "adversarial" not in json.loads((parts / "config.json").read_text())
    resumed = tool.evaluate(parts, validation_set, settings, resume=True, progress=False)
    for key in ("accuracy", "fallen_at", "clean", "complete"):
        assert resumed[key] == expected[key], key


# -- the shipped results --------------------------------------------------------------------------------------


def _argument(command: str, flag: str) -> str:
    words = shlex.split(command)
    return words[words.index(flag) + 1]


@pytest.mark.skipif(not SHIPPED, reason="no adversarial.json shipped yet")
@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_results_pass_the_sanity_checks(arch):
    folder = CHECKPOINTS / arch
    result = json.loads((folder / RESULT_NAME).read_text())
    assert result["weights_sha256"] == file_sha256(folder / WEIGHTS_NAME)
    assert result["images"] >= 500 and result["settings"]["pgd_steps"] >= 20 and result["settings"]["pgd_restarts"] >= 2
    keys = [epsilon_key(e) for e in EPSILONS]
    for mode in ("alone", "served"):
        for attack in ("pgd", "apgd-ce"):
            curve = [result["accuracy"][attack].get(mode, {}).get(k) for k in keys]
            finished = [a for a in curve if a is not None]
            assert finished == sorted(finished, reverse=True) and all(a <= result["clean"][mode] for a in finished)
        pgd, apgd = result["accuracy"]["pgd"].get(mode, {}), result["accuracy"]["apgd-ce"].get(mode, {})
        for key in set(pgd) & set(apgd):
            assert apgd[key] <= pgd[key], (mode, key, pgd[key], apgd[key])
    if result["complete"]:
        from tools.adversarial import config_entry
        assert json.loads((folder / "config.json").read_text())["adversarial"] == config_entry(result)


# Architectures whose evaluation the sanity checks have caught as not tight, and why; strict, so that a stronger
# evaluation that closes the gap makes the test fail until the entry is removed.
KNOWN_GRADIENT_MASKING = {
    "alexnet": "PGD with Madry's step size leaves AlexNet alone far more accurate at 8/255 than APGD-CE's adaptive "
               "step does, which itself stays above 2%, and PGD examples made on basic_convnet fool many images "
               "white-box PGD could not: its confident outputs sit on the label-smoothing plateau, where small "
               "steps find no slope",
}


@pytest.mark.skipif(not SHIPPED, reason="no adversarial.json shipped yet")
@pytest.mark.parametrize("arch", [pytest.param(arch, marks=pytest.mark.xfail(
    reason=KNOWN_GRADIENT_MASKING[arch], strict=True)) if arch in KNOWN_GRADIENT_MASKING else arch for arch in SHIPPED])
def test_shipped_results_fall_close_to_zero_at_8_of_255(arch):
    """Standard-trained models fall to about 0% at 8/255 (RobustBench); more is the mark of a masked gradient."""
    result = json.loads((CHECKPOINTS / arch / RESULT_NAME).read_text())
    finished = [mode for mode in ("alone", "served") if all("8" in result["accuracy"][a].get(mode, {})
                                                             for a in ("pgd", "apgd-ce"))]
    if not finished:
        pytest.skip("8/255 not finished under both attacks")
    for mode in finished:
        worst = min(result["accuracy"][a][mode]["8"] for a in ("pgd", "apgd-ce"))
        assert worst <= 0.02, (mode, worst)


@pytest.mark.skipif(not SHIPPED, reason="no adversarial.json shipped yet")
@pytest.mark.parametrize("arch", SHIPPED)
def test_shipped_results_reproduce_from_their_command(arch, validation_set):
    """The unattacked accuracy, and the first batch of the last finished budget of the model alone under PGD (few
    images stand there), re-measured with the images, seeds and settings the file records."""
    from tools import adversarial as tool
    result = json.loads((CHECKPOINTS / arch / RESULT_NAME).read_text())
    fallen = result["fallen_at"]["pgd"].get("alone")
    if not fallen:
        pytest.skip("the model alone has not been attacked yet")
    settings = tool.Settings(**result["settings"])
    assert settings.images == int(_argument(result["command"], "--images"))
    model = served_model(arch)
    index = tool.evaluation_indices(model.config, validation_set, settings.images, settings.seed)
    images, labels = validation_set.images[index], validation_set.labels[index]
    clf = tool.classifier(model, "alone", result["weights_sha256"])
    right = (tool.predictions(clf, images).argmax(1) == labels).tolist()
    assert [f != 0 for f in fallen] == right
    last = [e for e in EPSILONS if epsilon_key(e) in result["accuracy"]["pgd"]["alone"]][-1]
    standing = [i for i, f in enumerate(fallen) if f is None or f >= last][:tool.BATCH]  # the budget's batch 0
    steps, restarts = settings.steps("pgd")
    _, fooled = run_attack(clf, images[standing].float() / 255, labels[standing], "pgd", last, steps=steps,
                           restarts=restarts, seed=tool.stage_seed(settings.seed, "pgd", "alone", epsilon_key(last), 0))
    assert fooled.tolist() == [fallen[i] == last for i in standing]


def white_box_accuracy(arch: str, images: int, epsilon: float) -> float | None:
    """The share of the first ``images`` evaluation images (the transfer matrix's, a prefix of the same seeded
    shuffle) that stand at ``epsilon`` under both white-box attacks on the served model; None before both ran."""
    result = json.loads((CHECKPOINTS / arch / RESULT_NAME).read_text()) if arch in SHIPPED else {}
    fallen = [result.get("fallen_at", {}).get(attack, {}).get("served") for attack in ("pgd", "apgd-ce")]
    if not all(fallen) or any(epsilon_key(epsilon) not in result["accuracy"][a]["served"] for a in ("pgd", "apgd-ce")):
        return None
    standing = [all(f[i] is None or f[i] > epsilon for f in fallen) for i in range(images)]
    return sum(standing) / images


@pytest.mark.skipif(not TRANSFER.is_file(), reason="no transfer matrix yet")
def test_transfer_is_weaker_than_the_white_box_attack_in_the_shipped_matrix():
    """Examples made on another architecture leave each one more accurate than the white-box attacks on its own
    served model: the stronger of PGD and APGD-CE on the same images where adversarial.json has them, else the
    matrix's diagonal (PGD alone)."""
    result = json.loads(TRANSFER.read_text())
    names = result["architectures"]
    for target in names:
        white_box = white_box_accuracy(target, result["images"], result["epsilon"])
        if white_box is None:
            white_box = result["accuracy"][target][target]
        for source in names:
            if source != target:
                assert result["accuracy"][source][target] > white_box, (source, target, white_box)
        assert white_box < result["clean"][target]


def test_the_finishing_step_measures_adversarial_robustness_when_asked(tmp_path, tiny_folder, monkeypatch):
    """``tools.finish_checkpoint --adversarial`` writes adversarial.json and config.json's ``adversarial`` (on a
    random-weight 3-class checkpoint and the tests' tiny colour data set, whose validation split has 12 images;
    tests/test_tools.py holds that without the option config.json gains no field of it)."""
    from dataclasses import dataclass

    from architectures import create_model, save_pretrained
    from tools import adversarial as tool
    from tools import finish_checkpoint

    @dataclass(frozen=True)
    class FewSteps(tool.Settings):  # the step as it is, its attacks shortened for the test
        pgd_steps: int = 2
        apgd_steps: int = 3

    monkeypatch.setattr(finish_checkpoint, "AdversarialSettings", FewSteps)
    torch.manual_seed(0)
    folder = save_pretrained(create_model(FAST, num_classes=3), tmp_path / FAST, {
        "display_name": FAST, "class_names": ["blue", "green", "red"], "image_size": 32, "mean": [0.5] * 3,
        "std": [0.25] * 3, "val_accuracy": 0.5, "epochs": 1, "train_seconds": 1.0, "hardware": "none"})
    argv = [str(folder), "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "cache"), "--skip-cam",
            "--probe-images", "30", "--adversarial"]
    assert finish_checkpoint.main(argv) == 0
    result = json.loads((folder / RESULT_NAME).read_text())
    config = json.loads((folder / "config.json").read_text())
    assert result["complete"] and result["images"] == 12 and (folder / "adversarial.png").is_file()
    assert result["settings"]["pgd_steps"] == 2
    assert set(config["adversarial"]) >= {"pgd", "apgd-ce", "images", "command"}
    assert set(config["adversarial"]["pgd"]["served"]) == {"0.5", "1", "2", "4", "8"}
