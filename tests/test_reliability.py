"""Issue #7, reliability and security: what the other test files leave open.

The bad-upload corpus, the checkpoint store's faults, hostile config files and the SIGKILL-resume run are
tested in test_serve.py, test_app_http.py, test_checkpoints.py and test_train.py. Here: every upload decided
within seconds; a save interrupted at any stage of its writing; pickles never loaded; configs refused
before anything is built; Hub downloads pinned; the launch settings (no share link, loopback only, no
extra paths); and a server whose checkpoint folder is partly missing, corrupt or pickled, which must keep
serving the rest, then a CI-sized run of the soak benchmark (bench/soak.py) against it.
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import serve
from conftest import REPO_ROOT, random_checkpoint, running_app
from architectures import CheckpointError, create_model, list_models, load_pretrained, save_pretrained
from preprocess import CIFAR10_CLASSES
from upload_corpus import write_corpus

CONFIG = {"class_names": list(CIFAR10_CLASSES), "image_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26],
          "val_accuracy": 0.5, "epochs": 1, "train_seconds": 1.0, "hardware": "test"}
DECIDED_WITHIN_S = 5.0     # "nothing takes more than a few seconds", on a busy 2-core CPU
STARTUP_TIMEOUT_S = 120    # generous: CI machines may be busy
MAX_STATE_SESSIONS = 100   # Gradio keeps ~300 KB per API session here: 100 sessions stay near the 50 MB memory budget


class Explode:
    """A pickle that creates ``sentinel`` when unpickled: proof that a loader ran it."""

    def __init__(self, sentinel: Path):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (exec, (f"open({self.sentinel!r}, 'w').close()",))


def _pickle_bomb(sentinel: Path) -> bytes:
    return pickle.dumps({"state_dict": Explode(sentinel)})


# --- bad uploads: decided fast, real images classified -------------------------------------------------------
def test_every_upload_is_decided_within_seconds(tmp_path):
    random_checkpoint(tmp_path / "ckpt", "resnet")
    store = serve.ModelStore(tmp_path / "ckpt", repo="", device="cpu", ood_thresholds={})
    store.get("resnet")  # loading the model is not the upload's time
    timings = {}
    for upload in write_corpus(tmp_path / "uploads", include_oversize=True):
        start = time.perf_counter()
        if upload.expect == "ok":
            prediction = serve.predict(store, "resnet", serve.load_image(upload.path))
            assert prediction.label in CIFAR10_CLASSES, upload.name
        else:
            with pytest.raises(serve.ImageDecodeError):
                serve.load_image(upload.path)
        timings[upload.name] = time.perf_counter() - start
    slow = {name: round(s, 2) for name, s in timings.items() if s > DECIDED_WITHIN_S}
    assert not slow, f"over {DECIDED_WITHIN_S} s: {slow}"
    assert len(timings) >= 20


# --- faults: an interrupted save leaves the previous checkpoint --------------------------------------------
def _crash_while_writing_weights(monkeypatch, checkpoint):
    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"half a safetensors file")
        raise KeyboardInterrupt  # the process is interrupted in the middle of the write

    monkeypatch.setattr(checkpoint, "save_file", crash)


def _crash_while_writing_config(monkeypatch, checkpoint):
    # The weights are written; config.json's bytes are in the file but not yet on disk when the crash comes.
    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)


@pytest.mark.parametrize("crash", [_crash_while_writing_weights, _crash_while_writing_config],
                         ids=["while-writing-weights", "while-writing-config"])
def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    import architectures.checkpoint as checkpoint

    folder = random_checkpoint(tmp_path, "resnet", seed=0, val_accuracy=0.5)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = load_pretrained(folder)(x)

    crash(monkeypatch, checkpoint)
    torch.manual_seed(1)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(create_model("resnet"), folder, {**CONFIG, "val_accuracy": 0.9})
    monkeypatch.undo()

    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # same files, same bytes, no temporaries
    model = load_pretrained(folder)
    assert model.config["val_accuracy"] == 0.5
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_an_interrupted_training_state_save_keeps_the_last_epoch(tmp_path, monkeypatch):
    import architectures.checkpoint as checkpoint
    from train.state import load_state, peek_info, save_state

    model = create_model("resnet", blocks_per_stage=1, width=8, num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path / "train_state.safetensors"
    save_state(path, model, None, optimizer, {"epoch": 1})
    saved = path.read_bytes()

    _crash_while_writing_weights(monkeypatch, checkpoint)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, model, None, optimizer, {"epoch": 2})
    monkeypatch.undo()

    assert path.read_bytes() == saved and sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert peek_info(path) == {"epoch": 1}
    assert load_state(path, model, None, optimizer, "cpu") == {"epoch": 1}


# --- untrusted files ---------------------------------------------------------------------------------------
def test_a_pickle_is_never_loaded(tmp_path):
    """A pickle in place of, or beside, the safetensors file is refused, and its code never runs."""
    sentinel = tmp_path / "pickle_ran"
    bomb = _pickle_bomb(sentinel)
    folder = random_checkpoint(tmp_path / "ckpts", "resnet")
    for name in ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt"):
        (folder / name).write_bytes(bomb)
    load_pretrained(folder)  # the safetensors file is used, the pickles beside it are ignored
    (folder / "model.safetensors").write_bytes(bomb)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained(folder)
    store = serve.ModelStore(tmp_path / "ckpts", repo="", device="cpu", ood_thresholds={})
    with pytest.raises(serve.ModelUnavailable, match="no checkpoint"):
        store.get("resnet")
    assert not sentinel.exists(), "a pickle was unpickled"


def test_no_code_path_unpickles():
    """Weights, training state and caches are safetensors; nothing in the project calls a pickle loader."""
    pattern = re.compile(r"torch\.load\(|pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True|"
                         r"torch\.hub\.load|joblib\.load")
    offenders = []
    for folder in ("architectures", "serve", "train", "explain", "bench"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert "torch.load(" not in (REPO_ROOT / "app.py").read_text()
    assert not offenders, offenders


@pytest.mark.parametrize("change", [
    {"arch": "../../etc/passwd"}, {"arch": "resnet/../vgg"}, {"arch_args": {"width": 10 ** 9}},
    {"arch_args": {"__class__": "x"}}, {"class_names": ["only one"]}, {"image_size": -1}, {"std": [0, 0, 0]},
])
def test_config_is_validated_before_anything_is_built(tmp_path, monkeypatch, change):
    import architectures.checkpoint as checkpoint

    folder = random_checkpoint(tmp_path, "resnet")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    built = []
    real_create_model = checkpoint.create_model
    monkeypatch.setattr(checkpoint, "create_model", lambda *a, **k: built.append(a) or real_create_model(*a, **k))
    with pytest.raises(CheckpointError):
        load_pretrained(folder)
    store = serve.ModelStore(tmp_path, repo="", device="cpu", ood_thresholds={})
    with pytest.raises(serve.ModelUnavailable, match="cannot be used"):
        store.get("resnet")
    assert built == [], "a model was built from an invalid config"


def test_hub_downloads_are_pinned_and_names_are_not_paths(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    remote = random_checkpoint(tmp_path / "remote", "resnet")

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(remote)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.chdir(tmp_path)  # so that the repo id cannot be mistaken for a local folder
    model = load_pretrained("someone/cifar-resnet", revision="0123456789abcdef")
    assert model.config["arch"] == "resnet"
    assert calls == [("someone/cifar-resnet", "0123456789abcdef", calls[0][2])]
    assert all(not pattern.endswith((".bin", ".pt", ".pth", ".pkl")) for pattern in calls[0][2])
    for hostile in ("../someone/repo", "someone/../../etc", "/etc/passwd", "a/b/c", "someone/repo;rm -rf"):
        with pytest.raises(CheckpointError):
            load_pretrained(hostile, revision="v1")
    assert len(calls) == 1, calls


# --- the launch settings -----------------------------------------------------------------------------------
LAUNCH_PROBE = """
import json, runpy, sys
import gradio as gr
def record(self, *args, **kwargs):
    print("LAUNCH " + json.dumps({"args": [repr(a) for a in args],
                                  "kwargs": {k: repr(v) if k == "theme" else v for k, v in kwargs.items()}}))
gr.Blocks.launch = record
gr.Blocks.block_thread = lambda self: None  # launch did not start a server to wait on
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def launch_settings(tmp_path_factory):
    """The arguments `python app.py` passes to ``demo.launch`` with no GRADIO_* settings in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIO_")}
    env.update({"CHECKPOINT_DIR": str(tmp_path_factory.mktemp("empty_checkpoints")), "CHECKPOINT_REPO": "",
                "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    result = subprocess.run([sys.executable, "-c", LAUNCH_PROBE], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("LAUNCH ")]
    assert len(lines) == 1, result.stdout[-2000:]
    return json.loads(lines[0][len("LAUNCH "):])


def test_launch_shares_nothing_by_default(launch_settings):
    kwargs = launch_settings["kwargs"]
    assert not launch_settings["args"], "launch settings must be named"
    assert kwargs.get("share") in (None, False), "no public share link by default"
    assert kwargs.get("server_name") == "127.0.0.1", "listen on loopback unless GRADIO_SERVER_NAME says otherwise"
    assert not kwargs.get("allowed_paths"), "no extra folders exposed"
    assert not kwargs.get("auth") and not kwargs.get("root_path")
    assert kwargs.get("max_file_size") == serve.MAX_UPLOAD_BYTES
    assert "GRADIO_SHARE" not in (REPO_ROOT / "app.py").read_text()


def test_launch_bounds_the_memory_kept_per_session(launch_settings):
    capacity = launch_settings["kwargs"].get("state_session_capacity", 10_000)
    assert capacity <= MAX_STATE_SESSIONS


def test_slow_handlers_hand_freed_memory_back_even_when_they_fail(monkeypatch):
    import inspect

    import malloc_tuning

    released = []
    monkeypatch.setattr(malloc_tuning, "release_freed_memory", lambda: released.append(True))

    def handler(image, progress="injected"):
        raise ValueError(image)

    wrapped = malloc_tuning.then_release(handler)
    assert inspect.signature(wrapped) == inspect.signature(handler)  # Gradio reads it to inject gr.Progress
    with pytest.raises(ValueError):
        wrapped("bad")
    assert released == [True]


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_releasing_freed_memory_hands_pages_back_to_the_system():
    """On glibc, ``release_freed_memory`` returns the pages of chunks freed below a live one, which free() keeps
    resident; elsewhere it is a no-op that never fails."""
    import ctypes

    import malloc_tuning

    libc = malloc_tuning._libc()
    if libc is None:
        assert malloc_tuning.release_freed_memory() is None  # no glibc: nothing to hand back, and no error
        pytest.skip("not glibc: release_freed_memory is a no-op here")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    chunk, count = 64 * 1024, 1024  # 64 MB in chunks below glibc's mmap threshold: they come from the heap
    chunks = [libc.malloc(chunk) for _ in range(count)]
    pin = libc.malloc(chunk)  # a live chunk above them, so free() cannot give their pages back by itself
    try:
        assert all(chunks) and pin
        for address in chunks:
            ctypes.memset(address, 1, chunk)  # touched: resident
        for address in chunks:
            libc.free(address)
        before = _resident_bytes()
        malloc_tuning.release_freed_memory()
        released = before - _resident_bytes()
    finally:
        libc.free(pin)
    assert released > count * chunk // 2, f"only {released / 2**20:.1f} MB of {count * chunk / 2**20:.0f} MB freed"


# --- a partly broken checkpoint folder behind a running server, then a small soak ---------------------------
@pytest.fixture(scope="module")
def broken_zoo(tmp_path_factory):
    """resnet and senet usable; vgg, alexnet, googlenet broken in different ways; the rest missing."""
    folder = tmp_path_factory.mktemp("broken_zoo")
    sentinel = folder.parent / f"{folder.name}_pickle_ran"
    random_checkpoint(folder, "resnet")
    random_checkpoint(folder, "senet")
    (folder / "vgg").mkdir()
    (folder / "vgg" / "config.json").write_text('{"arch": "vgg", "class_names": ')       # cut short
    (folder / "vgg" / "model.safetensors").write_bytes(b"not a safetensors file")
    random_checkpoint(folder, "alexnet")
    weights = folder / "alexnet" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])                                      # truncated weights
    random_checkpoint(folder, "googlenet")
    (folder / "googlenet" / "model.safetensors").unlink()                                 # only a pickle left
    (folder / "googlenet" / "pytorch_model.bin").write_bytes(_pickle_bomb(sentinel))
    kinds = {"resnet": "ok", "senet": "ok", "vgg": "corrupt", "alexnet": "corrupt", "googlenet": "missing"}
    return folder, {name: kinds.get(name, "missing") for name in list_models()}, sentinel


@pytest.fixture(scope="module")
def broken_server(broken_zoo, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("broken_server")
    with running_app(broken_zoo[0], workdir, timeout_s=STARTUP_TIMEOUT_S) as server:
        yield {**server, "workdir": workdir}


def _bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package)."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))


@pytest.fixture(scope="module")
def soak_module():
    return _bench_module("soak")


def test_broken_checkpoints_fail_alone_over_http(broken_server, broken_zoo, soak_module):
    _, kinds, sentinel = broken_zoo
    caller = soak_module.Caller(broken_server["url"], timeout=120)
    photo = next(p for p in sorted((REPO_ROOT / "examples").iterdir()) if p.suffix == ".png").read_bytes()
    expected = {"missing": "no checkpoint yet", "corrupt": "cannot be used"}
    for name, kind in kinds.items():
        for api in ("predict", "explain"):
            answer, body = caller.call(api, "photo.png", photo, name)
            if kind == "ok":
                assert answer == "complete", (name, api, body)
            else:
                assert answer == "error" and expected[kind] in body, (name, api, answer, body)
                assert str(broken_zoo[0]) not in body, "the message shows the server's folders"
        assert broken_server["process"].poll() is None, f"the server died on {name}"
    assert caller.call("predict", "photo.png", photo, "resnet")[0] == "complete"
    assert not sentinel.exists(), "the server unpickled googlenet's pytorch_model.bin"


def test_ci_soak_against_the_broken_zoo(broken_server, tmp_path):
    """bench/soak.py end to end, CI-sized (200 requests from 8 clients, a third of them on /explain, so every
    real image of the corpus, the 4000 x 3 strip included, reaches /explain): every good request answered,
    every malformed one refused with the app's message, the server alive, its memory bounded.

    The memory figures of so short a run still include some warming up, so the growth bound is looser than
    the benchmark's 50 MB (README, "Reliability"). The 1.2 GB end bound is the full benchmark's, on a server
    of its own: this one has already run every explanation method for the module's other tests.
    """
    out = tmp_path / "soak.json"
    command = [sys.executable, "bench/soak.py", "--url", broken_server["url"],
               "--pid", str(broken_server["process"].pid), "--archs", "resnet,senet", "--requests", "200",
               "--clients", "8", "--warmup", "40", "--explain-share", "0.35", "--max-growth-mb", "150",
               "--max-rss-mb", "2000",  # the end level is the module's other tests' (see the docstring)
               "--no-progress", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["passed"] and report["outcomes"] == {"ok": 160, "clear_error": 40}, report["outcomes"]
    assert len(report["results"]) == 200 and report["latency"]["all"]["p95_ms"] > 0
    explained = {r["file"] for r in report["results"] if r["api"] == "explain" and not r["malformed"]}
    assert "thin.png" in explained, "the 4000 x 3 strip never reached /explain: change --seed or the share"
    assert report["rss_mb_before"] and report["rss_mb_after"]
    assert report["rss_mb_peak"] >= round(report["rss_mb_after"], 1)
    text = _bench_module("report").soak_markdown(report)  # the soak's section of bench/RESULTS.md
    assert "Outcomes: clear_error 40, ok 160." in text and f"peak {report['rss_mb_peak']:.0f} MB" in text
    assert broken_server["process"].poll() is None


def test_the_server_never_loads_the_gpu_compiler(broken_server):
    """``malloc_tuning.leave_out_triton``: torch's CUDA wheels install Triton, and without it the server would
    map libtriton for compiling that it never does. Read after the module's soak, so no request loaded it."""
    maps = Path(f"/proc/{broken_server['process'].pid}/maps")
    if not maps.exists():
        pytest.skip("needs Linux's /proc")
    assert "libtriton" not in maps.read_text()
    assert broken_server["process"].poll() is None
