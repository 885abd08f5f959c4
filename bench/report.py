"""Run every benchmark and write bench/RESULTS.md, bench/results.json and the plots beside them.

    python bench/report.py                       # all four, full length (some 10-20 minutes on 2 CPU cores)
    python bench/report.py --skip http,cam       # leave some out: train, inference, http, cam
    python bench/report.py --quick --out-dir /tmp/bench   # tiny settings: proves the scripts run, figures mean nothing

Each benchmark runs as its own process (``bench/train_throughput.py``, ``bench/inference.py``,
``bench/http_latency.py``, ``bench/cam_latency.py``), its progress shown live; RESULTS.md gives the
machine (CPU, cores, GPU, torch, date, load average at start and end: figures taken on a busy machine
are not worth keeping), and each table under the command that reproduces it. A benchmark that fails is
reported as failed with the end of its error output; the others still run. Files are written atomically.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]  # the project, and the sibling benchmark scripts

import torch  # noqa: E402

import inference  # noqa: E402
import train_throughput  # noqa: E402
from architectures.checkpoint import atomic_write_bytes, atomic_write_json  # noqa: E402
from train.env import describe_hardware, git_commit  # noqa: E402

NAMES = ("train", "inference", "http", "cam")
SCRIPTS = {"train": "bench/train_throughput.py", "inference": "bench/inference.py",
           "http": "bench/http_latency.py", "cam": "bench/cam_latency.py"}
QUICK = {"train": ["--batch-size", "32", "--warmup", "1", "--steps", "2"],
         "inference": ["--calls", "3", "--warmup", "1", "--batch-size", "8", "--batches", "1"],
         "http": ["--repeats", "2", "--compare-repeats", "1", "--clients", "2", "--load-calls", "2"],
         "cam": ["--calls", "2"]}
WRITES_JSON = {"train", "inference"}  # the others print their results (http: JSON, cam: a markdown table)
ERROR_TAIL_CHARS = 3000


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": describe_hardware(torch.device("cpu")), "logical_cores": os.cpu_count(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "git_commit": git_commit(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "load_average_start": [round(v, 2) for v in os.getloadavg()]}


def run_benchmark(name: str, extra: list[str]) -> dict:
    """Run one benchmark script; its stderr (progress bars) goes to ours live, its results come back."""
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "result.json"
        command = [sys.executable, SCRIPTS[name], *extra]
        hidden = ["--json", str(json_path)] if name in WRITES_JSON else []
        started = time.perf_counter()
        with open(Path(tmp) / "stdout", "w+") as stdout:
            process = subprocess.Popen(command + hidden, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE)
            tail = b""
            while chunk := process.stderr.read1(4096):
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
                tail = (tail + chunk)[-ERROR_TAIL_CHARS:]
            returncode = process.wait()
            stdout.seek(0)
            output = stdout.read()
        entry = {"command": " ".join(["python", *command[1:]]), "returncode": returncode,
                 "seconds": round(time.perf_counter() - started, 1), "stdout": output}
        if returncode:
            entry["error"] = tail.decode(errors="replace").replace("\r", "\n")[-ERROR_TAIL_CHARS:]
        elif name in WRITES_JSON:
            entry["result"] = json.loads(json_path.read_text())
        elif name == "http":
            entry["result"] = json.loads(output)
    return entry


def http_markdown(result: dict) -> str:
    startup = "-" if result["startup_s"] is None else f"{result['startup_s']:.1f} s"
    lines = [f"Start-up to first answer: {startup}; image `{result['image']}`; /compare p50 "
             f"{result['compare']['p50_ms']:.0f} ms, p95 {result['compare']['p95_ms']:.0f} ms "
             f"({result['compare']['n']} calls). Targets: /predict p50 <= 50 ms, /explain <= 150 ms, "
             "/compare <= 1 s, start-up <= 10 s.", "",
             "| architecture | /predict p50 (ms) | /predict p95 (ms) | /explain p50 (ms) | /explain p95 (ms) |",
             "|---|---:|---:|---:|---:|"]
    load = result.get("load")
    if load and "error" not in load:
        lines[1:1] = ["", f"{load['clients']} concurrent clients, {load['requests']} /predict calls: {load['failed']} "
                      f"failed; {load['throughput_rps']:.1f} requests/s in all against {load['single_client_rps']:.1f} "
                      f"for one client; p50 {load['p50_ms']:.0f} ms, p95 {load['p95_ms']:.0f} ms under load "
                      f"(limit: 10x one client's p50, {load['p95_limit_ms']:.0f} ms)."]
        if load.get("server_cpu_ms_per_request") is not None:
            lines[2] += (f" CPU time per request: server {load['server_cpu_ms_per_request']:.1f} ms, the benchmark's "
                         f"own client threads {load['client_cpu_ms_per_request']:.1f} ms, on the same two cores.")
    for arch, predict in result["predict"].items():
        if isinstance(predict, str):
            lines.append(f"| {arch} | {predict} | | | |")
            continue
        explain = result["explain"].get(arch, {})
        lines.append(f"| {arch} | {predict['p50_ms']:.1f} | {predict['p95_ms']:.1f} | "
                     f"{explain.get('p50_ms', float('nan')):.1f} | {explain.get('p95_ms', float('nan')):.1f} |")
    return "\n".join(lines)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def plot_train(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 3.6))
    xs = range(len(rows))
    usual = [r["usual"]["images_per_second"] for r in rows]
    project = [r["project"]["images_per_second"] for r in rows]
    alone = [r["model_alone"]["images_per_second"] for r in rows]
    ax.bar([x - 0.27 for x in xs], usual, 0.27, label="usual: ImageFolder + DataLoader, PIL transforms, fp32")
    ax.bar(list(xs), project, 0.27, label="project: uint8 tensor, batch augmentation, channels_last")
    ax.bar([x + 0.27 for x in xs], alone, 0.27, color="0.75", label="model alone, no data pipeline (the ceiling)")
    for x, r in zip(xs, rows):
        ax.annotate(f"{r['ratio']:.2f}x", (x, r["project"]["images_per_second"]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), [r["arch"] for r in rows])
    ax.set_ylabel("training images/s")
    s = result["settings"]
    ax.set_title(f"Training throughput, batch {s['batch_size']}, {s['hardware']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    ax.margins(y=0.2)
    data = _png(fig)
    plt.close(fig)
    return data


def plot_inference(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["val_accuracy"] is not None]
    devices = [d for d in ("cpu", "cuda") if any(d in r for r in rows)]
    fig, axes = plt.subplots(1, len(devices), figsize=(5.5 * len(devices), 4), squeeze=False)
    for ax, device in zip(axes[0], devices):
        xs = [r[device]["batch1"]["p50_ms"] for r in rows]
        ys = [100 * r["val_accuracy"] for r in rows]
        ax.scatter(xs, ys, s=[20 + r["macs"] / 1e6 for r in rows], alpha=0.7)
        for x, y, r in zip(xs, ys, rows):
            ax.annotate(r["arch"], (x, y), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_xlabel(f"{'CPU' if device == 'cpu' else 'GPU'} batch-1 latency, p50 (ms)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_title("Latency against accuracy (marker area ~ MACs)", fontsize=9)
    data = _png(fig)
    plt.close(fig)
    return data


def results_markdown(info: dict, entries: dict, quick: bool, command: str = "python bench/report.py") -> str:
    m = info
    load_end = ", ".join(map(str, m.get("load_average_end", [])))
    lines = ["# Benchmarks", "",
             f"Written by `{command}` on {m['date']}; every table below "
             "gives the command that produced it.", ""]
    if quick:
        lines += ["**Quick mode: tiny settings that only prove the scripts run. These figures mean nothing.**", ""]
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']}; {m['logical_cores']} logical cores",
              f"- GPU: {m['gpu'] or 'none'}",
              f"- torch {m['torch']}, Python {m['python']}, {m['platform']}",
              f"- code: {m['git_commit']}",
              f"- load average (1, 5, 15 min) at start: {', '.join(map(str, m['load_average_start']))}; "
              f"at end: {load_end} (well above 0 at the start: other work shared the machine and the "
              "timings are distorted)", ""]
    sections = {"train": "Training throughput", "inference": "Inference", "http": "The app over HTTP",
                "cam": "Grad-CAM latency"}
    for name, entry in entries.items():
        lines += [f"## {sections[name]}", "", f"```bash\n{entry['command']}\n```", ""]
        if entry["returncode"]:
            lines += [f"Failed (exit code {entry['returncode']}) after {entry['seconds']} s; the end of its "
                      "error output:", "", "```", entry.get("error", "").strip(), "```", ""]
            continue
        if name == "train":
            lines += [train_throughput.markdown(entry["result"]), "", "![training throughput](train_throughput.png)"]
        elif name == "inference":
            lines += [inference.markdown(entry["result"]), "", "![latency against accuracy](inference.png)"]
        elif name == "http":
            lines.append(http_markdown(entry["result"]))
        else:
            lines.append(entry["stdout"].strip())
        lines += ["", f"({entry['seconds']} s)", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", default=str(HERE), help="where RESULTS.md, results.json and the plots go")
    parser.add_argument("--skip", default="", help=f"comma-separated benchmarks to leave out, of {','.join(NAMES)}")
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves the scripts run, nothing more")
    parser.add_argument("--archs", default="", help="architectures of the training benchmark (its default if empty)")
    parser.add_argument("--data", default="", help="data of the training benchmark (its default if empty)")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(NAMES):
        parser.error(f"--skip takes {', '.join(NAMES)}; got {sorted(skip - set(NAMES))}")
    out_dir = Path(args.out_dir)

    info = machine()
    entries = {}
    for name in NAMES:
        if name in skip:
            continue
        extra = list(QUICK[name]) if args.quick else []
        if name == "train":
            extra += ["--archs", args.archs] if args.archs else []
            extra += ["--data", args.data] if args.data else []
        print(f"== {name}: {SCRIPTS[name]} {' '.join(extra)}", file=sys.stderr, flush=True)
        entries[name] = run_benchmark(name, extra)
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]

    plots = {}
    if "result" in entries.get("train", {}):
        plots["train_throughput.png"] = plot_train(entries["train"]["result"])
    if "result" in entries.get("inference", {}) and entries["inference"]["result"]["rows"]:
        plots["inference.png"] = plot_inference(entries["inference"]["result"])
    for filename, data in plots.items():
        atomic_write_bytes(out_dir / filename, data)
    atomic_write_json(out_dir / "results.json", {"machine": info, "quick": args.quick, "benchmarks": entries})
    command = shlex.join(["python", "bench/report.py", *(sys.argv[1:] if argv is None else argv)])
    atomic_write_bytes(out_dir / "RESULTS.md", results_markdown(info, entries, args.quick, command).encode())
    failed = [name for name, entry in entries.items() if entry["returncode"]]
    print(f"wrote {out_dir / 'RESULTS.md'}, results.json and {len(plots)} plot(s)"
          + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
