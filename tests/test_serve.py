"""The inference layer (serve/): safe decoding, preprocessing, the checkpoint store, predictions, OOD, compare.

Most tests use small checkpoints with random weights written into a temporary folder, so they run before
any model is trained; the tests of the shipped checkpoints skip those not trained yet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from upload_corpus import png_bomb, write_corpus

import serve
from architectures import create_model, list_models, save_pretrained
from preprocess import normalize, served_probs, to_square_rgb
from serve.ood import calibrate, ood_check

REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO_ROOT / "checkpoints"
EXAMPLES = REPO_ROOT / "examples"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CONFIG = {"class_names": CIFAR10, "image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
          "val_accuracy": 0.5, "epochs": 1, "train_seconds": 1.0, "hardware": "test"}
TRAINED = [name for name in list_models() if (CHECKPOINTS / name / "config.json").is_file()
           and (CHECKPOINTS / name / "model.safetensors").is_file()]


def write_checkpoint(folder: Path, name: str, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    model = create_model(name)
    return save_pretrained(model, folder / name, {**CONFIG, "display_name": type(model).display_name, **overrides})


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checkpoints")
    write_checkpoint(folder, "resnet", val_accuracy=0.7)
    write_checkpoint(folder, "senet", val_accuracy=0.8)
    write_checkpoint(folder, "mlpmixer", val_accuracy=0.6)
    return folder


@pytest.fixture()
def store(checkpoint_dir) -> serve.ModelStore:
    return serve.ModelStore(checkpoint_dir, repo="", device="cpu", ood_thresholds={})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return {u.name: u for u in write_corpus(tmp_path_factory.mktemp("uploads"), include_oversize=True)}


# --- decoding ------------------------------------------------------------------------------------------
def test_corpus_covers_the_issue(corpus):
    for name in ["not_an_image.txt", "empty.jpg", "truncated.jpg", "random_bytes.png", "page.jpg", "bomb.png",
                 "sixteen_bit.png", "cmyk.jpg", "rgba.png", "palette.png", "animated.gif", "exif_rotated.jpg",
                 "float.tiff", "photo.webp", "one_pixel.png", "large.jpg", "thin.png", "oversize.jpg"]:
        assert name in corpus


@pytest.mark.parametrize("case", [
    "not_an_image.txt", "empty.jpg", "truncated.jpg", "random_bytes.png", "page.jpg", "bomb.png", "bomb_100mp.png",
    "drawing.svg", "postscript.eps", "oversize.jpg"])
def test_bad_uploads_raise_one_clear_error(corpus, case):
    upload = corpus[case]
    assert upload.expect == "error"
    with pytest.raises(serve.ImageDecodeError) as info:
        serve.load_image(upload.path)
    message = str(info.value)
    assert message and "Traceback" not in message and len(message) < 300
    if upload.path.stat().st_size <= serve.MAX_UPLOAD_BYTES:  # the same verdict from bytes as from a path
        with pytest.raises(serve.ImageDecodeError):
            serve.load_image(upload.path.read_bytes())


def test_error_messages_say_what_is_wrong(corpus):
    def message(name):
        with pytest.raises(serve.ImageDecodeError) as info:
            serve.load_image(corpus[name].path)
        return str(info.value)

    assert "empty" in message("empty.jpg")
    assert "truncated" in message("truncated.jpg")
    assert "not an image" in message("page.jpg")
    assert "bomb" in message("bomb.png") and "bomb" in message("bomb_100mp.png")
    assert "limit" in message("oversize.jpg")


@pytest.mark.parametrize("case", [
    "sixteen_bit.png", "cmyk.jpg", "rgba.png", "palette.png", "animated.gif", "exif_rotated.jpg", "float.tiff",
    "float_hdr.tiff", "photo.webp", "one_pixel.png", "thin.png", "grey.bmp", "large.jpg"])
def test_real_images_decode_to_rgb_and_a_model_input(corpus, case):
    upload = corpus[case]
    assert upload.expect == "ok"
    image = serve.load_image(upload.path)
    assert image.mode == "RGB" and max(image.size) <= serve.MAX_SIDE and min(image.size) >= 1
    x = serve.to_tensor(image, CONFIG)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_modes_convert_to_the_right_colours(corpus):
    def pixel(name, xy):
        return serve.load_image(corpus[name].path).getpixel(xy)

    cyan = pixel("cmyk.jpg", (20, 20))
    assert cyan[0] < 30 and cyan[1] > 225 and cyan[2] > 225  # CMYK (255, 0, 0, 0) is cyan
    assert pixel("rgba.png", (5, 20)) == (255, 255, 255)     # transparent: composited over white
    assert pixel("rgba.png", (35, 20)) == (255, 0, 0)        # opaque red stays red
    assert pixel("animated.gif", (20, 20)) == (255, 0, 0)    # the first frame, not the last
    sixteen = np.asarray(serve.load_image(corpus["sixteen_bit.png"].path))[..., 0]
    assert sixteen[0, 0] == 0 and sixteen[0, -1] == 255 and 100 < sixteen[0, 32] < 160  # scaled, not clipped
    for name in ("float.tiff", "float_hdr.tiff"):
        ramp = np.asarray(serve.load_image(corpus[name].path))[..., 0]
        assert ramp[0, 0] == 0 and ramp[0, -1] == 255 and len(np.unique(ramp[0])) > 32


def test_exif_orientation_is_applied(corpus):
    image = serve.load_image(corpus["exif_rotated.jpg"].path)
    assert image.size == (30, 60)  # stored 60 x 30, orientation 6 turns it upright
    top, bottom = image.getpixel((15, 5)), image.getpixel((15, 55))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_large_photo_is_reduced_keeping_its_shape(corpus):
    image = serve.load_image(corpus["large.jpg"].path)
    assert image.size == (1024, 768)


def test_pixel_limit_is_configurable(tmp_path):
    bomb = png_bomb(4000, 4000)
    with pytest.raises(serve.ImageDecodeError, match="megapixels"):
        serve.load_image(bomb, max_pixels=10_000_000)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(serve.ImageDecodeError, match="could not be found"):
        serve.load_image(tmp_path / "nope.png")


# --- preprocessing -------------------------------------------------------------------------------------
def test_to_tensor_is_the_training_pipeline():
    from train import augment, data  # training prepares its images with the very same functions

    assert data.to_square_rgb is to_square_rgb and augment.normalize is normalize
    assert augment.served_probs is served_probs
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    expected = normalize(torch.from_numpy(to_square_rgb(image, 32).copy()).permute(2, 0, 1)[None],
                         torch.tensor(CONFIG["mean"]), torch.tensor(CONFIG["std"]))
    assert torch.equal(serve.to_tensor(image, CONFIG), expected)
    assert np.array_equal(serve.model_view(image, CONFIG), to_square_rgb(image, 32))


def test_to_tensor_uses_the_checkpoint_statistics_and_size():
    mean = [0.2, 0.4, 0.6]
    image = Image.new("RGB", (50, 50), tuple(round(m * 255) for m in mean))
    x = serve.to_tensor(image, {**CONFIG, "mean": mean, "std": [0.5, 0.5, 0.5], "image_size": 16})
    assert x.shape == (1, 3, 16, 16)
    assert x.abs().max() < 0.01  # a pixel equal to the mean normalises to zero


# --- the store -----------------------------------------------------------------------------------------
def test_store_loads_lazily_and_caches(store):
    assert store.status()["resnet"] == "ready"
    first = store.get("resnet")
    assert store.get("resnet") is first
    assert store.status()["resnet"] == "loaded"
    assert not first.model.training and first.config["arch"] == "resnet"
    assert len(first.weights_sha256) == 64
    assert store.available() == ["resnet", "senet", "mlpmixer"]


def test_store_reloads_a_replaced_checkpoint(tmp_path):
    write_checkpoint(tmp_path, "resnet", seed=0)
    store = serve.ModelStore(tmp_path, repo="", device="cpu", ood_thresholds={})
    first = store.get("resnet")
    write_checkpoint(tmp_path, "resnet", seed=1, val_accuracy=0.9)
    second = store.get("resnet")
    assert second is not first and second.config["val_accuracy"] == 0.9
    assert second.weights_sha256 != first.weights_sha256


@pytest.mark.parametrize("name", ["nope", "", "../resnet", "resnet/../resnet", "/etc/passwd", "resnet ", None, 3,
                                  "RESNET", "..", "checkpoints/resnet"])
def test_unknown_and_path_like_names_are_refused(store, name):
    with pytest.raises(ValueError, match="unknown architecture"):
        store.get(name)
    with pytest.raises(ValueError, match="unknown architecture"):
        serve.predict(store, name, Image.new("RGB", (32, 32)))


def test_path_like_name_never_reaches_a_folder_outside(tmp_path):
    write_checkpoint(tmp_path, "resnet")               # a valid checkpoint at tmp/resnet ...
    store = serve.ModelStore(tmp_path / "inside", repo="", device="cpu", ood_thresholds={})
    with pytest.raises(ValueError):                    # ... is not reachable as ../resnet
        store.get("../resnet")
    assert store.available() == []


def test_missing_and_corrupt_checkpoints_fail_alone(tmp_path):
    write_checkpoint(tmp_path, "resnet")
    (tmp_path / "vgg").mkdir()
    (tmp_path / "vgg" / "config.json").write_text('{"arch": "vgg"')           # cut short
    (tmp_path / "vgg" / "model.safetensors").write_bytes(b"junk")
    write_checkpoint(tmp_path, "senet")
    (tmp_path / "senet" / "model.safetensors").write_bytes(b"\x00" * 64)      # weights destroyed
    store = serve.ModelStore(tmp_path, repo="", device="cpu", ood_thresholds={})
    with pytest.raises(serve.ModelUnavailable, match="no checkpoint yet"):
        store.get("alexnet")
    with pytest.raises(serve.ModelUnavailable, match="vgg.*cannot be used"):
        store.get("vgg")
    with pytest.raises(serve.ModelUnavailable, match="senet.*cannot be used"):
        store.get("senet")
    with pytest.raises(serve.ModelUnavailable, match="senet"):                # remembered, still clear
        store.get("senet")
    assert str(tmp_path) not in str(store.status()["senet"])                  # no server paths in messages
    prediction = serve.predict(store, "resnet", Image.new("RGB", (40, 40), (10, 200, 30)))
    assert prediction.arch == "resnet"
    write_checkpoint(tmp_path, "senet")                                       # repaired: served again
    assert store.get("senet").name == "senet"


def test_device_choice(monkeypatch):
    assert serve.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("DEVICE", "cpu")
    assert serve.pick_device() == torch.device("cpu")
    monkeypatch.delenv("DEVICE")
    assert serve.pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="DEVICE"):
        serve.pick_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            serve.pick_device("cuda")


def test_environment_configures_the_store(monkeypatch, checkpoint_dir):
    monkeypatch.setenv("CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.setenv("CHECKPOINT_REPO", "someone/zoo")
    monkeypatch.setenv("CHECKPOINT_REVISION", "abc123")
    monkeypatch.setenv("DEVICE", "cpu")
    store = serve.ModelStore()
    assert store.checkpoint_dir == checkpoint_dir and store.repo == "someone/zoo" and store.revision == "abc123"
    assert store.device == torch.device("cpu")


def test_hub_is_used_only_when_local_files_are_absent_and_pinned(monkeypatch, tmp_path, checkpoint_dir):
    import huggingface_hub

    calls = []
    remote = tmp_path / "remote"
    write_checkpoint(remote, "alexnet")

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(remote)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    store = serve.ModelStore(checkpoint_dir, repo="someone/zoo", revision="0123abcd", device="cpu",
                             ood_thresholds={})
    assert store.get("resnet").folder == checkpoint_dir / "resnet"   # local: no download
    assert calls == []
    loaded = store.get("alexnet")                                     # absent locally: from the Hub
    assert loaded.folder == remote / "alexnet"
    assert calls[0][:2] == ("someone/zoo", "0123abcd")
    assert all(pattern.startswith("alexnet/") for pattern in calls[0][2])
    per_arch = serve.ModelStore(tmp_path / "empty", repo="someone/cifar10-{arch}", revision="v1", device="cpu",
                                ood_thresholds={})
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, revision=None, allow_patterns=None, **kw:
                        calls.append((repo_id, revision)) or str(remote / "alexnet"))
    assert per_arch.get("alexnet").config["arch"] == "alexnet"
    assert calls[-1] == ("someone/cifar10-alexnet", "v1")


def test_hub_failure_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    store = serve.ModelStore(tmp_path, repo="someone/zoo", device="cpu", ood_thresholds={})
    with pytest.raises(serve.ModelUnavailable, match="Hugging Face Hub"):
        store.get("resnet")


# --- predictions ---------------------------------------------------------------------------------------
def test_predict_top_k(store):
    image = Image.new("RGB", (64, 48), (120, 80, 40))
    prediction = serve.predict(store, "senet", image, k=5)
    assert len(prediction.top) == 5
    probabilities = [p for _, p in prediction.top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert prediction.label == prediction.top[0][0] == CIFAR10[prediction.index]
    assert abs(sum(prediction.label_dict().values()) - 1) < 1e-5
    assert set(prediction.label_dict()) == set(CIFAR10)
    assert prediction.latency_ms > 0 and prediction.x.shape == (1, 3, 32, 32)
    assert prediction.ood["ood"] is None  # no thresholds in this store
    again = serve.predict(store, "senet", image, k=5)
    assert np.allclose(prediction.probs, again.probs)  # eval mode: deterministic


def test_predictions_average_the_tta_views(store):
    """Test-time augmentation, as the validation figure val_accuracy_tta is measured."""
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))  # not its own mirror
    prediction = serve.predict(store, "resnet", Image.fromarray(ramp))
    model = store.get("resnet").model
    first_conv = next(p for p in model.parameters() if p.dim() == 4)
    assert first_conv.is_contiguous(memory_format=torch.channels_last)  # serve.store.for_serving
    with torch.no_grad():
        plain = model(prediction.x).softmax(-1)[0].numpy()
        mirrored = model(prediction.x.flip(3)).softmax(-1)[0].numpy()
        served = served_probs(model, prediction.x)[0].numpy()
    assert not np.allclose(plain, mirrored, atol=1e-4)
    assert not np.allclose(prediction.probs, plain, atol=1e-4)
    np.testing.assert_allclose(prediction.probs, served, atol=1e-6)
    with store.get("resnet").lock:
        assert int(served_probs(model, prediction.x)[0].argmax()) == prediction.index


def test_ood_check_follows_the_threshold():
    sha = "a" * 64
    confident, unsure = np.array([0.9, 0.05, 0.05]), np.array([0.4, 0.35, 0.25])
    entry = {"score": "max_prob", "threshold": 0.6, "weights_sha256": sha, "keep_fraction": 0.95}
    assert ood_check(confident, entry, sha)["ood"] is False
    flagged = ood_check(unsure, entry, sha)
    assert flagged["ood"] is True and "does not look like any of the classes" in flagged["message"]
    entropy_entry = {**entry, "score": "entropy", "threshold": 0.5}
    assert ood_check(confident, entropy_entry, sha)["ood"] is False
    assert ood_check(unsure, entropy_entry, sha)["ood"] is True
    assert ood_check(unsure, entry, "b" * 64)["ood"] is None                   # other weights: no verdict
    assert ood_check(unsure, None, sha)["ood"] is None


def test_calibration_keeps_95_percent_of_validation(store):
    loaded = store.get("resnet")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (200, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 10, (200,), generator=generator)
    entry = calibrate(loaded.model, loaded.config, images, labels)
    assert entry["score"] in ("max_prob", "entropy") and entry["val_images"] == 200
    assert abs(entry["candidates"][entry["score"]]["val_flagged"] - 0.05) <= 0.01
    with torch.no_grad():  # what the app serves: the TTA views averaged
        probs = served_probs(loaded.model, normalize(images, torch.tensor(CONFIG["mean"]),
                                                     torch.tensor(CONFIG["std"]))).numpy()
    entry["weights_sha256"] = loaded.weights_sha256
    flagged = [ood_check(p, entry, loaded.weights_sha256)["ood"] for p in probs]
    assert 0.03 <= np.mean(flagged) <= 0.07


def test_store_passes_thresholds_to_predictions(checkpoint_dir):
    probe = serve.ModelStore(checkpoint_dir, repo="", device="cpu", ood_thresholds={})
    sha = probe.get("resnet").weights_sha256
    image = Image.new("RGB", (32, 32), (50, 50, 50))
    always = {"resnet": {"score": "max_prob", "threshold": 1.01, "weights_sha256": sha}}
    store = serve.ModelStore(checkpoint_dir, repo="", device="cpu", ood_thresholds=always)
    assert serve.predict(store, "resnet", image).ood["ood"] is True
    never = {"resnet": {"score": "max_prob", "threshold": 0.0, "weights_sha256": sha}}
    store = serve.ModelStore(checkpoint_dir, repo="", device="cpu", ood_thresholds=never)
    assert serve.predict(store, "resnet", image).ood["ood"] is False


def test_compare_all(store):
    image = Image.new("RGB", (48, 48), (30, 90, 200))
    seen = []
    rows, majority = serve.compare_all(store, image, progress=lambda i, n, name: seen.append(name))
    assert [row.arch for row in rows] == list_models() == seen
    answered = [row for row in rows if row.error is None]
    assert [row.arch for row in answered] == ["resnet", "senet", "mlpmixer"]
    assert all("no checkpoint" in row.error for row in rows if row.error is not None)
    labels = [row.label for row in answered]
    assert majority in labels
    for row in answered:
        assert row.agrees_with_majority == (row.label == majority)
        others = [label for other, label in zip(answered, labels) if other is not row]
        assert row.agreement == pytest.approx(sum(label == row.label for label in others) / len(others))
        assert 0 < row.confidence <= 1 and row.latency_ms > 0


def test_compare_all_tie_goes_to_the_most_confident(monkeypatch, store):
    import importlib

    predict_module = importlib.import_module("serve.predict")  # the module; serve.predict is the function

    fake = {"resnet": ("cat", 0.9), "senet": ("dog", 0.6), "mlpmixer": ("frog", 0.5)}

    def fake_predict(store, name, image, k=5):
        if name not in fake:
            raise serve.ModelUnavailable(f"{name}: no checkpoint yet", serve.Unavailable.NO_CHECKPOINT)
        label, confidence = fake[name]
        probs = np.full(10, (1 - confidence) / 9)
        probs[CIFAR10.index(label)] = confidence
        return serve.Prediction(name, name, CIFAR10, probs, [(label, confidence)], {}, 1.0, torch.zeros(1))

    monkeypatch.setattr(predict_module, "predict", fake_predict)
    rows, majority = serve.compare_all(store, Image.new("RGB", (8, 8)))
    assert majority == "cat"
    assert [row.agreement for row in rows if row.label] == [0.0, 0.0, 0.0]


# --- the shipped checkpoints (skip those not trained yet) ------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_shipped_checkpoint_serves_the_examples(name):
    if name not in TRAINED:
        pytest.skip(f"{name} has no checkpoint yet")
    store = serve.ModelStore(CHECKPOINTS, repo="", device="cpu")
    examples = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    assert len(examples) >= 10
    for path in examples:
        prediction = serve.predict(store, name, serve.load_image(path))
        assert prediction.label in CIFAR10 and 0 < prediction.confidence <= 1
    entry = store.ood_entry(name)  # its config's: a threshold measured on other weights is stale
    assert entry is not None and entry["weights_sha256"] == store.get(name).weights_sha256, f"{name}: stale OOD"
    assert prediction.ood["ood"] is not None  # the check is on for the shipped weights


def test_the_first_example_with_the_default_architecture_leads_with_a_plain_verdict():
    """What a visitor sees first: the first example, the app's default architecture, its recommended map, and a note
    whose first sentence says in plain words whether to trust the map, naming the architecture and the class.
    (Which outcome it is depends on the image: the verdict passes uninformed maps on at most 5% of images, and the
    app's own maps far less often than the old, lenient one did; docs/explanations.md.)"""
    from explain.verdict import HEADLINES

    store = serve.ModelStore(CHECKPOINTS, repo="", device="cpu")
    configs = store.configs()
    if not configs:
        pytest.skip("no checkpoint yet")
    default, first = serve.best_architecture(configs), serve.wording.example_paths(EXAMPLES)[0]
    service = serve.ZooService(store)
    explanation = service.explain(first, default)
    _, loaded, prediction = service.served_prediction(first, default)
    lead = explanation.note.split("\n\n")[0]
    assert lead.startswith(tuple(HEADLINES.values())), f"{Path(first).name} with {default}: {lead}"
    assert prediction.display_name in lead and f"**{prediction.label}**" in lead, lead


def test_examples_are_small_and_attributed():
    examples = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    assert len(examples) >= 10
    attribution = (EXAMPLES / "ATTRIBUTION.md").read_text()
    for path in examples:
        assert path.stat().st_size < 200_000, path
        assert path.name in attribution, f"{path.name} has no source and licence in ATTRIBUTION.md"
        serve.load_image(path)
    covered = {c for c in CIFAR10 if any(p.name.startswith(f"val_{c}_") for p in examples)}
    assert covered == set(CIFAR10)


def test_the_store_reads_each_checkpoints_own_threshold_unless_overridden(checkpoint_dir, tmp_path):
    entry = {"score": "max_prob", "threshold": 0.5, "keep_fraction": 0.95, "val_images": 10, "weights_sha256": "x"}
    write_checkpoint(tmp_path, "resnet", ood=entry)
    assert serve.ModelStore(tmp_path, repo="", device="cpu").ood_entry("resnet") == entry
    assert serve.ModelStore(tmp_path, repo="", device="cpu", ood_thresholds={}).ood_entry("resnet") is None
    assert serve.ModelStore(tmp_path, repo="", device="cpu").ood_entry("senet") is None  # no checkpoint


def test_hub_failure_is_not_retried_on_every_request(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    store = serve.ModelStore(tmp_path, repo="someone/zoo", device="cpu", ood_thresholds={})
    for _ in range(3):
        with pytest.raises(serve.ModelUnavailable, match="network is unreachable"):
            store.get("resnet")
    assert len(calls) == 1


# --- the service behind the app's events ----------------------------------------------------------------
def test_a_classify_click_computes_the_served_prediction_once(monkeypatch, store, tmp_path):
    """A click runs /predict, then /describe, then /explain on one upload: one six-view forward pass in all,
    and none for a later change of explanation setting. A new upload or architecture computes its own."""
    import importlib

    predict_module = importlib.import_module("serve.predict")
    served_passes = []
    original = predict_module.served_probs

    def counting(model, x, *args):
        served_passes.append(len(x))
        return original(model, x, *args)

    monkeypatch.setattr(predict_module, "served_probs", counting)
    service = serve.ZooService(store)
    upload = tmp_path / "upload.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(upload)
    model = store.get("senet").model
    forward_calls = []
    handle = model.register_forward_hook(lambda module, inputs, output: forward_calls.append(len(inputs[0])))
    try:
        labels = service.predict(str(upload), "senet")
        note, preview = service.describe(str(upload), "senet")
        explanation = service.explain(str(upload), "senet")
    finally:
        handle.remove()
    assert served_passes == [1]
    assert forward_calls.count(6) == 1  # the six test-time augmentation views, once
    top = max(labels, key=labels.get)
    assert f"**{top}**" in note and preview.size == (256, 256)  # 32 x 32 blown up 8x by pictures.bounded
    assert explanation.overlay.size == (384, 256) and explanation.se_map.size == (384, 256)  # at least 256 px
    assert explanation.se_plot is not None
    assert "class **" + top + "**" in explanation.note  # the map explains the label the top-5 shows
    service.explain(str(upload), "senet", method="gradcam", layer=1, target="dog", opacity=0.3)
    assert served_passes == [1]
    service.predict(str(upload), "resnet")
    other = tmp_path / "other.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(other)
    service.describe(str(other), "senet")
    assert served_passes == [1, 1, 1]


def test_the_store_owns_one_random_weights_twin_per_loaded_checkpoint(store):
    loaded = store.get("resnet")
    twin = store.random_twin(loaded)
    assert store.random_twin(loaded) is twin and twin is not loaded.model
    assert type(twin) is type(loaded.model) and not hasattr(loaded, "random_twin")
    learned, random = next(loaded.model.parameters()), next(twin.parameters())
    assert learned.shape == random.shape and not torch.equal(learned, random)


def test_the_store_keeps_few_twins_on_the_cpu_and_rebuilds_the_same_one(store):
    """A twin per architecture would double the weights held; an evicted one comes back identical (seeded)."""
    first = store.random_twin(store.get("resnet"))
    for name in ("senet", "mlpmixer"):
        store.random_twin(store.get(name))
    assert len(store._twins) == store.twins_kept < 3 and "resnet" not in store._twins
    rebuilt = store.random_twin(store.get("resnet"))
    assert rebuilt is not first
    for a, b in zip(first.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)


def test_service_errors_are_for_the_user(store, tmp_path):
    service = serve.ZooService(store)
    with pytest.raises(serve.RequestError, match="unknown architecture") as info:
        service.predict(str(EXAMPLES / "cat_chelsea.jpg"), "../resnet")
    assert info.value.title == "Unknown architecture"
    with pytest.raises(serve.RequestError, match="no checkpoint yet"):
        service.predict(str(EXAMPLES / "cat_chelsea.jpg"), "vgg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(serve.RequestError, match="Cannot use this upload") as info:
        service.predict(str(broken), "resnet")
    assert info.value.title == "Not a usable image"
    with pytest.raises(serve.RequestError, match="opacity"):
        service.explain(str(EXAMPLES / "cat_chelsea.jpg"), "resnet", opacity=2)
    with pytest.raises(serve.RequestError, match="unknown target class"):
        service.explain(str(EXAMPLES / "cat_chelsea.jpg"), "resnet", target="unicorn")


def _curves(own, centre, random_weights, random, fractions=4):
    """Flat deletion curves: each ordering drops the probability by the same amount at every fraction."""
    def flat(value):
        return np.full(fractions, value, dtype=np.float64)

    return {"map": flat(own), "centre": flat(centre), "random_weights": flat(random_weights),
            "random": np.stack([flat(value) for value in random])}


def test_the_verdict_has_four_outcomes_each_with_a_true_sentence():
    from explain.verdict import MEANINGS, Outcome, map_verdict

    explains = map_verdict(_curves(0.6, 0.3, 0.1, [0.2, 0.22, 0.18, 0.2]))
    assert explains.outcome is Outcome.EXPLAINS and explains.faithful and explains.beats_centre
    assert (explains.sentence().startswith("✅ **Explains this prediction**")
            and MEANINGS[Outcome.EXPLAINS] in explains.sentence())
    # A centred object: the map is faithful, and the centre costs as much (within the noise margin).
    centre = map_verdict(_curves(0.5, 0.49, 0.1, [0.2, 0.22, 0.18, 0.2]))
    assert centre.outcome is Outcome.CENTRE and centre.faithful and not centre.beats_centre
    assert "the object is in the middle" in centre.sentence() and "did look where it marks" in centre.sentence()
    # No better than the random-weights map: not explained, whatever the centre does.
    twin = map_verdict(_curves(0.3, 0.1, 0.3, [0.1, 0.12, 0.08, 0.1]))
    assert twin.outcome is Outcome.NOT_EXPLAINED and "does not beat the random-weights map" in twin.sentence()
    # Beating random maps needs 1.25 times their score, not just more.
    assert map_verdict(_curves(0.24, 0.1, 0.0, [0.2, 0.2, 0.19, 0.21])).outcome is Outcome.NOT_EXPLAINED
    # ... and more than their noise: widely scattered random maps make a lead of that size a coin toss.
    noisy = map_verdict(_curves(0.3, 0.0, 0.0, [0.0, 0.4, 0.02, 0.38]))
    assert noisy.margin > 0.1 and noisy.outcome is Outcome.NOT_EXPLAINED
    # The margin is where a single map drawn like the random ones could land (a prediction interval), not the
    # standard error of their mean: however many random maps were drawn, a lead a random map could reach fails.
    scattered = [0.1, 0.3] * 4
    within_reach = map_verdict(_curves(0.6, 0.0, 0.0, scattered))
    assert within_reach.margin > 0.4 and within_reach.outcome is Outcome.NOT_EXPLAINED
    assert map_verdict(_curves(0.9, 0.0, 0.0, scattered)).faithful
    # A lead over one other map must exceed one standard deviation of single random maps' scores.
    close_twin = map_verdict(_curves(0.9, 0.0, 0.85, scattered))
    assert close_twin.pair_margin > 0.05 and close_twin.outcome is Outcome.NOT_EXPLAINED
    assert "does not beat the random-weights map" in close_twin.sentence()
    # Nothing moves the prediction: say so rather than judge.
    still = map_verdict(_curves(0.03, 0.01, 0.0, [0.01, 0.0, 0.02, 0.01]))
    assert still.outcome is Outcome.INCONCLUSIVE and "barely moves" in still.sentence()
    with pytest.raises(ValueError, match="three random maps"):
        map_verdict({"map": np.zeros(4), "centre": np.zeros(4), "random": np.zeros((2, 4))})


def test_the_explanation_note_begins_with_its_verdict_and_the_bars_carry_it(store, tmp_path):
    service = serve.ZooService(store)
    upload = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(upload)
    from explain.verdict import HEADLINES, SHORT

    result = service.explain(str(upload), "resnet", method="gradcam")
    outcome = next(outcome for outcome, headline in HEADLINES.items() if result.note.startswith(headline))
    assert result.faithfulness["bar"].tolist() == [f"this map: {SHORT[outcome]}"] + ["baseline"] * 3
    assert set(result.faithfulness["bar"]) <= set(serve.wording.BAR_COLOURS)
    assert min(result.overlay.size) == 256  # a CIFAR-sized upload is drawn large enough to see


def test_the_map_comes_first_and_its_verdict_follows(store, tmp_path):
    """explain_steps: the map with a "checking" note and no bars, then the same map with its verdict and bars;
    explain() answers the last step."""
    from explain.verdict import HEADLINES

    service = serve.ZooService(store)
    upload = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(upload)
    first, last = service.explain_steps(str(upload), "senet", method="gradcam")
    assert first.note.startswith(serve.wording.CHECKING) and first.faithfulness.empty
    assert list(first.faithfulness.columns) == list(last.faithfulness.columns)
    assert last.note.startswith(tuple(HEADLINES.values())) and len(last.faithfulness) == 4
    for picture in ("overlay", "se_plot", "se_map"):  # nothing drawn in the first step changes in the second
        assert np.array_equal(np.asarray(getattr(first, picture)), np.asarray(getattr(last, picture))), picture
    assert last.note.endswith(first.note.split("\n\n", 2)[2])  # the same description of the map and SE line
    again = service.explain(str(upload), "senet", method="gradcam")
    assert again.note == last.note and again.faithfulness.equals(last.faithfulness)
    assert list(service.explain_steps(None, "senet")) == [] and service.explain(None, "senet") is None


@pytest.mark.parametrize("interval_s, count", [(0.0, 7), (1e9, 3)])
def test_compare_shows_every_map_before_any_verdict(store, monkeypatch, interval_s, count):
    """The predictions, then the maps (one step each when steps may come at any time; together when they may
    come only once a phase is done), then the verdicts."""
    monkeypatch.setattr(serve.compare, "COMPARE_STEP_S", interval_s)
    service = serve.ZooService(store)
    steps = list(service.compare_steps(str(EXAMPLES / "cat_chelsea.jpg")))
    answered = 3  # the store's checkpoints
    assert len(steps) == count
    sizes = [len(gallery) for _, gallery, _ in steps]
    assert sizes[0] == 0 and sizes == sorted(sizes) and sizes[-1] == answered
    for step, (frame, gallery, summary) in enumerate(steps):
        checking = sum(caption.endswith("(checking)") for _, caption in gallery)
        assert checking == len(gallery) or len(gallery) == answered, step  # no verdict before every map is shown
        assert summary == steps[-1][2] and len(frame) == len(steps[-1][0])
    every_map = sizes.index(answered)
    assert all(caption.endswith("(checking)") for _, caption in steps[every_map][1])
    for (picture, _), (final, _) in zip(steps[every_map][1], steps[-1][1]):  # a verdict leaves its map as it was
        assert np.array_equal(np.asarray(picture), np.asarray(final))
    assert not any(caption.endswith("(checking)") for _, caption in steps[-1][1])
    assert not steps[-1][0]["map"].str.startswith("checking").any()


def _counting_maps(monkeypatch) -> list:
    """Record every map ZooService computes (the model's and the random-weights twin's), as (model class, method)."""
    computed, original = [], serve.ZooService._map

    def counted(model, x, target, method, layer):
        computed.append((type(model).__name__, method))
        return original(model, x, target, method, layer)

    monkeypatch.setattr(serve.ZooService, "_map", staticmethod(counted))
    return computed


def test_a_new_opacity_redraws_the_map_without_computing_it_again(store, tmp_path, monkeypatch):
    service = serve.ZooService(store)
    upload = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(upload)
    computed = _counting_maps(monkeypatch)
    first = list(service.explain_steps(str(upload), "senet", method="gradcam", opacity=0.5))
    assert len(first) == 2 and len(computed) == 2  # the map, then its twin's for the check
    again = list(service.explain_steps(str(upload), "senet", method="gradcam", opacity=0.9))
    assert len(again) == 1 and len(computed) == 2  # the verdict at once: nothing recomputed
    assert again[0].note == first[-1].note and again[0].faithfulness.equals(first[-1].faithfulness)
    assert not np.array_equal(np.asarray(again[0].overlay), np.asarray(first[-1].overlay))  # drawn at the new opacity
    # Another class, method, layer or corruption is another map.
    predicted = max(service.predict(str(upload), "senet").items(), key=lambda item: item[1])[0]
    service.explain(str(upload), "senet", method="gradcam", target="dog" if predicted != "dog" else "cat")
    service.explain(str(upload), "senet", method="gradcam", layer=1)
    service.explain(str(upload), "senet", method="gradcam", corruption="fog", severity=2)
    service.explain(str(upload), "senet", method="occlusion")
    assert len(computed) == 2 + 4 * 2


def test_compare_and_classify_share_their_maps(store, monkeypatch):
    service = serve.ZooService(store)
    image = str(EXAMPLES / "cat_chelsea.jpg")
    computed = _counting_maps(monkeypatch)
    explained = service.explain(image, "senet")  # the recommended map, as Compare draws it
    assert len(computed) == 2
    table, gallery, _ = service.compare(image)
    assert len(computed) == 2 + 2 * 2  # the other two checkpoints' maps and twins; SENet's is reused
    caption = next(caption for _, caption in gallery if serve.zoo.display_name("senet") in caption)
    assert caption.split()[0] == explained.note.split()[0]  # the same verdict's icon in its caption
    assert len(list(service.explain_steps(image, "resnet"))) == 1  # and Classify reuses Compare's


def test_compare_marks_every_map_and_says_when_the_image_fits_no_class(store):
    from explain.verdict import ICONS, SHORT

    service = serve.ZooService(store)
    frame, gallery, summary = service.compare(str(EXAMPLES / "cat_chelsea.jpg"))
    assert len(gallery) == 3
    for _, caption in gallery:
        assert caption.startswith(tuple(ICONS.values())) and caption.endswith(tuple(f"({s})" for s in SHORT.values()))
    assert summary.startswith("Majority vote")  # this store has no thresholds: nothing is flagged
    calibrated = serve.ModelStore(store.checkpoint_dir, repo="", device="cpu", ood_thresholds={
        name: {"score": "max_prob", "threshold": 1.0, "weights_sha256": store.get(name).weights_sha256}
        for name in ("resnet", "senet", "mlpmixer")})
    _, _, summary = serve.ZooService(calibrated).compare(str(EXAMPLES / "cat_chelsea.jpg"))
    assert summary.startswith("⚠️ **This image looks like none of the ten classes** to 3 of 3 architectures")


def test_recently_used_keeps_the_latest_and_drops_the_least_recently_used():
    from serve.recent import RecentlyUsed

    kept = RecentlyUsed(2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # a use: "b" is now the least recent
    kept.put("c", 3)
    assert "b" not in kept and len(kept) == 2 and kept.get("b") is None
    assert kept.get("a") == 1 and kept.get("c") == 3


def test_explaining_one_architecture_does_not_wait_for_another(store, tmp_path):
    """Each model has its own lock, the one explain/ takes (explain.common.model_lock): while ResNet's is held,
    SENet is explained; a ResNet explanation waits until the lock is free, then finishes."""
    import threading

    from explain.common import model_lock

    service = serve.ZooService(store)
    upload = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(upload)
    resnet = store.get("resnet")
    assert resnet.lock is model_lock(resnet.model) and resnet.lock is not store.get("senet").lock
    results = {}

    def explain(name):
        results[name] = service.explain(str(upload), name, method="gradcam")

    with resnet.lock:
        other = threading.Thread(target=explain, args=("senet",))
        other.start()
        other.join(timeout=120)
        assert not other.is_alive() and results["senet"].note, "SENet waited for ResNet's lock"
        same = threading.Thread(target=explain, args=("resnet",))
        same.start()
        same.join(timeout=2)
        assert same.is_alive() and "resnet" not in results  # ResNet's own explanation waits for its lock
    same.join(timeout=120)
    assert not same.is_alive() and results["resnet"].note
