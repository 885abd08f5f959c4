"""Tests of explain/: CAM maps for every architecture and method, their sanity and faithfulness, SE attention.

Checks on trained weights use the checkpoints in ``checkpoints/<arch>/`` and skip an architecture whose
checkpoint is absent; the rest use random weights. Run from the repository root:
``python -m pytest tests/test_explain.py``; add ``-s -k "sanity or deletion"`` to print the figures.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy.ndimage import gaussian_filter

import architecture_checks
import explain
from architectures import create_model, list_models, load_config, load_pretrained, save_pretrained
from architectures._blocks import SqueezeExcite
from explain.cam import FUSED_BLUR_SIGMA
from explain.curves import (
    CHOICE_FRACTIONS,
    VERDICT_FRACTIONS,
    blurred,
    centre_prior,
    choice_scores,
    phase_randomised,
    verdict_curves,
)
from explain.faithfulness import CURVE_PARTS, N_RANDOM_MAPS, randomised, randomised_twin
from explain.plots import SEExcitationPlot
from explain.verdict import VERSION as VERDICT_VERSION
from explain.verdict import Z_RANDOM, map_verdict, outcome_shares
from preprocess import normalize
from tools.choose_cam import deletion_figures, map_spearman, validation_order
from tools.se_profiles import main as profiles_main
from train.data import checkpoint_split, load_images

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "train.tar.gz"
ARCHS = list_models()
SE_ARCHS = [name for name in ARCHS if explain.has_se(create_model(name))]

# Sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps"): a map that explains the
# model must change when the weights are replaced by random ones. Their failing methods (guided
# backprop and friends, edge detectors in effect) keep a rank correlation above 0.9 under full
# randomisation; an unrelated pair of smooth maps at this resolution scatters around 0. 0.5 rejects a
# map that keeps most of its ranking without the learned weights, while allowing what any two
# upsampled maps of one image share (borders, the upsampling's smoothness).
SANITY_MAX_SPEARMAN = 0.5
# The faithfulness targets, measured by explain.verdict.map_verdict (the app's verdict) on DELETION_IMAGES validation
# images for each architecture's recommended setting (explain.recommended_cam of its config, what the app shows by
# default), chosen by `python -m tools.choose_cam` on other validation images (the next ones of this file's seeded
# shuffle), so the choice is not judged on the images it was made on: FAITHFUL_TARGET of the maps faithful (they
# beat random maps as smooth and the random-weights map), EXPLAINS_TARGET also beating the centre.
# Where the choice's own figures (config.json's cam.outcomes) fall short of a target, the test is an expected
# failure that prints the figures; either way the share must carry over from the choice's images to these within
# CARRY_OVER: three standard errors of the difference of two shares measured on 50 images each (at most
# 3 * sqrt(2 * 0.25 / 50)).
DELETION_IMAGES = 50
FAITHFUL_TARGET = 0.9
EXPLAINS_TARGET = 0.6
CARRY_OVER = 0.3


@functools.cache
def random_model(arch: str):
    return randomised(create_model(arch))


@functools.cache
def _trained(arch: str):
    folder = CHECKPOINTS / arch
    return load_pretrained(folder) if (folder / "config.json").is_file() else None


def trained(arch: str):
    model = _trained(arch)
    if model is None:
        pytest.skip(f"no checkpoint at checkpoints/{arch} yet")
    return model


def random_input(seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def per_class_maps(model, method="gradcam", layer=None) -> np.ndarray:
    """The maps of one image for each class as target (10 x H x W), in one batched call."""
    x = random_input(1).expand(model.num_classes, -1, -1, -1)
    return explain.cam_batch(model, x, targets=range(model.num_classes), method=method, layer=layer)[0]


needs_data = pytest.mark.skipif(not DATA.exists(), reason=f"no data at {DATA}")


@pytest.fixture(scope="module")
def validation():
    """DELETION_IMAGES images of the fixed validation split, chosen by a seeded shuffle (all classes)."""
    image_set = load_images(str(DATA), 32, cache_dir=ROOT / "data" / "cache", progress=False)
    # Every shipped checkpoint records the same split (10%, seed 0): train.data.checkpoint_split of any of them.
    _, val_idx = checkpoint_split(load_config(CHECKPOINTS / "resnet"), image_set)
    chosen = validation_order(val_idx)[:DELETION_IMAGES]  # tools.choose_cam chooses on the ones after
    return image_set.images[chosen], image_set.labels[chosen]


def normalised(model, images_uint8: torch.Tensor) -> torch.Tensor:
    return normalize(images_uint8, torch.tensor(model.config["mean"]), torch.tensor(model.config["std"]))


def hooks_left(model) -> list[str]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [f"{name}.{kind}" for name, module in model.named_modules() for kind in kinds if getattr(module, kind)]


# --- CAM: every architecture, method and layer ---------------------------------------------------------

@pytest.mark.parametrize("method", explain.METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_cam_is_a_map_in_unit_range(arch, method):
    model = random_model(arch)
    heatmap, probs = explain.cam_with_prediction(model, random_input(), method=method)
    assert heatmap.shape == (32, 32) and heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0 and heatmap.max() <= 1
    assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-5
    assert hooks_left(model) == []


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_choice_works(arch):
    model = random_model(arch)
    layers = explain.cam_layer_choices(model)
    assert layers and layers[-1] == model.default_cam_layer
    for layer in layers:
        heatmap = explain.cam(model, random_input(), layer=layer)
        assert heatmap.shape == (32, 32) and np.isfinite(heatmap).all(), layer


# Score-CAM weighs channels by the softmax of the masked inputs: with random weights those are near-uniform for every
# class, so its maps need not differ by target (with trained weights they do: test_app_http explains "cat").
@pytest.mark.parametrize("method", [m for m in explain.METHODS if m not in explain.GRADIENT_FREE + ("scorecam",)])
@pytest.mark.parametrize("arch", ARCHS)
def test_target_class_changes_the_map(arch, method):
    """One image, each of the ten classes as target: the maps must not all be the same (the shared check, on this
    file's randomised weights: PyTorch's default initialisation rather than the zoo's own)."""
    architecture_checks.check_target_class_changes_the_map(random_model(arch), method)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_maps_as_pytorch_grad_cam_used_directly(arch):
    """Guards what explain adds to the library (layer lookup, reshape, the graph cut at the layer)."""
    model = random_model(arch)
    layer = model.get_submodule(model.default_cam_layer)
    for method, engine in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus), ("layercam", LayerCAM),
                           ("eigencam", EigenCAM)):
        with engine(model, [layer], reshape_transform=model.cam_reshape) as library:
            expected = library(random_input(), [ClassifierOutputTarget(3)])[0]
        model.zero_grad(set_to_none=True)
        np.testing.assert_allclose(explain.cam(model, random_input(), target=3, method=method), expected,
                                   atol=1e-4, err_msg=method)


@pytest.mark.parametrize("arch", ["alexnet", "resnet", "mlpmixer"])
def test_fused_is_the_librarys_multilayer_aug_smooth_blurred(arch):
    """"layercam-fused-tta" = the library's LayerCAM at the layer and every deeper one with aug_smooth=True
    (which runs the six copies one by one), Gaussian-blurred and rescaled: only batching and the blur are ours."""
    model = random_model(arch)
    layers = explain.cam_layer_choices(model)
    with LayerCAM(model, [model.get_submodule(name) for name in layers[-2:]],
                  reshape_transform=model.cam_reshape) as library:
        expected = library(random_input(), [ClassifierOutputTarget(3)], aug_smooth=True)[0]
    model.zero_grad(set_to_none=True)
    expected = gaussian_filter(expected, FUSED_BLUR_SIGMA, mode="nearest")
    expected = (expected - expected.min()) / max(np.ptp(expected), 1e-7)
    heatmap, probs = explain.cam_with_prediction(model, random_input(), 3, "layercam-fused-tta", layers[-2])
    np.testing.assert_allclose(heatmap, expected, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(probs, torch.softmax(model(random_input()), 1)[0].numpy(), atol=1e-5)
    # No target: every copy explains the original image's predicted class, whatever a copy predicts.
    predicted = int(probs.argmax())
    np.testing.assert_allclose(explain.cam(model, random_input(), method="layercam-fused-tta", layer=layers[-2]),
                               explain.cam(model, random_input(), predicted, "layercam-fused-tta", layers[-2]),
                               atol=1e-5)
    assert hooks_left(model) == [] and all(p.grad is None for p in model.parameters())


def test_gradcam_plus_plus_fused_is_the_librarys_multilayer_map_blurred():
    model = random_model("googlenet")
    layers = explain.cam_layer_choices(model)
    with GradCAMPlusPlus(model, [model.get_submodule(name) for name in layers],
                         reshape_transform=model.cam_reshape) as library:
        expected = library(random_input(), [ClassifierOutputTarget(3)])[0]
    model.zero_grad(set_to_none=True)
    expected = gaussian_filter(expected, FUSED_BLUR_SIGMA, mode="nearest")
    expected = (expected - expected.min()) / max(np.ptp(expected), 1e-7)
    np.testing.assert_allclose(explain.cam(model, random_input(), 3, "gradcam++-fused", layers[0]), expected, atol=1e-4)
    assert hooks_left(model) == []


def test_fused_defaults_to_the_deepest_layer_alone():
    model = random_model("vgg")
    np.testing.assert_allclose(explain.cam(model, random_input(), 1, "layercam-fused-tta"),
                               explain.cam(model, random_input(), 1, "layercam-fused-tta", model.default_cam_layer))
    assert not np.allclose(explain.cam(model, random_input(), 1, "layercam-fused-tta"),
                           explain.cam(model, random_input(), 1, "layercam-fused-tta", model.cam_layers[0]), atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_recommended_setting_is_valid(arch):
    """The shipped checkpoint's recorded setting (plain Grad-CAM where none is shipped) runs on the architecture."""
    shipped = CHECKPOINTS / arch / "config.json"
    method, layer = explain.recommended_cam(load_config(shipped.parent) if shipped.is_file() else {})
    assert method in explain.METHODS
    assert layer is None or layer in explain.cam_layer_choices(random_model(arch))
    heatmap = explain.cam(random_model(arch), random_input(), method=method, layer=layer)
    assert heatmap.shape == (32, 32) and np.isfinite(heatmap).all()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++-fused", "layercam-fused-tta", "occlusion"])
def test_batch_equals_single_images(method):
    model = random_model("densenet")
    x = torch.cat([random_input(0), random_input(1)])
    maps, probs = explain.cam_batch(model, x, targets=[2, 5], method=method)
    for i, target in enumerate((2, 5)):
        np.testing.assert_allclose(maps[i], explain.cam(model, x[i:i + 1], target=target, method=method), atol=1e-4)
    np.testing.assert_allclose(probs[1], explain.cam_with_prediction(model, x[1:], method=method)[1], atol=1e-5)


class TopLeftOnly(torch.nn.Module):
    """Class 0's logit is 4 x the mean of the top-left 8x8 pixels; the rest are 0: a model that looks there only."""
    num_classes = 10

    def forward(self, x):
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, 0] = 4 * x[:, :, :8, :8].mean((1, 2, 3))
        return logits


def test_occlusion_heats_only_the_pixels_the_model_reads():
    heatmap = explain.occlusion.occlusion_batch(TopLeftOnly(), torch.ones(1, 3, 32, 32), [0])[0][0]
    # 14-pixel windows starting at 0, 6, 12, 18: only those starting at 0 or 6 reach the 8 x 8 region.
    assert heatmap[0, 0] == 1, "the corner, under the one window that blanks the whole region, falls most"
    assert (heatmap[20:, :] == 0).all() and (heatmap[:, 20:] == 0).all(), "windows that miss the region"
    assert heatmap[14, 14] > 0 and heatmap[2, 2] > heatmap[14, 14], "less heat where windows blank less of it"


def test_occlusion_windows_tile_the_image():
    masks = explain.occlusion.window_masks(32, 32)
    assert masks.shape == (16, 32, 32) and (masks.sum((1, 2)) == 196).all(), "14x14 windows"
    assert masks[1].nonzero()[:, 1].min() == 6, "6 px apart"
    assert masks.any(0).all(), "every pixel is blanked by some window"
    odd = explain.occlusion.window_masks(30, 30)
    assert odd.any(0).all() and odd[-1, -1, -1], "the last window ends at the edge"


def test_bad_arguments_name_the_valid_choices():
    model = random_model("resnet")
    with pytest.raises(ValueError, match="gradcam"):
        explain.cam(model, random_input(), method="magic")
    with pytest.raises(ValueError, match=model.default_cam_layer):
        explain.cam(model, random_input(), layer="stem")
    with pytest.raises(ValueError, match="outside"):
        explain.cam(model, random_input(), target=10)


# --- Hygiene: hooks, graphs, in-place activations -------------------------------------------------------

def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="RSS is read from /proc")
def test_200_calls_leave_memory_flat_and_no_hooks():
    model = random_model("densenet")
    x = random_input()
    for i in range(20):  # warm-up: allocator pools, lazy imports
        explain.cam(model, x, method=explain.METHODS[i % len(explain.METHODS)])
    before = _rss_bytes()
    for i in range(200):
        explain.cam(model, x, method=explain.METHODS[i % len(explain.METHODS)])
    growth = _rss_bytes() - before
    # A graph or activation kept per call would be at least ~1 MB here (200 MB over the loop).
    assert growth < 20 * 2**20, f"RSS grew {growth / 2**20:.1f} MB over 200 calls"
    assert hooks_left(model) == []
    assert all(p.grad is None for p in model.parameters()), "parameter gradients left behind"


def test_a_failing_call_leaves_no_hooks():
    model = random_model("alexnet")  # its dense head accepts only 32 x 32: 40 x 40 fails inside the forward
    with pytest.raises(RuntimeError):
        explain.cam(model, random_input(size=40))
    assert hooks_left(model) == []


@pytest.mark.parametrize("arch", ARCHS)
def test_no_in_place_activations(arch):
    """In-place ops overwrite what a hook or autograd saved: the known pytorch-grad-cam pitfall."""
    assert [n for n, m in random_model(arch).named_modules() if getattr(m, "inplace", False)] == []


def test_densenet_gives_gradients():
    """Without gradients at the hooked layer every class's Grad-CAM would be the same (empty) map."""
    model = random_model("densenet")
    for layer in explain.cam_layer_choices(model):
        maps = per_class_maps(model, layer=layer)
        assert np.isfinite(maps).all() and maps.max() > 0.5, layer
        assert any(not np.allclose(maps[0], other, atol=1e-3) for other in maps[1:]), layer


# --- Trained checkpoints: sanity and faithfulness -------------------------------------------------------

@needs_data
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("setting", ["gradcam", "recommended"])
def test_sanity_map_depends_on_learned_weights(arch, validation, setting):
    """For Grad-CAM at the default layer and for the setting the app shows (explain.recommended_cam of its config): the
    fused and smoothed methods must not just draw the input's edges either."""
    model = trained(arch)
    method, layer = ("gradcam", None) if setting == "gradcam" else explain.recommended_cam(model.config)
    random = randomised_twin(model)
    x = normalised(model, validation[0][:20])
    maps, probs = explain.cam_batch(model, x, method=method, layer=layer)
    random_maps, _ = explain.cam_batch(random, x, targets=probs.argmax(1), method=method, layer=layer)
    rho = map_spearman(maps, random_maps)  # a constant map (no positive evidence anywhere) counts as 0
    where = "the input" if method in explain.LAYER_FREE else layer or "the default layer"
    print(f"{arch} ({method} at {where}): Spearman(trained, random weights) = {rho:.3f}")
    assert rho < SANITY_MAX_SPEARMAN, f"{arch}: mean Spearman {rho:.3f} >= {SANITY_MAX_SPEARMAN}"


@needs_data
@pytest.mark.parametrize("arch", ARCHS)
def test_recommended_maps_meet_the_faithfulness_targets(arch, validation):
    """The verdict the app shows, over validation images: the recommended maps are faithful on FAITHFUL_TARGET
    of them and beat the centre prior as well on EXPLAINS_TARGET; and as often as on the images they were chosen on."""
    model = trained(arch)
    method, layer = explain.recommended_cam(model.config)  # what the app shows by default, too
    x = normalised(model, validation[0])
    shares = outcome_shares(deletion_figures(model, randomised_twin(model), x, method, layer)["verdicts"])
    where = "the input" if method in explain.LAYER_FREE else layer or model.default_cam_layer
    figures = (f"{arch} ({method} at {where}): faithful {shares['faithful']:.0%}, explains {shares['explains']:.0%}, "
               f"centre {shares['centre']:.0%}, not explained {shares['not explained']:.0%}, "
               f"inconclusive {shares['inconclusive']:.0%}")
    print(figures)
    recorded = model.config.get("cam", {})
    # Figures recorded under another verdict (an older config) measure another test: nothing to carry over.
    chosen_on = recorded.get("outcomes") if recorded.get("verdict") == VERDICT_VERSION else None
    if chosen_on:
        assert shares["faithful"] >= chosen_on["faithful"] - CARRY_OVER, (
            f"{figures}; on the choice's images {chosen_on}")
    if shares["faithful"] >= FAITHFUL_TARGET and shares["explains"] >= EXPLAINS_TARGET:
        return
    if chosen_on and (chosen_on["faithful"] < FAITHFUL_TARGET or chosen_on["explains"] < EXPLAINS_TARGET):
        pytest.xfail(f"short of the targets, as on the images it was chosen on: {figures}")
    pytest.fail(figures)


def _bench_faithfulness():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_faithfulness", ROOT / "bench" / "faithfulness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_the_verdict_passes_few_uninformed_maps_of_a_trained_model():
    """bench/faithfulness.py's three controls on validation images that nothing else reads (past the tests', the
    choice's and the benchmark's): random smooth maps, the same put through the per-image choice, and another random
    network's maps each pass on at most 5% of them, while the app's own maps pass more often than any of them."""
    bench = _bench_faithfulness()
    image_set = load_images(str(DATA), 32, cache_dir=ROOT / "data" / "cache", progress=False)
    row = bench.measure("basic_convnet", image_set, skip=300, images=24, method=None, checkpoints=CHECKPOINTS)
    summary = bench.summarise(row)
    print(summary)
    assert summary["method"] == "chosen"  # the control "put through the choice" needs the app's per-image choice
    for control in bench.CONTROLS:
        assert summary[control] <= 0.05, (control, summary)
        assert summary["faithful"] > summary[control] + 0.05, (control, summary)


def test_select_ranks_every_method_at_every_layer(tmp_path, tiny_folder, capsys):
    """tools.choose_cam on a random-weight checkpoint and the tests' own tiny data: one row per setting, best
    faithful share first, and a recommendation only among settings that pass the sanity check."""
    import tools.choose_cam as select

    assert select.SANITY_MAX_SPEARMAN == SANITY_MAX_SPEARMAN, "the tool must apply the tests' threshold"
    torch.manual_seed(0)
    folder = save_pretrained(create_model("bn_convnet", num_classes=3), tmp_path / "bn_convnet", {
        "class_names": ["blue", "green", "red"], "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3,
        "val_accuracy": 0.33, "epochs": 0, "train_seconds": 0.0, "hardware": "none (random weights)"})
    code = select.main(["--checkpoint", str(folder), "--data", str(tiny_folder), "--cache-dir", str(tmp_path / "c"),
                        "--skip", "2", "--images", "8", "--sanity-images", "2", "--methods", "gradcam,eigencam",
                        "--max-ms", "1e9"])  # a busy test machine's timings say nothing; the limit has its own test
    lines = capsys.readouterr().out.splitlines()
    layers = load_pretrained(folder).cam_layers
    rows = [line.split() for line in lines
            if line.split()[:1] in (["gradcam"], ["eigencam"]) and len(line.split()) == 13]
    expected = sorted((method, layer) for method in ("gradcam", "eigencam") for layer in layers)
    assert sorted((r[0], r[1]) for r in rows) == expected
    ranks = [(float(r[2].rstrip("%")), float(r[3].rstrip("%"))) for r in rows]
    assert ranks == sorted(ranks, reverse=True)
    for row in rows:  # the four outcomes' shares add up to all the images, faithful = explains + centre
        faithful, explains, centre, no, inconclusive = (float(v.rstrip("%")) for v in row[2:7])
        assert explains + centre + no + inconclusive == pytest.approx(100, abs=2)
        assert faithful == pytest.approx(explains + centre, abs=1)
    eligible = [r for r in rows if float(r[11]) < SANITY_MAX_SPEARMAN]
    recommended = [line for line in lines if line.startswith("recommended:")]
    assert code == (0 if eligible else 1) and len(recommended) == (1 if eligible else 0)
    if eligible:  # the best eligible, or plain Grad-CAM at the default layer when it trails by noise
        best, plain = f"({eligible[0][0]!r}, {eligible[0][1]!r})", f"('gradcam', {layers[-1]!r})"
        assert best in recommended[0] or (plain in recommended[0] and any("simpler setting is kept" in line
                                                                          for line in lines))
    # The choice goes into the checkpoint's config.json, where the app reads it; nothing when there is none.
    cam = load_pretrained(folder).config.get("cam")
    if eligible:
        assert f"({cam['method']!r}, {cam['layer']!r})" in recommended[0] and cam["images"] == 8
        assert cam["chosen_by"].startswith("python -m tools.choose_cam --checkpoint ")
        assert set(cam["outcomes"]) == {"explains", "centre", "not explained", "inconclusive", "faithful"}
    else:
        assert cam is None


def test_select_skips_settings_over_the_time_limit():
    from tools.choose_cam import measure

    model = random_model("resnet")
    setting = measure(model, randomised(create_model("resnet")), random_input(), "gradcam", model.default_cam_layer,
                      sanity_images=1, max_ms=0.0)
    assert not setting.measured and setting.ms_per_image > 0 and "time limit" in setting.row()


def test_select_keeps_plain_gradcam_unless_another_setting_leads_by_more_than_noise():
    from tools.choose_cam import Setting, choose

    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.6).astype(float)

    def setting(method, layer, flags):
        return Setting(method, layer, shares={"faithful": float(flags.mean())}, faithful_flags=flags)

    plain = setting("gradcam", "deep", base)
    close = setting("layercam", "shallow", np.where(rng.random(200) < 0.02, 1.0, base))  # a lead inside one SE
    far = setting("layercam", "shallow", np.where(rng.random(200) < 0.5, 1.0, base))
    assert choose([close, plain], default_layer="deep") is plain
    assert choose([far, plain], default_layer="deep") is far
    assert choose([close], default_layer="deep") is close          # plain Grad-CAM not eligible
    assert choose([plain, close], default_layer="deep") is plain     # already the best


def test_select_says_what_is_wrong_with_a_missing_checkpoint(tmp_path, tiny_folder, capsys):
    import tools.choose_cam as select

    assert select.main(["--checkpoint", str(tmp_path / "nothing"), "--data", str(tiny_folder)]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--methods", "gradcam,nosuchcam"], ["--images", "0"], ["--skip", "-1"]])
def test_select_rejects_bad_options(tmp_path, bad, capsys):
    import tools.choose_cam as select

    with pytest.raises(SystemExit):
        select.main(["--checkpoint", str(tmp_path), "--data", str(tmp_path), *bad])
    assert "error:" in capsys.readouterr().err


def test_recommended_cam_reads_the_cam_field_and_falls_back_to_gradcam():
    chosen = {"method": "gradcam++-fused", "layer": "blocks.5", "chosen_by": "python -m tools.choose_cam ..."}
    assert explain.recommended_cam({"cam": chosen}) == ("gradcam++-fused", "blocks.5")
    assert explain.recommended_cam({"cam": {"method": "occlusion", "layer": None}}) == ("occlusion", None)
    for config in ({}, {"cam": None}, {"cam": {"method": "no-such-cam", "layer": "blocks.5"}}):
        assert explain.recommended_cam(config) == ("gradcam", None)


def test_faithfulness_of_one_image():
    """The centre prior as the map: its curve is the centre's. Seeded, and the random-weights map joins the same
    pass without changing the other curves."""
    model = random_model("resnet")
    centre = centre_prior(32, 32).numpy()
    result = explain.faithfulness(model, random_input(), centre)
    assert set(result) == {"map", "centre", "random", "target", "probability", "blurred_probability"}
    points = len(CURVE_PARTS) * len(VERDICT_FRACTIONS)
    assert result["map"].shape == (points,) and result["random"].shape == (N_RANDOM_MAPS, points)
    np.testing.assert_allclose(result["map"], result["centre"], atol=1e-6)
    again = explain.faithfulness(model, random_input(), centre)
    for key in ("map", "centre", "random"):
        np.testing.assert_array_equal(again[key], result[key])
    with_twin = explain.faithfulness(model, random_input(), centre, random_weights_heatmap=centre)
    np.testing.assert_allclose(with_twin["random_weights"], with_twin["centre"], atol=1e-6)
    for key in ("map", "centre", "random"):
        np.testing.assert_allclose(with_twin[key], result[key], atol=1e-5)


def test_random_maps_are_as_smooth_as_the_map():
    """Phase randomisation keeps each map's Fourier amplitudes (so its smoothness) and draws new phases."""
    maps = torch.as_tensor(np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
    maps[1] = torch.as_tensor(gaussian_filter(maps[1].numpy(), 3))  # one speckled map, one smooth
    copies = phase_randomised(maps, 3, seed=0)
    assert copies.shape == (2, 3, 32, 32) and copies.dtype == torch.float32
    amplitude = torch.fft.fft2(maps - maps.mean((1, 2), keepdim=True)).abs()[:, None].expand_as(copies)
    torch.testing.assert_close(torch.fft.fft2(copies).abs(), amplitude, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(copies[:, 0], maps - maps.mean((1, 2), keepdim=True), atol=1e-2)
    torch.testing.assert_close(phase_randomised(maps, 3, seed=0), copies)
    roughness = [float((c.diff(dim=-1) ** 2).mean() / c.var()) for c in (copies[0, 0], copies[1, 0])]
    assert roughness[1] < roughness[0] / 5, "the smooth map's random copies are smooth too"


def test_randomised_twin_is_seeded_and_leaves_the_callers_random_state_alone():
    model = create_model("senet")  # the zoo's own initialisation, which randomised() replaces
    model.config = {"arch": "senet", "class_names": [str(i) for i in range(10)], "arch_args": {}}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    twin, again = randomised_twin(model), randomised_twin(model)
    assert torch.equal(torch.rand(3), expected_next), "the caller's random stream must not move"
    assert type(twin) is type(model) and not twin.training
    for (name, a), b in zip(twin.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"{name}: not seeded"
    assert any(not torch.equal(a, b) for a, b in zip(twin.state_dict().values(), model.state_dict().values()))


def test_the_verdicts_curves_are_measured_by_hand():
    """Deletion replaces the hottest pixels by the blurred image, insertion pastes them into it; the choice's curve
    blanks them to 0. Each checked against the probabilities computed directly."""
    model = random_model("resnet")
    x = torch.cat([random_input(seed) for seed in range(2)])
    maps = torch.as_tensor(np.random.default_rng(0).random((2, 1, 32, 32), dtype=np.float32))
    curves = verdict_curves(model, x, maps, [1, 4], fractions=(0.25,))
    soft = blurred(x)
    mask = maps[:, 0] >= maps[:, 0].flatten(1).quantile(0.75, dim=1)[:, None, None]

    def p(images):
        with torch.no_grad():
            return torch.softmax(model(images), 1)[[0, 1], [1, 4]].numpy()

    before, floor = p(x), p(soft)
    deleted, inserted = p(torch.where(mask[:, None], soft, x)), p(torch.where(mask[:, None], x, soft))
    np.testing.assert_allclose(curves["deletion"][:, 0, 0], before - deleted, atol=1e-4)
    np.testing.assert_allclose(curves["insertion"][:, 0, 0], inserted - floor, atol=1e-4)
    np.testing.assert_allclose(curves["blurred_probability"], floor, atol=1e-5)
    scores = choice_scores(model, x, maps.numpy(), [1, 4], fractions=(0.25,))
    blanked = p(x.masked_fill(mask[:, None], 0.0))
    np.testing.assert_allclose(scores[:, 0], before - blanked, atol=1e-4)


def test_the_verdict_reads_no_curve_the_choice_reads():
    """The held-out design: the verdict's infill is a blur, the choice's the mean; so a map that blanks exactly what
    the blur leaves unchanged (a flat image) moves the choice's curve and not the verdict's."""
    model = TopLeftOnly()
    x = torch.ones(1, 3, 32, 32)  # flat: its blur is itself
    heat = torch.zeros(1, 1, 32, 32)
    heat[..., :8, :8] = 1
    assert choice_scores(model, x, heat.numpy(), [0], CHOICE_FRACTIONS)[0, 0] != 0
    curves = verdict_curves(model, x, heat, [0])
    assert np.abs(curves["deletion"]).max() < 1e-6 and np.abs(curves["insertion"]).max() < 1e-6


def _synthetic_curves(rng, own: np.ndarray, points: int = 4) -> dict:
    """Curves for ``map_verdict`` whose random maps and random-weights map are drawn like ``own``'s score:
    a per-image level and spread, then each map's curve around its score."""
    level, spread = rng.uniform(0.1, 0.4), rng.uniform(0.02, 0.1)

    def draw(count: int) -> np.ndarray:
        return level + spread * rng.standard_normal((count, 1)) + 0.01 * rng.standard_normal((count, points))

    return {"map": level + spread * own + 0.01 * rng.standard_normal(points), "centre": draw(1)[0],
            "random": draw(N_RANDOM_MAPS), "random_weights": draw(1)[0]}


def test_the_verdict_passes_at_most_5_percent_of_uninformed_maps_even_after_a_best_of_ten_choice():
    """The verdict as a test: a map drawn like its random references passes on few images, and so does the best of
    ten such maps picked by a choice score that tracks the verdict's own score closely (correlation 0.8, as the
    choice's curve and the verdict's share the pixels they read)."""
    rng = np.random.default_rng(0)
    trials = 2000
    plain = [map_verdict(_synthetic_curves(rng, rng.standard_normal(1))).faithful for _ in range(trials)]
    chosen = []
    for _ in range(trials):
        scores = rng.standard_normal(10)
        choice = 0.8 * scores + 0.6 * rng.standard_normal(10)
        chosen.append(map_verdict(_synthetic_curves(rng, scores[[choice.argmax()]])).faithful)
    assert np.mean(plain) <= 0.02, np.mean(plain)
    assert np.mean(chosen) <= 0.05, np.mean(chosen)
    # ... while a map that stands out from its references by more than Z_RANDOM deviations passes
    strong = [map_verdict(_synthetic_curves(rng, np.array([Z_RANDOM + 3.0]))).faithful for _ in range(200)]
    assert np.mean(strong) >= 0.9


def test_evidence_checks_its_maps_and_keeps_each_curve_in_place():
    model = random_model("resnet")
    x = torch.cat([random_input(seed) for seed in range(3)])
    maps = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    curves = explain.evidence(model, x, maps, seed=1, random_weights_heatmaps=maps[::-1].copy())
    points = len(CURVE_PARTS) * len(VERDICT_FRACTIONS)
    assert curves["map"].shape == (3, points) and curves["random"].shape == (3, N_RANDOM_MAPS, points)
    direct = verdict_curves(model, x, torch.as_tensor(np.stack([maps, maps[::-1]], 1)), curves["target"])
    for column, key in enumerate(("map", "random_weights")):
        joined = np.concatenate([direct[part][:, column] for part in CURVE_PARTS], 1)
        np.testing.assert_allclose(curves[key], joined, atol=1e-5)
    with pytest.raises(ValueError, match="heatmaps must be"):
        explain.evidence(model, x, maps[:2])


@pytest.mark.parametrize("method", ["input-x-gradient", "integrated-gradients", "occlusion-fine", "rise"])
def test_input_attributions_heat_only_the_pixels_the_model_reads(method):
    model = TopLeftOnly()
    model.eval = lambda: model
    heatmap = explain.methods.get(method).function(model, torch.ones(1, 3, 32, 32), [0], None)[0][0]
    assert heatmap[:8, :8].mean() > 3 * heatmap[16:, 16:].mean(), method


def test_chosen_map_is_the_candidate_with_the_best_choice_curve():
    model = trained("vgg") if (CHECKPOINTS / "vgg" / "config.json").is_file() else random_model("vgg")
    x = torch.cat([random_input(seed) for seed in range(2)])
    maps, _, names = explain.choice.chosen_batch(model, x, [3, 5], return_choice=True)
    candidates = explain.choice.candidates(model, x, [3, 5])
    assert candidates.shape == (2, len(explain.CHOSEN_FROM), 32, 32)
    ig, gc = (explain.cam_batch(model, x, [3, 5], m)[0] for m in ("integrated-gradients", "gradcam"))
    product = candidates[:, explain.CHOSEN_FROM.index("integrated-gradients x gradcam")]
    np.testing.assert_allclose(product * (ig * gc).max((1, 2), keepdims=True), ig * gc, atol=1e-5)
    scores = choice_scores(model, x, candidates, [3, 5])
    np.testing.assert_array_equal(explain.choose(model, x, candidates, [3, 5]), scores.argmax(1))
    for i, name in enumerate(names):
        assert name == explain.CHOSEN_FROM[int(scores[i].argmax())]
        np.testing.assert_allclose(maps[i], candidates[i, int(scores[i].argmax())], atol=1e-6)
        np.testing.assert_allclose(maps[i], explain.cam(model, x[i:i + 1], [3, 5][i], "chosen"), atol=1e-5)


# --- Squeeze-and-excitation -----------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_se_excitations_one_vector_per_block(arch):
    model = random_model(arch)
    excitations = explain.se_excitations(model, random_input())
    blocks = [(name, module.fc2.out_channels) for name, module in model.named_modules()
              if isinstance(module, SqueezeExcite)]
    assert [(name, len(values)) for name, values in excitations] == blocks
    assert (arch in SE_ARCHS) == bool(blocks)
    for name, values in excitations:
        assert ((values > 0) & (values < 1)).all(), name


def test_se_profiles_round_trip(tmp_path):
    model = random_model("senet")
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 10
    profiles = explain.compute_se_profiles(model, images, labels, [0.5] * 3, [0.25] * 3)
    explain.save_se_profiles(profiles, tmp_path)
    loaded = explain.load_se_profiles(tmp_path)
    assert loaded["blocks"] == profiles["blocks"] == [name for name, _ in explain.se_excitations(model, random_input())]
    for block in loaded["blocks"]:
        channels = dict(explain.se_excitations(model, random_input()))[block].shape[0]
        assert loaded["class_mean"][block].shape == (10, channels)
        assert loaded["mean"][block].shape == (channels,)
        np.testing.assert_allclose(loaded["class_mean"][block].mean(0), loaded["mean"][block], atol=1e-5)
    assert loaded["counts"].tolist() == [4] * 10
    assert explain.load_se_profiles(tmp_path / "elsewhere") is None
    assert explain.compute_se_profiles(random_model("resnet"), images, labels, [0.5] * 3, [0.25] * 3)["blocks"] == []


@needs_data
def test_profiles_command_writes_beside_the_checkpoint(tmp_path):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    config = {"class_names": names, "image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    save_pretrained(random_model("senet"), tmp_path / "senet", config)
    save_pretrained(random_model("resnet"), tmp_path / "resnet", config)
    cache = ["--cache-dir", str(ROOT / "data" / "cache")]
    assert profiles_main(["--checkpoint", str(tmp_path / "senet"), "--data", str(DATA), *cache]) == 0
    profiles = explain.load_se_profiles(tmp_path / "senet")
    assert profiles["class_names"] == names and profiles["counts"].tolist() == [500] * 10  # the validation split
    assert profiles_main(["--checkpoint", str(tmp_path / "resnet"), "--data", str(DATA), *cache]) == 1
    assert explain.load_se_profiles(tmp_path / "resnet") is None


@pytest.mark.parametrize("arch", SE_ARCHS)
def test_shipped_se_profiles_load(arch):
    model = trained(arch)
    profiles = explain.load_se_profiles(CHECKPOINTS / arch)
    assert profiles is not None, (f"run: python -m tools.se_profiles --checkpoint checkpoints/{arch} "
                                  f"--data ../shared/data/cifar10-jpeg/train.tar.gz")
    excitations = explain.se_excitations(model, random_input())
    assert profiles["blocks"] == [name for name, _ in excitations]
    for name, values in excitations:
        assert profiles["class_mean"][name].shape == (len(model.config["class_names"]), len(values))


def test_se_plots_and_weighted_map():
    model = random_model("efficientnet")
    x = random_input()
    excitations = explain.se_excitations(model, x)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    profiles = explain.compute_se_profiles(model, images, torch.arange(20) % 10, [0.5] * 3, [0.25] * 3)
    names = [str(i) for i in range(10)]
    for picture in (explain.plot_se_excitations(excitations, profiles, 3, names),
                    explain.plot_se_excitations(excitations, None, 3, names),
                    explain.plot_class_specificity(profiles)):
        assert picture.mode == "RGB" and min(picture.size) > 100
    assert [b for b, _ in explain.class_specificity(profiles)] == profiles["blocks"]
    weighted = explain.se_weighted_map(model, x)
    assert weighted.shape == (32, 32) and weighted.min() == 0 and weighted.max() == pytest.approx(1)
    both = explain.se_attention(model, x)  # the app's one forward pass gives the same two
    assert [b for b, _ in both[0]] == [b for b, _ in excitations] and np.array_equal(both[1], weighted)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(both[0], excitations))
    assert explain.se_attention(random_model("resnet"), x) == ([], None)
    with pytest.raises(ValueError, match="squeeze-and-excitation"):
        explain.se_weighted_map(random_model("resnet"), x)


def test_se_plot_redraws_each_image_from_a_clean_background():
    """The app keeps one SEExcitationPlot per checkpoint and draws each image's lines on its cached
    background: a plot drawn after another image's must equal a fresh plot (nothing of the first is left)."""
    model = random_model("senet")
    first, second = (explain.se_excitations(model, random_input(seed)) for seed in (1, 2))
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    profiles = explain.compute_se_profiles(model, images, torch.arange(20) % 10, [0.5] * 3, [0.25] * 3)
    names = [str(i) for i in range(10)]
    layout = [(block, len(values)) for block, values in first]
    plotter = SEExcitationPlot(layout, profiles, names)
    drawn_first = np.asarray(plotter.draw(first, 3))
    drawn_second = np.asarray(plotter.draw(second, 5))
    assert np.array_equal(drawn_second, np.asarray(SEExcitationPlot(layout, profiles, names).draw(second, 5)))
    assert not np.array_equal(drawn_first, drawn_second)
    assert np.array_equal(drawn_first, np.asarray(plotter.draw(first, 3)))
    with pytest.raises(ValueError, match="do not match"):
        plotter.draw(first[:-1], 3)
    with pytest.raises(ValueError, match="outside"):
        plotter.draw(first, 10)


# --- Overlay --------------------------------------------------------------------------------------------

def test_overlay_on_the_original_upload():
    upload = Image.new("RGB", (300, 200), (10, 200, 30))  # landscape: the model saw its centre 200 x 200
    heatmap = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    shown = explain.overlay(upload, heatmap, opacity=0.6, colormap="viridis")
    assert shown.size == upload.size and shown.mode == "RGB"
    pixels = np.asarray(shown)
    assert (pixels[:, :50] == (10, 200, 30)).all() and (pixels[:, 250:] == (10, 200, 30)).all()
    assert not (pixels[:, 50:250] == (10, 200, 30)).all(axis=-1).any()
    assert np.array_equal(np.asarray(explain.overlay(upload, heatmap, opacity=0.0)), np.asarray(upload))
    with pytest.raises(ValueError, match="colormap"):
        explain.overlay(upload, heatmap, colormap="no-such-map")
