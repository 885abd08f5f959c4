"""The Hugging Face Space: the README's front matter a Space build reads, pins that install on the Python it
declares, the upload dry run (tools/space_dry_run.py), offline, and ZeroGPU (serve/zerogpu.py): handlers that
answer as the service does wherever they run, and a start-up that puts every model on CUDA."""
from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import pickle
import re
import shlex
import subprocess
import sys

import click
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import CHECKPOINTS, REPO_ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from serve import zerogpu
from tools import space_dry_run
from tools.space_dry_run import SPACE_EXCLUDE, check, plan_upload, upload_command

# From hub-docs docs/hub/spaces-config-reference.md (python_version: "Any valid Python 3.x or 3.x.x version",
# and the thumbnail colours); the 60 characters are what the Hub's README validation enforces.
SPACE_COLOURS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
SHORT_DESCRIPTION_MAX = 60


def front_matter() -> dict:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must open with its YAML front matter between two '---' lines"
    return yaml.safe_load(match.group(1))


def pins(path=REPO_ROOT / "requirements.txt") -> dict[str, Requirement]:
    requirements = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            requirements[requirement.name] = requirement
    return requirements


def pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not pinned to one version"
    return specifier.version


def test_front_matter_has_what_a_gradio_space_needs():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    # The Space installs gradio==sdk_version itself: a different pin in requirements.txt would fight it.
    assert str(meta["sdk_version"]) == pinned_version(pins()["gradio"])
    assert (REPO_ROOT / meta["app_file"]).is_file()
    # Quoted in YAML: a bare 3.10 would be read as the number 3.1.
    assert isinstance(meta["python_version"], str) and re.fullmatch(r"3\.\d+(\.\d+)?", meta["python_version"])
    assert len(meta["short_description"]) <= SHORT_DESCRIPTION_MAX, meta["short_description"]
    assert {meta["colorFrom"], meta["colorTo"]} <= SPACE_COLOURS


def test_the_space_runs_the_python_the_tests_run():
    declared = tuple(int(part) for part in front_matter()["python_version"].split(".")[:2])
    assert declared == sys.version_info[:2], f"the Space runs Python {declared}, the tests {sys.version_info[:2]}"


@pytest.mark.parametrize("name", sorted(pins()))
def test_every_pin_installs_on_the_space_python(name):
    requirement = pins()[name]
    installed = importlib.metadata.metadata(name)
    assert installed["Version"] == pinned_version(requirement), \
        f"{name} {installed['Version']} is installed, {requirement} pinned: this metadata is not the pin's"
    requires_python = SpecifierSet(installed["Requires-Python"] or "")
    python = front_matter()["python_version"]
    assert requires_python.contains(python), f"{requirement} requires Python {requires_python}, the Space has {python}"


def _parse_with_the_hf_cli(command: str) -> dict:
    """The arguments `hf` itself reads from ``command``, without running it."""
    from huggingface_hub.cli.hf import app

    words = shlex.split(command)
    assert words[:2] == ["hf", "upload"], command
    context = app.make_context("hf", [], resilient_parsing=True)
    name, upload, rest = app.resolve_command(context, words[1:])
    return upload.make_context(name, rest, parent=context).params


def test_the_printed_upload_command_is_one_the_hf_cli_accepts():
    params = _parse_with_the_hf_cli(upload_command("someone/cifar-zoo"))
    assert params["repo_id"] == "someone/cifar-zoo" and params["repo_type"] == "space"
    assert (params["local_path"], params["path_in_repo"]) == (".", ".")
    assert tuple(params["exclude"]) == SPACE_EXCLUDE
    # Several patterns after one --exclude are not a list to this CLI but extra arguments.
    with pytest.raises(click.UsageError):
        _parse_with_the_hf_cli("hf upload someone/cifar-zoo . . --repo-type space --exclude 'data/*' 'runs/*'")


def test_the_upload_set_of_this_checkout_is_what_the_space_needs():
    plan = plan_upload(REPO_ROOT)
    assert check(plan) == []
    for path in ("app.py", "requirements.txt", "README.md", "serve/store.py", "checkpoints/resnet/model.safetensors"):
        assert path in plan.upload
    assert not [path for path in plan.upload
                if path == ".git" or path.startswith(("tests/", ".venv", ".git/")) or "__pycache__" in path]


def _git_checkout(root):
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("venv/\n*.log\n")
    for path in ("app.py", "preprocess.py", "requirements.txt", "README.md", "LICENSE", "architectures/a.py",
                 "serve/s.py", "explain/e.py", "train/t.py", "examples/cat.png", "checkpoints/tiny/config.json",
                 "checkpoints/tiny/model.safetensors", "venv/lib/site.py", "run.log", "tests/test_x.py"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    return root


def test_the_dry_run_names_what_would_break_the_space(tmp_path):
    root = _git_checkout(tmp_path / "checkout")
    assert check(plan_upload(root), ["tiny"]) == [
        "run.log would be uploaded but git ignores it: add an exclude pattern",
        "venv/lib/site.py would be uploaded but git ignores it: add an exclude pattern"]

    (root / "README.md").write_text("See ![curves](checkpoints/tiny/curves.png) and [tests](tests/test_x.py).")
    (root / "run.log").unlink()
    with (root / "checkpoints/tiny/model.safetensors").open("wb") as big:
        big.truncate(space_dry_run.MAX_PLAIN_FILE_BYTES + 1)  # sparse: no 10 MB written
    problems = "\n".join(check(plan_upload(root), ["tiny", "other"]))
    assert "checkpoints/other/model.safetensors is needed on the Space but not on disk" in problems
    assert "checkpoints/tiny/curves.png is needed on the Space but not on disk" in problems
    assert "tests/test_x.py is needed on the Space but left out by the exclude patterns" in problems
    assert "checkpoints/tiny/model.safetensors is 10.0 MB, over the 10 MB" in problems


def test_the_dry_run_starts_the_app_from_the_upload_copy():
    """`python -m tools.space_dry_run --start`: the upload set alone, in a fresh folder, serves /predict."""
    done = subprocess.run([sys.executable, "-m", "tools.space_dry_run", "--start", "--timeout", "120"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    match = re.search(r"started from the copy in ([\d.]+) s; /predict answered for (\d+) architectures", done.stdout)
    assert match, done.stdout
    assert int(match.group(2)) >= 1


# -- ZeroGPU ---------------------------------------------------------------------------------------------
MODEL_HANDLERS = ("predict", "describe", "explain_image", "compare", "measure_latency")
EXAMPLE = str(REPO_ROOT / "examples" / "cat_chelsea.jpg")


@pytest.mark.parametrize("value", [None, "", "true", "True", "1", "t", "false", "0", "yes"])
def test_on_zerogpu_reads_the_variable_as_spaces_does(monkeypatch, value):
    from spaces.config import boolean

    if value is None:
        monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    else:
        monkeypatch.setenv("SPACES_ZERO_GPU", value)
    assert zerogpu.on_zerogpu() is boolean(value)


def test_gpu_hands_its_duration_to_spaces_and_is_the_identity_elsewhere(monkeypatch):
    def handler(image, architecture):
        return architecture

    # Off ZeroGPU (as here) spaces.GPU returns the function itself: no layer, no cost per request.
    assert not zerogpu.on_zerogpu()
    assert zerogpu.gpu(12)(handler) is handler and handler.gpu_duration == 12

    import spaces

    asked = []

    def fake_gpu(task=None, *, duration=None, size=None):
        asked.append(duration)
        return lambda fn: (lambda *args, **kwargs: fn(*args, **kwargs))

    monkeypatch.setattr(spaces, "GPU", fake_gpu)
    decorated = zerogpu.gpu(45)(handler)
    assert asked == [45] and decorated is not handler and decorated.gpu_duration == 45
    assert decorated(None, "resnet") == "resnet"

    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    plain = zerogpu.gpu(5)(lambda: 1)
    assert plain() == 1 and plain.gpu_duration == 5
    with pytest.raises(ValueError):
        zerogpu.gpu(0)


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.fixture(scope="module")
def plain_service():
    """The service the handlers call, with a store of its own: what the handlers must answer, undecorated."""
    import serve

    return serve.ZooService(serve.ModelStore(CHECKPOINTS))


SERVICE_METHODS = {"explain_image": "explain_outputs"}  # app.py's name -> the ZooService method it is


def test_every_model_running_handler_asks_for_a_gpu(app_module):
    def steps():
        yield

    import serve

    own_layers = {serve.shown_as_dialog(len).__code__, app_module.then_release(len).__code__,
                  serve.shown_as_dialog(steps).__code__, app_module.then_release(steps).__code__}
    for name in MODEL_HANDLERS:
        handler = getattr(app_module, name)
        assert handler.gpu_duration > 0, name
        raw = inspect.unwrap(handler)
        assert raw.__name__ == SERVICE_METHODS.get(name, name)  # some handlers are the service's own methods
        # Off ZeroGPU the decoration adds no layer: only the app's own (shown_as_dialog, then_release) stand
        # before the handler.
        assert handler is raw or handler.__code__ in own_layers, name
        # The handlers that answer in steps stay generator functions through every layer: Gradio streams those.
        assert inspect.isgeneratorfunction(handler) == inspect.isgeneratorfunction(raw), name
    assert inspect.isgeneratorfunction(app_module.explain_image) and inspect.isgeneratorfunction(app_module.compare)
    assert not hasattr(app_module.zoo_table, "gpu_duration")  # reads config files only


@pytest.mark.filterwarnings("ignore:Error while reading infos from Nvidia driver FS")  # no GPU here
def test_gradio_injects_progress_through_the_zerogpu_wrapper(app_module):
    """ZeroGPU puts spaces' own wrapper in front of a handler; Gradio must still see its gr.Progress default."""
    from gradio.helpers import special_args
    from spaces.zero.wrappers import generator_function_wrapper, regular_function_wrapper

    # compare(image, corruption, severity, attack, epsilon, attack_target, progress)
    for name, index in (("compare", 6), ("measure_latency", 0)):
        handler = getattr(app_module, name)
        wrapper = generator_function_wrapper if inspect.isgeneratorfunction(handler) else regular_function_wrapper
        wrapped = wrapper(handler, handler.gpu_duration, None)
        assert inspect.signature(wrapped) == inspect.signature(handler)
        assert special_args(handler)[1] == index and special_args(wrapped)[1] == index, name


def _pixels(image) -> np.ndarray:
    return np.asarray(image)


def _crosses_processes(result) -> None:
    """ZeroGPU pickles a handler's result back from its GPU worker: no tensor (on CUDA or not) may be in it."""
    pickle.dumps(result)
    stack = [result]
    while stack:
        item = stack.pop()
        assert not isinstance(item, torch.Tensor), type(item)
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


@pytest.mark.parametrize("architecture", ["resnet", "senet"])
def test_decorated_classify_handlers_answer_as_the_service_does(app_module, plain_service, architecture):
    label = app_module.predict(EXAMPLE, architecture)
    assert label == plain_service.predict(EXAMPLE, architecture)

    note, view = app_module.describe(EXAMPLE, architecture)
    plain_note, plain_view = plain_service.describe(EXAMPLE, architecture)
    assert note == plain_note and np.array_equal(_pixels(view), _pixels(plain_view))

    *_, shown = app_module.explain_image(EXAMPLE, architecture)  # its steps; the last has the verdict
    plain = plain_service.explain(EXAMPLE, architecture, app_module.RECOMMENDED, app_module.MAX_DEPTH,
                                  app_module.PREDICTED, 0.5).as_tuple()
    assert len(shown) == len(plain) == 5
    overlay, se_plot, faithfulness, explain_note, se_map = shown
    assert np.array_equal(_pixels(overlay), _pixels(plain[0]))
    assert (se_plot is None) == (plain[1] is None) == (architecture != "senet")
    if se_plot is not None:
        assert np.array_equal(_pixels(se_plot), _pixels(plain[1]))
        assert np.array_equal(_pixels(se_map), _pixels(plain[4]))
    pd.testing.assert_frame_equal(faithfulness, plain[2])
    assert explain_note == plain[3]
    for result in (label, (note, view), shown):
        _crosses_processes(result)


def _without_timings(table: pd.DataFrame) -> pd.DataFrame:
    """The compare table without what varies from run to run: the latency column and the CAM's milliseconds."""
    table = table.drop(columns=["ms"])  # serve.service.COMPARE_HEADERS: the model's latency
    return table.assign(map=table["map"].str.replace(r"\d+ ms", "N ms", regex=True))


def test_decorated_compare_answers_as_the_service_does(app_module, plain_service):
    *_, (table, gallery, summary) = app_module.compare(EXAMPLE, progress=lambda *args, **kwargs: None)
    plain_table, plain_gallery, plain_summary = plain_service.compare(EXAMPLE)
    pd.testing.assert_frame_equal(_without_timings(table), _without_timings(plain_table))
    assert [caption for _, caption in gallery] == [caption for _, caption in plain_gallery]
    for (image, _), (plain_image, _) in zip(gallery, plain_gallery):
        assert np.array_equal(_pixels(image), _pixels(plain_image))
    assert summary == plain_summary and len(gallery) == len(plain_gallery) > 0
    _crosses_processes((table, gallery, summary))


ZEROGPU_START_UP = """
import json
import sys
from serve import zerogpu  # imports spaces: torch's CUDA is emulated from here on
import serve

store = serve.ModelStore({checkpoints!r})
loaded = zerogpu.preload(store)
devices = {{}}
for name in loaded:
    model = store.get(name).model
    twin = store.random_twin(store.get(name))
    tensors = [*model.parameters(), *model.buffers(), *twin.parameters(), *twin.buffers()]
    devices[name] = sorted({{tensor.device.type for tensor in tensors}})
imported_train = sorted(m for m in sys.modules if m == "train" or m.startswith("train."))
print(json.dumps({{"store": store.device.type, "available": store.available(), "devices": devices,
                  "imported_train": imported_train}}))
"""


def test_zerogpu_start_up_puts_every_model_and_twin_on_cuda():
    """With SPACES_ZERO_GPU set, `spaces` emulates CUDA on this CPU machine as it does in a ZeroGPU Space's main
    process: the preload must load every checkpoint and its random-weights twin onto that (emulated) CUDA."""
    env = dict(os.environ, SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL="http://127.0.0.1:9/",
               PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", ZEROGPU_START_UP.format(checkpoints=str(CHECKPOINTS))],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["store"] == "cuda"
    assert report["available"] and sorted(report["devices"]) == sorted(report["available"]), done.stderr[-2000:]
    assert all(devices == ["cuda"] for devices in report["devices"].values()), report["devices"]
    # Serving (the store, the models, the CAM library) needs nothing from train/: the Space could go without it.
    assert report["imported_train"] == []
