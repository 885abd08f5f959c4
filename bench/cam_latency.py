"""Grad-CAM latency per architecture: ``explain.cam`` against pytorch-grad-cam used directly.

    python bench/cam_latency.py [--calls 50] [--arch resnet --arch senet]

Batch 1, 32 x 32, CPU, default CAM layer, median over ``--calls`` calls after warm-up. The library
column is its fastest use: one GradCAM object built once and called again and again (which keeps its
hooks on the model and the last graph alive; ``explain.cam`` builds, releases and clears per call).
Trained weights from ``checkpoints/<arch>`` where they exist, random weights otherwise (same cost).
Then the architecture's most faithful setting (``explain.recommended_cam`` of its config), which the app
uses by default, and what /explain computes for its verdict on top of a map: the same method's map from the
random-weights twin and the deletion curves (``explain.faithfulness``). The last column is that check with
the cheapest map, Grad-CAM: the least any map with a verdict costs, whatever the method. Those are medians of
``--calls`` / 10 calls (at least 3). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from pytorch_grad_cam import GradCAM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import explain  # noqa: E402
from architectures import create_model, list_models, load_pretrained  # noqa: E402
from explain.faithfulness import randomised_twin  # noqa: E402
from serve.store import for_serving  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
TARGET_MS = 30


def median_ms(fn, calls: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def table_row(arch: str, x: torch.Tensor, calls: int) -> str:
    """One architecture's row: default-layer Grad-CAM ours and the library's, its recommended setting, the verdict."""
    trained = (CHECKPOINTS / arch / "config.json").is_file()
    # In the layout the app serves it in.
    model = for_serving(load_pretrained(CHECKPOINTS / arch) if trained else create_model(arch).eval())
    ours = median_ms(lambda: explain.cam(model, x), calls)
    layer = model.get_submodule(model.default_cam_layer)
    with GradCAM(model, [layer], reshape_transform=model.cam_reshape) as library:
        theirs = median_ms(lambda: library(x, None), calls)
    model.zero_grad(set_to_none=True)
    method, recommended_layer = explain.recommended_cam(model.config if trained else {})
    recommended = median_ms(lambda: explain.cam(model, x, method=method, layer=recommended_layer), calls)
    setting = method if method in explain.LAYER_FREE else f"{method} at {recommended_layer or model.default_cam_layer}"
    twin = for_serving(randomised_twin(model))
    verdict_calls = max(3, calls // 10)

    def with_verdict(method=method, layer=recommended_layer):
        heatmap = explain.cam(model, x, method=method, layer=layer)
        explain.faithfulness(model, x, heatmap, random_weights_heatmap=explain.cam(twin, x, method=method,
                                                                                   layer=layer))

    checked = median_ms(with_verdict, verdict_calls, warmup=1)
    floor = median_ms(lambda: with_verdict("gradcam", None), verdict_calls, warmup=1)
    return (f"| {arch} | {'trained' if trained else 'random'} | {model.default_cam_layer} | {ours:.1f} | "
            f"{theirs:.1f} | {'yes' if ours <= TARGET_MS else 'no'} | {setting} | {recommended:.1f} | "
            f"{checked:.0f} | {floor:.0f} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="timed calls per architecture")
    parser.add_argument("--arch", action="append", choices=list_models(), help="default: every architecture")
    args = parser.parse_args(argv)

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), batch 1, "
          f"median of {args.calls} calls\n")
    print("| architecture | weights | layer | explain.cam (ms) | pytorch-grad-cam (ms) | <= 30 ms | "
          "recommended setting | its ms | with its verdict (ms) | Grad-CAM with its verdict (ms) |")
    print("|---|---|---|---:|---:|:-:|---|---:|---:|---:|")
    for arch in args.arch or list_models():
        print(table_row(arch, x, args.calls))

if __name__ == "__main__":
    main()
