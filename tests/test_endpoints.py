"""Every upload of the corpus (tests/upload_corpus.py) through every endpoint that takes an image, over plain HTTP.

An upload that /predict accepts must be safe everywhere: each endpoint answers it, and every picture in the
answer is small enough to encode and to send (serve/pictures.py); an upload /predict refuses gets the app's
own message from every endpoint, never Gradio's bare ``null``. The server must keep serving throughout.

``ENDPOINTS`` is the whole table: an endpoint added to the app, or a new setting of one, is one more line.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from io import BytesIO

import httpx
import pytest
from conftest import REPO_ROOT, random_checkpoint, running_app
from PIL import Image
from upload_corpus import write_corpus

import explain
from serve import pictures

sys.path.insert(0, str(REPO_ROOT / "bench"))
from http_latency import Caller  # noqa: E402  (bench/ is not a package)

ARCHS = ("resnet", "senet")  # random weights: fast, and senet has SE blocks, so SE plots and maps are drawn
REFUSED = "Cannot use this upload"  # the start of the app's message for an unusable upload (serve.uploads)


@dataclass(frozen=True)
class EndpointCase:
    id: str
    api: str                # api_name in app.py
    arch: str | None        # the architecture input; None for endpoints without one (/compare)
    settings: tuple = ()    # the inputs after the architecture, in order; endpoint defaults where left out


ENDPOINTS = [
    EndpointCase("predict", "predict", "resnet"),
    EndpointCase("describe", "describe", "senet", ("none", 3, "none", 2, "untargeted")),  # undocumented: no defaults
    EndpointCase("explain-defaults", "explain", "senet"),
    *[EndpointCase(f"explain-{method}", "explain", "resnet", (method,)) for method in explain.METHODS],
    EndpointCase("compare", "compare", None),
    EndpointCase("inside", "inside", "resnet"),
    EndpointCase("predict-corrupted", "predict", "resnet", ("gaussian_noise", 5)),
    EndpointCase("compare-corrupted", "compare", None, ("fog", 3)),
    # The attack's own path (the upload's view attacked, the smallest budget searched, the file written): the
    # attacked /predict and /explain then read the same cached 32 x 32 file, whatever the upload was.
    EndpointCase("attack", "attack", "senet", ("none", 3, "pgd", 2)),
    EndpointCase("compare-attacked", "compare", None, ("jpeg_compression", 2, "fgsm", 1)),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("uploads"), include_oversize=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoint_checkpoints")
    for name in ARCHS:
        random_checkpoint(folder, name)
    with running_app(folder, tmp_path_factory.mktemp("endpoint_server")) as running:
        yield running


@pytest.fixture(scope="module")
def caller(server):
    return Caller(server["url"], timeout=120)


def _picture_urls(value) -> list[str]:
    """The URL of every file in an answer (images, gallery items), however deeply nested."""
    if isinstance(value, dict):
        own = [value["url"]] if value.get("path") and value.get("url") else []
        return own + [url for item in value.values() for url in _picture_urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _picture_urls(item)]
    return []


def test_the_table_covers_every_endpoint_that_takes_an_image(caller):
    """A documented endpoint whose first input is an image and that no case calls fails here: add its line.

    (Undocumented ones, such as /describe or /compare_on_change, are not listed by /info; the table names
    /describe itself, and the others run the same handlers as a documented one.)"""
    info = httpx.get(f"{caller.url}gradio_api/info", timeout=30).json()["named_endpoints"]
    image_apis = {api[1:] for api, endpoint in info.items()
                  if endpoint["parameters"] and "image" in json.dumps(endpoint["parameters"][0]).lower()}
    assert {"predict", "explain", "compare"} <= image_apis, sorted(image_apis)
    assert image_apis <= {case.api for case in ENDPOINTS}, image_apis - {case.api for case in ENDPOINTS}


@pytest.mark.parametrize("case", ENDPOINTS, ids=lambda case: case.id)
def test_every_upload_on_every_endpoint(server, caller, corpus, case):
    problems = []
    for upload in corpus:
        kind, body = caller.call(case.api, upload.name, upload.path.read_bytes(), case.arch, case.settings)
        if upload.name == "oversize.jpg":  # Gradio refuses it at upload (max_file_size), before the app sees it
            ok = kind == "http" and "413" in body
        elif upload.expect == "error":
            ok = kind == "error" and REFUSED in body
        else:
            ok = kind == "complete"
            for url in _picture_urls(json.loads(body)) if ok else []:
                with Image.open(BytesIO(httpx.get(url, timeout=30).content)) as picture:
                    if max(picture.size) > pictures.LONGEST:
                        problems.append(f"{upload.name}: a {picture.size} picture in the answer")
        if not ok:
            problems.append(f"{upload.name} ({upload.expect}): {kind} {body[:200]}")
        assert server["process"].poll() is None, f"the server died on {upload.name}"
    assert not problems, "\n".join(problems)


# --- the sizing rule itself, without a server -----------------------------------------------------------------
@pytest.mark.parametrize("size, drawn", [((32, 32), (256, 256)), ((60, 40), (384, 256)), ((1024, 768), (1024, 768)),
                                         ((1024, 1), (2048, 2)), ((3, 1024), (6, 2048)), ((1, 1), (256, 256)),
                                         ((5000, 300), (2048, 123))])
def test_display_size_raises_the_shorter_side_only_while_the_longer_one_allows(size, drawn):
    assert pictures.display_size(*size) == drawn


def test_a_thin_strip_is_framed_and_said_to_be():
    strip = pictures.fit(Image.new("RGB", (1024, 1), (255, 0, 0)))
    shown = pictures.framed(strip)
    assert shown.size == (2048, 512) and shown.getpixel((1024, 256)) == (255, 0, 0)
    assert shown.getpixel((1024, 0)) == pictures.CANVAS
    assert "strip" in pictures.shape_note(strip) and pictures.shape_note(Image.new("RGB", (400, 300))) == ""
    assert pictures.framed(Image.new("RGB", (300, 1200))).size == (300, 1200)  # 4:1 exactly: left as it is
    with pytest.raises(ValueError, match="1 x 1"):
        pictures.display_size(0, 10)
