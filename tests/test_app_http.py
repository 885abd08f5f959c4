"""The running app over HTTP: `python app.py` in a subprocess, driven with gradio_client as a user's script would.

The server (tests/servers.py: one per layout for the session) reads a temporary checkpoint folder: the trained
checkpoints (linked), random-weight ones for ResNet and SENet where those are not trained yet (so /explain and
/compare always have something to run, SE plots included), and, while some architecture is untrained, a corrupt
checkpoint in its place.
"""
from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import CHECKPOINTS, CIFAR10
from PIL import Image
from servers import shared_app, trained
from upload_corpus import write_corpus

import explain
from architectures import create_model, list_models, load_config

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINED = [name for name in list_models() if trained(name)]


@pytest.fixture(scope="module")
def layout_and_server(request, tmp_path_factory):
    """The checkpoint folder the server reads and what each architecture in it is; the session's server for it."""
    kinds = {name: "trained" for name in TRAINED}
    for name in ("resnet", "senet"):
        kinds.setdefault(name, "random")
    untrained = [name for name in list_models() if name not in kinds]
    if len(untrained) > 1:  # keep at least one plainly missing; break the first of the rest
        kinds[untrained[0]] = "corrupt"
    for name in list_models():
        kinds.setdefault(name, "missing")
    folder, running = shared_app(request, tmp_path_factory, kinds)
    return (folder, kinds), running


@pytest.fixture(scope="module")
def layout(layout_and_server):
    return layout_and_server[0]


@pytest.fixture(scope="module")
def server(layout_and_server):
    return layout_and_server[1]


@pytest.fixture(scope="module")
def client(server):
    return Client(server["url"], verbose=False, download_files=str(Path(server["log"].name).parent / "downloads"))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A real example photo when there is one, else a made-up picture."""
    examples = sorted((REPO_ROOT / "examples").glob("*.jpg"))
    if examples:
        return str(examples[0])
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.radial_gradient("L").convert("RGB").resize((300, 200)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("uploads"), include_oversize=True)


def _alive(server) -> None:
    assert server["process"].poll() is None, "the server died"


def _servable(layout) -> list[str]:
    return [name for name, kind in layout[1].items() if kind in ("trained", "random")]


def test_api_lists_the_endpoints(client):
    info = client.view_api(print_info=False, return_format="dict")
    endpoints = info["named_endpoints"]
    for name in ("/predict", "/explain", "/compare"):
        assert name in endpoints, sorted(endpoints)
    explain_params = {p["parameter_name"]: p for p in endpoints["/explain"]["parameters"]}
    for name in ("method", "layer", "target", "opacity"):
        assert explain_params[name]["parameter_has_default"], name


@pytest.mark.parametrize("name", list_models())
def test_predict_every_trained_architecture(client, layout, photo, name):
    if layout[1][name] != "trained":
        pytest.skip(f"{name} has no trained checkpoint yet")
    result = client.predict(handle_file(photo), name, api_name="/predict")
    confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
    assert result["label"] in CIFAR10 and set(confidences) <= set(CIFAR10) and len(confidences) >= 5
    assert result["label"] == max(confidences, key=confidences.get)
    assert 0 < confidences[result["label"]] <= 1


def test_predict_with_random_weights_where_untrained(client, layout, photo):
    for name in _servable(layout):
        result = client.predict(handle_file(photo), name, api_name="/predict")
        assert result["label"] in CIFAR10


def test_missing_and_corrupt_checkpoints_are_clear_errors(client, server, layout, photo):
    kinds = layout[1]
    missing = [name for name, kind in kinds.items() if kind == "missing"]
    corrupt = [name for name, kind in kinds.items() if kind == "corrupt"]
    if not missing and not corrupt:
        pytest.skip("every architecture is trained")
    for name in missing:
        with pytest.raises(Exception, match="no checkpoint yet"):
            client.predict(handle_file(photo), name, api_name="/predict")
    for name in corrupt:
        with pytest.raises(Exception, match="cannot be used"):
            client.predict(handle_file(photo), name, api_name="/predict")
    _alive(server)
    assert client.predict(handle_file(photo), _servable(layout)[0], api_name="/predict")["label"] in CIFAR10


@pytest.mark.parametrize("name", ["../checkpoints/resnet", "nope", "", "resnet/../senet", "/etc/passwd"])
def test_unknown_architecture_is_refused_with_the_list(client, server, photo, name):
    with pytest.raises(Exception, match="resnet"):  # the message lists the known architectures
        client.predict(handle_file(photo), name, api_name="/predict")
    _alive(server)


def test_explain_with_just_image_and_architecture(client, layout, photo):
    for name in ("senet", "resnet"):
        overlay, se_plot, faithfulness, note, se_map = client.predict(handle_file(photo), name, api_name="/explain")
        with Image.open(photo) as original, Image.open(overlay) as picture:
            assert picture.size == original.size  # the overlay keeps the upload's resolution
        if name == "senet":
            assert se_plot is not None and Path(se_plot).is_file()
            with Image.open(photo) as original, Image.open(se_map) as picture:
                assert picture.size == original.size
        else:
            assert se_plot is None and se_map is None and "no SE blocks" in note
        assert len(faithfulness["data"]) == 4 and "probability" in note


def test_explain_defaults_to_each_architectures_most_faithful_method(client, layout, photo):
    from explain.verdict import HEADLINES

    for name in ("resnet", "googlenet", "densenet"):
        if name not in _servable(layout):
            continue
        method, layer = explain.recommended_cam(load_config(CHECKPOINTS / name))
        layer = layer or create_model(name).cam_layers[-1]
        _, _, _, note, _ = client.predict(handle_file(photo), name, api_name="/explain")
        verdict, what = note.split("\n\n")[:2]  # the note begins with the verdict, then says what the map is
        assert verdict.startswith(tuple(HEADLINES.values())), note
        assert what.startswith(f"{method} at "), note
        if method not in explain.LAYER_FREE:
            assert f"`{layer}`" in what.split(",")[0], note


@pytest.mark.parametrize("method", explain.METHODS)
def test_explain_every_method_layer_and_target(client, photo, method):
    overlay, _, _, note, _ = client.predict(handle_file(photo), "resnet", method=method, layer=1, target="cat",
                                            opacity=0.8, api_name="/explain")
    where = "(no layer)" if method in explain.LAYER_FREE else "(1 of"  # occlusion blanks the input, reads no layer
    assert Path(overlay).is_file() and method in note and where in note and "**cat**" in note


def test_compare(client, layout, photo):
    table, gallery, summary = client.predict(handle_file(photo), api_name="/compare")
    assert table["headers"][:2] == ["architecture", "top-1"]
    rows = table["data"]
    assert len(rows) == len(list_models())
    answered = [row for row in rows if row[1] in CIFAR10]
    assert len(answered) == len(_servable(layout)) == len(gallery)
    assert "Majority vote" in summary
    for item in gallery:
        assert Path(item["image"]).is_file()


def test_bad_uploads_get_clear_errors_and_the_server_keeps_serving(client, server, layout, corpus):
    name = _servable(layout)[0]
    for upload in corpus:
        start = time.monotonic()
        if upload.expect == "ok":
            result = client.predict(handle_file(str(upload.path)), name, api_name="/predict")
            assert result["label"] in CIFAR10, upload.name
        else:
            with pytest.raises(Exception) as info:
                client.predict(handle_file(str(upload.path)), name, api_name="/predict")
            message = str(info.value)
            if upload.name != "oversize.jpg":  # that one is refused at upload time by max_file_size
                assert "Cannot use this upload" in message, (upload.name, message)
        assert time.monotonic() - start < 20, f"{upload.name} took too long"
        _alive(server)
    explained = client.predict(handle_file(str(corpus[-1].path.with_name("large.jpg"))), name, api_name="/explain")
    assert Path(explained[0]).is_file()


def test_the_server_exposes_no_other_files(server, layout):
    url = server["url"]
    for path in ("/etc/passwd", str(REPO_ROOT / "app.py"), str(layout[0] / "resnet" / "model.safetensors")):
        response = httpx.get(f"{url}gradio_api/file={path}", timeout=10)
        assert response.status_code in (403, 404), (path, response.status_code)
    _alive(server)


def test_a_path_outside_the_upload_folder_is_refused(server, layout, tmp_path, photo):
    """An API call naming a server-side file instead of uploading one must not get it classified."""
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(Path(photo).read_bytes())
    url = server["url"]
    for path in (str(outside), "/etc/passwd"):
        payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, _servable(layout)[0]]}
        event = httpx.post(f"{url}gradio_api/call/predict", json=payload, timeout=10).json()["event_id"]
        stream = httpx.get(f"{url}gradio_api/call/predict/{event}", timeout=30).text
        assert "event: error" in stream and "confidences" not in stream, stream
    _alive(server)
