"""Run every benchmark and write bench/RESULTS.md, bench/results.json and the plots beside them.

    python bench/report.py                       # all six, full length (some 15-25 minutes on 2 CPU cores)
    python bench/report.py --skip http,cam       # leave some out, keeping their last results: train, inference,
                                                 # http, cam, soak, attack
    python bench/report.py --only soak           # run one and regenerate RESULTS.md with the others' last results
    python bench/report.py --quick --out-dir /tmp/bench   # tiny settings: proves the scripts run, figures mean nothing

Each benchmark runs as its own process (``bench/train_throughput.py``, ``bench/inference.py``,
``bench/http_latency.py``, ``bench/cam_latency.py``, ``bench/soak.py``, ``bench/attack_latency.py``), its
progress shown live; one left out keeps its entry from the previous results.json, with the date and commit it
was run at; RESULTS.md gives the machine (CPU, cores, GPU, torch, date, load average at start and end: figures
taken on a busy machine are not worth keeping), and each table under the command that reproduces it. A
benchmark that fails is reported as failed with the end of its error output; the others still run. Files are
written atomically.
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

import inference  # noqa: E402
import torch  # noqa: E402
import train_throughput  # noqa: E402

from architectures.checkpoint import atomic_write_bytes, atomic_write_json  # noqa: E402
from train.env import describe_hardware, git_commit  # noqa: E402

NAMES = ("train", "inference", "http", "cam", "soak", "attack")
SCRIPTS = {"train": "bench/train_throughput.py", "inference": "bench/inference.py",
           "http": "bench/http_latency.py", "cam": "bench/cam_latency.py", "soak": "bench/soak.py",
           "attack": "bench/attack_latency.py"}
QUICK = {"train": ["--batch-size", "32", "--warmup", "1", "--steps", "2"],
         "inference": ["--calls", "3", "--warmup", "1", "--batch-size", "8", "--batches", "1"],
         "http": ["--repeats", "2", "--compare-repeats", "1", "--clients", "2", "--load-calls", "2"],
         "cam": ["--calls", "2"], "soak": ["--requests", "20", "--clients", "2", "--warmup", "5", "--no-progress"],
         "attack": ["--rounds", "1", "--arch", "basic_convnet"]}
# Those that write their results to a JSON file, and the option naming it; the others print their results
# (http: JSON, cam: a markdown table). The soak's file is read even when a check failed: that is a result too.
JSON_OPTION = {"train": "--json", "inference": "--json", "soak": "--out", "attack": "--out"}
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
        hidden = [JSON_OPTION[name], str(json_path)] if name in JSON_OPTION else []
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
                 "seconds": round(time.perf_counter() - started, 1), "stdout": output,
                 "date": time.strftime("%Y-%m-%d %H:%M %Z"), "git_commit": git_commit()}
        if name == "soak" and json_path.is_file():
            result = json.loads(json_path.read_text())
            result.pop("results")  # every request's outcome: the summary and its problems are enough here
            entry["result"] = result
        if returncode:
            entry["error"] = tail.decode(errors="replace").replace("\r", "\n")[-ERROR_TAIL_CHARS:]
        elif name in JSON_OPTION and "result" not in entry:
            entry["result"] = json.loads(json_path.read_text())
        elif name == "http":
            entry["result"] = json.loads(output)
    return entry


def http_markdown(result: dict) -> str:
    startup = "-" if result["startup_s"] is None else f"{result['startup_s']:.1f} s"
    compare = result["compare"]
    shown = ("" if "maps_p50_ms" not in compare else
             f" (the predictions shown after {compare['first_p50_ms']:.0f} ms, every map after "
             f"{compare['maps_p50_ms']:.0f} ms, then their verdicts)")
    lines = [f"Start-up to first answer: {startup}; image `{result['image']}`; /compare p50 "
             f"{compare['p50_ms']:.0f} ms{shown}, p95 {compare['p95_ms']:.0f} ms "
             f"({compare['n']} calls). Targets: /predict p50 <= 50 ms, /explain <= 150 ms, "
             "/compare <= 1 s, start-up <= 10 s. Every call a new upload; \"again\": the same upload once more "
             "(what a change of opacity costs /explain), which the app answers from what it kept. /explain shows "
             "its map first (\"map shown\") and its verdict with the whole answer.", "",
             "| architecture | /predict p50 (ms) | /predict p95 (ms) | /predict again (ms) "
             "| /explain map shown, p50 (ms) | /explain p50 (ms) | /explain p95 (ms) | /explain again (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
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
            lines.append(f"| {arch} | {predict} | | | | | | |")
            continue
        explain = result["explain"].get(arch, {})
        lines.append(f"| {arch} | {predict['p50_ms']:.1f} | {predict['p95_ms']:.1f} | "
                     f"{predict.get('again_p50_ms', float('nan')):.1f} | "
                     f"{explain.get('first_p50_ms', float('nan')):.1f} | "
                     f"{explain.get('p50_ms', float('nan')):.1f} | {explain.get('p95_ms', float('nan')):.1f} | "
                     f"{explain.get('again_p50_ms', float('nan')):.1f} |")
    return "\n".join(lines)


def soak_markdown(result: dict) -> str:
    """Outcomes, checks, latency by endpoint and kind, and the server's memory through the soak."""
    outcomes = ", ".join(f"{kind} {count}" for kind, count in sorted(result["outcomes"].items()))
    lines = [f"{result['requests']} requests from {result['clients']} clients after a warm-up of {result['warmup']} "
             f"({result['good']} good, {result['malformed']} malformed) in {result['wall_s']} s; architectures: "
             f"{', '.join(result['archs'])}. Outcomes: {outcomes}.", "",
             "| checks | |", "|---|---|"]
    lines += [f"| {check} | {'passed' if passed else '**failed**'} |" for check, passed in result["checks"].items()]
    lines += ["", "| requests | n | p50 (ms) | p95 (ms) |", "|---|---:|---:|---:|"]
    lines += [f"| {key} | {value['n']} | {value['p50_ms']:.0f} | {value['p95_ms']:.0f} |"
              for key, value in result["latency"].items() if value["n"]]
    mb = {key: "?" if result.get(key) is None else f"{result[key]:.0f} MB"
          for key in ("rss_mb_start", "rss_mb_before", "rss_mb_after", "rss_mb_peak")}
    lines += ["", f"Server memory (RSS): {mb['rss_mb_start']} at start, {mb['rss_mb_before']} after the warm-up, "
                  f"{mb['rss_mb_after']} at the end (growth {result['rss_growth_mb']} MB), peak {mb['rss_mb_peak']}."]
    for problem in result.get("problems", [])[:5]:
        lines.append(f"- problem: {problem['api']} {problem['arch']!r} {problem['file']}: {problem['outcome']} "
                     f"{problem['message'][:120]}")
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
                "cam": "Grad-CAM latency", "soak": "Soak: many clients, one request in five malformed",
                "attack": "Attacking an upload: FGSM and PGD-10 beside the plain prediction"}
    for name, entry in entries.items():
        lines += [f"## {sections[name]}", "", f"```bash\n{entry['command']}\n```", ""]
        if name == "soak" and "result" in entry:  # its failed checks are in its table: no error output needed
            lines += [soak_markdown(entry["result"]), "", f"({entry['seconds']} s, run {entry['date']} at "
                      f"{entry['git_commit']}; exit code {entry['returncode']})", ""]
            continue
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
        ran = f", run {entry['date']} at {entry['git_commit']}" if "date" in entry else ""
        lines += ["", f"({entry['seconds']} s{ran})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _previous_entries(path: Path, quick: bool) -> dict:
    """The benchmarks of the results.json at ``path`` (none if absent, or of the other mode, quick or full)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if previous.get("quick", False) != quick:
        return {}
    machine = previous.get("machine", {})
    # Entries from before they carried their own date and commit ran with the previous report's machine.
    return {name: {"date": machine.get("date"), "git_commit": machine.get("git_commit"), **entry}
            for name, entry in previous.get("benchmarks", {}).items() if name in NAMES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out-dir", default=str(HERE), help="where RESULTS.md, results.json and the plots go")
    parser.add_argument("--skip", default="", help=f"comma-separated benchmarks to leave out, of {','.join(NAMES)}; "
                                                   "their entries in the previous results.json are kept")
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run, the others left out")
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves the scripts run, nothing more")
    parser.add_argument("--archs", default="", help="architectures of the training benchmark (its default if empty)")
    parser.add_argument("--data", default="", help="data of the training benchmark (its default if empty)")
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if (skip | only) - set(NAMES):
        parser.error(f"--skip and --only take {', '.join(NAMES)}; got {sorted((skip | only) - set(NAMES))}")
    skip |= set(NAMES) - only if only else set()
    out_dir = Path(args.out_dir)
    previous = _previous_entries(out_dir / "results.json", quick=args.quick)

    info = machine()
    entries = {}
    for name in NAMES:
        if name in skip:
            if name in previous:
                entries[name] = previous[name]
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
