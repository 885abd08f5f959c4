"""The benchmark scripts run in their tiniest mode and return what RESULTS.md is built from (no timings checked)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import CHECKPOINTS, REPO_ROOT


def _load_bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # puts the repository on sys.path (report.py: bench/, for its siblings)
    return module


report = _load_bench("report")
airbench_reference = _load_bench("airbench_reference")


@pytest.fixture(scope="module")
def tiny_tar(tiny_folder, tmp_path_factory):
    """The tiny ImageFolder as a .tar.gz with one top folder, laid out like the shared CIFAR-10 archive."""
    path = tmp_path_factory.mktemp("tar") / "tiny.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        archive.add(tiny_folder, arcname="train")
    return path


@pytest.fixture(scope="module")
def train_result(tiny_tar, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    return report.train_throughput.run(["bn_convnet"], tiny_tar, jpeg_dir=tmp / "jpeg", cache_dir=tmp / "cache",
                                       batch_size=8, warmup=1, steps=2, workers=1, device="cpu", progress=False)


@pytest.fixture(scope="module")
def inference_result():
    if not (CHECKPOINTS / "resnet" / "model.safetensors").is_file():
        pytest.skip("no resnet checkpoint")
    return report.inference.run(["resnet"], CHECKPOINTS, calls=2, warmup=1, batch_size=4, batches=1, cuda=False,
                                progress=False)


def test_train_throughput_compares_both_pipelines_on_the_same_data(train_result):
    assert train_result["settings"]["images"] == 120  # the tiny folder: 3 classes x 40
    folder = Path(train_result["settings"]["jpeg_folder"])  # the archive, extracted once for the usual side
    assert folder.name == "train" and (folder.parent / ".extracted").is_file()
    (row,) = train_result["rows"]
    assert row["arch"] == "bn_convnet"
    for side in ("project", "usual", "model_alone"):
        assert row[side]["images_per_second"] > 0
    assert row["ratio"] == pytest.approx(row["project"]["images_per_second"] / row["usual"]["images_per_second"])
    assert row["ceiling_ratio"] == pytest.approx(row["model_alone"]["images_per_second"]
                                                 / row["usual"]["images_per_second"])
    assert row["project"]["channels_last"] and row["usual"]["precision"] == "fp32"
    table = report.train_throughput.markdown(train_result)
    assert "| bn_convnet |" in table and "ceiling ratio" in table


def test_train_throughput_refuses_unknown_architectures(tiny_folder):
    with pytest.raises(SystemExit, match="unknown architecture"):
        report.train_throughput.run(["no_such_net"], tiny_folder)


def test_inference_reports_latency_size_and_macs(inference_result):
    (row,) = inference_result["rows"]
    assert row["arch"] == "resnet" and 0 < row["val_accuracy"] <= 1
    assert row["params"] > 0 and row["macs"] > row["params"] and row["checkpoint_mb"] > 0
    latency = row["cpu"]["batch1"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] and latency["calls"] == 2
    assert row["cpu"]["served_batch1"]["p50_ms"] > 0 and row["cpu"]["served_batch1"]["calls"] == 2
    assert row["cpu"]["batch_images_per_second"] > 0
    assert "`resnet`" in report.inference.markdown(inference_result)


def test_inference_measures_an_untrained_candidate_of_other_settings(tmp_path):
    # No checkpoints at all: only the candidate is measured, saved as training would save it (float16).
    result = report.inference.run(["resnet"], tmp_path, calls=2, warmup=1, batch_size=4, batches=1, cuda=False,
                                  progress=False, candidates=['resnet={"width": 16}'])
    (row,) = result["rows"]
    assert row["candidate"] == '{"width":16}' and row["val_accuracy"] is None
    narrow = report.inference.create_model("resnet", width=16)
    assert row["params"] == sum(p.numel() for p in narrow.parameters())
    assert row["checkpoint_mb"] == pytest.approx(2 * row["params"] / 1e6, rel=0.05)  # two bytes a parameter
    assert row["cpu"]["served_batch1"]["p50_ms"] > 0 and "resnet" in result["skipped"]
    assert '`resnet` `{"width":16}` (untrained)' in report.inference.markdown(result)


@pytest.mark.parametrize("bad", ['resnet{"width": 16}', 'lenet={"width": 16}', 'resnet={"widths": [16]}',
                                 'resnet={"width": 0}'])
def test_inference_refuses_a_bad_candidate_before_measuring(bad, capsys):
    with pytest.raises(SystemExit):
        report.inference.main(["--archs", "resnet", "--candidate", bad, "--no-progress"])
    assert "--candidate" in capsys.readouterr().err


def test_report_writes_every_section_and_plots(train_result, inference_result):
    entries = {
        "train": {"command": "python bench/train_throughput.py", "returncode": 0, "seconds": 1.0,
                  "result": train_result},
        "inference": {"command": "python bench/inference.py", "returncode": 0, "seconds": 1.0,
                      "result": inference_result},
        "cam": {"command": "python bench/cam_latency.py", "returncode": 1, "seconds": 1.0,
                "error": "RuntimeError: boom"},
    }
    info = {**report.machine(), "load_average_end": [0.0, 0.0, 0.0]}
    text = report.results_markdown(info, entries, quick=True)
    for expected in ("## Machine", "load average", "## Training throughput", "python bench/train_throughput.py",
                     "## Inference", "train_throughput.png", "inference.png", "Quick mode",
                     "Failed (exit code 1)", "RuntimeError: boom"):
        assert expected in text
    assert report.plot_train(train_result).startswith(b"\x89PNG")
    assert report.plot_inference(inference_result).startswith(b"\x89PNG")


def test_airbench_reference_learns_the_tiny_set_and_reports_both_figures(tiny_tar, tmp_path):
    result = airbench_reference.run(str(tiny_tar), epochs=4, batch_size=16, cache_dir=tmp_path / "cache",
                                           device="cpu", progress=False)
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3, 4]
    assert result["val_accuracy"] > 0.6 and result["val_accuracy_tta"] > 0.6  # three colour classes: chance 0.33
    assert "12-image validation split" in result["split"]  # the zoo's split: 10% of each class


def test_patch_whitening_decorrelates_the_patches_it_was_set_from():
    import torch

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 17, 17, generator=generator)  # channels that correlate, as in photographs
    images = torch.cat([base, 0.8 * base + 0.2 * torch.randn(64, 1, 17, 17, generator=generator),
                        -0.5 * base + 0.5 * torch.randn(64, 1, 17, 17, generator=generator)], 1)
    images = torch.nn.functional.avg_pool2d(images, 2, 1)  # and neighbouring pixels that correlate
    conv = airbench_reference.build_net(3)[0]
    airbench_reference.init_whitening(conv, images, eps=0.0)
    with torch.no_grad():
        responses = torch.nn.functional.conv2d(images, conv.weight[:12])  # the second half is its negative
    flat = responses.permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(flat.T @ flat / len(flat), torch.eye(12), atol=1e-3, rtol=0)
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])


def test_wait_until_idle_waits_out_a_busy_process_and_not_an_idle_one():
    timing = _load_bench("timing")
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert timing.wait_until_idle(idle.pid, timeout_s=10) < 3
        assert timing.wait_until_idle(busy.pid, timeout_s=2.5) >= 2.5
    finally:
        for process in (idle, busy):
            process.kill()
            process.wait()


def test_http_latency_sends_a_new_upload_every_call():
    """The app keeps what it computed for an upload, so the latency benchmark must never send the same bytes twice."""
    import io

    import numpy as np
    from PIL import Image

    http_latency = _load_bench("http_latency")
    example = sorted((REPO_ROOT / "examples").glob("*.jpg"))[0]
    copies = http_latency.fresh_copies(str(example))
    sent = [next(copies) for _ in range(300)]
    assert len(set(sent)) == len(sent)
    with Image.open(example) as original, Image.open(io.BytesIO(sent[-1])) as copy:
        assert copy.format == "JPEG" and np.array_equal(np.asarray(copy), np.asarray(original))  # the same pixels
    png = sorted((REPO_ROOT / "examples").glob("*.png"))[0]
    copies = http_latency.fresh_copies(str(png))
    first, second = next(copies), next(copies)
    with Image.open(png) as original, Image.open(io.BytesIO(second)) as copy:
        assert first != second and np.array_equal(np.asarray(copy), np.asarray(original))
