"""Soak test of the running app over plain HTTP: many clients at once, one request in five malformed.

    python bench/soak.py                                   # 1,000 requests from 16 clients against a fresh app.py
    python bench/soak.py --requests 100 --clients 4 --out soak.json
    python bench/soak.py --url http://127.0.0.1:7860/ --pid 1234 --archs resnet,senet   # a running server

Each request does what any HTTP client does: upload the file (POST /gradio_api/upload), call the endpoint
(POST /gradio_api/call/<api>) and read the answer from its event stream. Good requests send a real image
(examples/ and the real images of serve/corpus.py) to an architecture with a checkpoint, mostly to
/predict and some to /explain; every fifth request is malformed: one of the corpus's bad uploads, or an
unknown or path-like architecture name.

Checks (exit status 1 when one fails): every good request is answered; every malformed one gets the app's
own clear message (not an accepted answer, not Gradio's bare ``"error": null`` of an unhandled exception);
the server still answers at the end; its resident memory grows by less than --max-growth-mb from the end
of the warm-up to the end of the run, and is at most --max-rss-mb at the end. Reports its peak, sampled
through the run, and p50/p95 latency (upload to answer) by endpoint and kind.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from http_latency import ROOT, Caller, _start_server  # bench/ is on sys.path when this file runs; ROOT too
from timing import percentiles
from tqdm import tqdm

sys.path.insert(0, str(ROOT / "tests"))  # the upload corpus the tests use

from upload_corpus import write_corpus  # noqa: E402  (tests/ is put on sys.path above)

from architectures import list_models  # noqa: E402

# Architecture names a client might send by mistake or on purpose; each must be refused by name.
BAD_NAMES = ["nope", "", "RESNET", "resnet ", "../checkpoints/resnet", "resnet/../senet", "/etc/passwd",
             "checkpoints/resnet/model.safetensors"]
# The start of the app's own messages for a refused upload and a refused name
# (serve.decode, serve.known_architecture).
CLEAR_MESSAGES = {"upload": "Cannot use this upload", "name": "unknown architecture"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


@dataclass
class Request:
    index: int
    api: str            # "predict" or "explain"
    arch: str
    file: str           # file name as uploaded
    malformed: str      # "" for a good request, else "upload" or "name"
    outcome: str = ""   # ok | clear_error | failed | unclear_error | accepted_malformed
    latency_ms: float = 0.0
    message: str = ""


def rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (psutil when installed, else /proc); None if unreadable."""
    try:
        import psutil
    except ImportError:
        psutil = None
    try:
        if psutil is not None:
            return psutil.Process(pid).memory_info().rss / 2**20
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except Exception:  # a dead process or no /proc: report no figure rather than a wrong one
        return None
    return None


class PeakMemory:
    """The highest resident memory of ``pid`` seen while the block runs, sampled every ``every_s`` seconds."""

    def __init__(self, pid: int | None, every_s: float = 0.25):
        self.pid, self.every_s, self.peak_mb = pid, every_s, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            value = rss_mb(self.pid)
            if value is not None:
                self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)
            if self._stop.wait(self.every_s):
                return

    def start(self) -> PeakMemory:
        if self.pid:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _checkpointed(folder: Path) -> list[str]:
    return [name for name in list_models()
            if (folder / name / "config.json").is_file() and (folder / name / "model.safetensors").is_file()]


def judge(request: Request, kind: str, body: str) -> None:
    """Set ``request.outcome`` and ``message`` from what the server answered."""
    request.message = body[:300] if kind != "complete" else ""
    if not request.malformed:
        answered = kind == "complete" and (("confidences" in body) if request.api == "predict" else ("path" in body))
        request.outcome = "ok" if answered else "failed"
        if kind == "complete" and not answered:
            request.message = f"unexpected answer: {body[:300]}"
    elif kind == "complete":
        request.outcome = "accepted_malformed"
    elif kind == "error" and CLEAR_MESSAGES[request.malformed] in body:
        request.outcome = "clear_error"
    else:
        request.outcome = "unclear_error"


def plan(count: int, archs: list[str], good: dict[str, bytes], bad: dict[str, bytes], explain_share: float,
         seed: int) -> list[Request]:
    """The requests, reproducibly: every fifth malformed (half bad uploads, half bad names)."""
    rng = random.Random(seed)
    requests = []
    for index in range(count):
        api = "explain" if rng.random() < explain_share else "predict"
        if index % 5 == 4 and (index // 5) % 2 == 0:
            requests.append(Request(index, api, rng.choice(archs), rng.choice(sorted(bad)), "upload"))
        elif index % 5 == 4:
            requests.append(Request(index, api, rng.choice(BAD_NAMES), rng.choice(sorted(good)), "name"))
        else:
            requests.append(Request(index, api, rng.choice(archs), rng.choice(sorted(good)), ""))
    return requests


def run_requests(caller: Caller, requests: list[Request], files: dict[str, bytes], clients: int,
                 desc: str, progress: bool = True) -> None:
    def one(request: Request) -> Request:
        start = time.perf_counter()
        try:
            kind, body = caller.call(request.api, request.file, files[request.file], request.arch)
        except (httpx.HTTPError, ValueError, KeyError) as error:  # timeout, refused connection, bad JSON
            kind, body = "http", f"{type(error).__name__}: {error}"
        request.latency_ms = (time.perf_counter() - start) * 1000
        judge(request, kind, body)
        return request

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(one, request) for request in requests]
        bar = tqdm(as_completed(futures), total=len(futures), desc=desc, unit="req", disable=not progress)
        failures = 0
        for future in bar:
            failures += future.result().outcome not in ("ok", "clear_error")
            bar.set_postfix(failures=failures, refresh=False)


def _mb(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests in the soak (after the warm-up)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--url", default="", help="a running server; default: start `python app.py` on a free port")
    parser.add_argument("--pid", type=int, default=0, help="with --url: the server's process id, for its memory")
    parser.add_argument("--archs", default="", help="comma-separated architectures for good requests; default: "
                                                     "those with a checkpoint in $CHECKPOINT_DIR or checkpoints/")
    parser.add_argument("--warmup", type=int, default=200,
                        help="requests of the same mix, all clients at once, before the memory baseline")
    parser.add_argument("--explain-share", type=float, default=0.15, help="fraction of requests sent to /explain")
    parser.add_argument("--max-growth-mb", type=float, default=50.0, help="allowed server memory growth, MB")
    parser.add_argument("--max-rss-mb", type=float, default=1200.0, help="allowed server memory at the end, MB")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take")
    parser.add_argument("--session-per-client", action="store_true",
                        help="each client thread keeps one Gradio session, as gradio_client does; default: none, "
                             "so every request opens a new session, as curl or a bare HTTP client does")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the summary and every request's outcome as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.clients < 1 or args.warmup < 0:
        parser.error("--requests and --clients must be at least 1, --warmup at least 0")

    archs = [a for a in args.archs.split(",") if a] or _checkpointed(
        Path(os.environ.get("CHECKPOINT_DIR", ROOT / "checkpoints")))
    unknown = sorted(set(archs) - set(list_models()))
    if unknown or not archs:
        parser.error(f"no architectures to request, or unknown ones: {unknown}; known: {', '.join(list_models())}")

    with tempfile.TemporaryDirectory(prefix="soak_corpus_") as folder:
        corpus = write_corpus(folder)  # no oversize file: Gradio refuses it at upload, before the app sees it
        good = {u.name: u.path.read_bytes() for u in corpus if u.expect == "ok"}
        bad = {u.name: u.path.read_bytes() for u in corpus if u.expect == "error"}
    for path in sorted((ROOT / "examples").iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            good[path.name] = path.read_bytes()
    files = {**good, **bad}

    process, url, pid, startup = None, args.url, args.pid or None, None
    peak = PeakMemory(None)
    if not url:
        process, url, startup = _start_server()
        pid = process.pid
    report: dict = {"url": url, "startup_s": None if startup is None else round(startup, 1),
                    "requests": args.requests, "clients": args.clients, "warmup": args.warmup, "archs": archs,
                    "inputs": {"good_files": sorted(good), "bad_files": sorted(bad), "bad_names": BAD_NAMES}}
    try:
        caller = Caller(url, args.timeout, args.session_per_client)
        report["rss_mb_start"] = rss_mb(pid) if pid else None
        peak = PeakMemory(pid).start()
        # Warm-up: every architecture on both endpoints, every file once, then --warmup requests of the same
        # mix at full concurrency, so that loading models, caches and the allocator's per-thread pools come
        # before the memory baseline.
        warmup = [Request(-1, api, arch, sorted(good)[0], "") for arch in archs for api in ("predict", "explain")]
        warmup += [Request(-1, "predict", archs[0], name, "" if name in good else "upload") for name in files]
        run_requests(caller, warmup, files, 1, "warm-up", not args.no_progress)
        burst = plan(args.warmup, archs, good, bad, args.explain_share, args.seed + 1)
        run_requests(caller, burst, files, args.clients, "warm-up burst", not args.no_progress)
        report["rss_mb_before"] = rss_mb(pid) if pid else None

        requests = plan(args.requests, archs, good, bad, args.explain_share, args.seed)
        start = time.monotonic()
        run_requests(caller, requests, files, args.clients, "soak", not args.no_progress)
        report["wall_s"] = round(time.monotonic() - start, 1)
        report["rss_mb_after"] = rss_mb(pid) if pid else None

        final = Request(-1, "predict", archs[0], sorted(good)[0], "")
        run_requests(caller, [final], files, 1, "after", progress=False)
        alive = final.outcome == "ok" and (process is None or process.poll() is None)
    finally:
        peak.stop()
        readings = [v for v in (peak.peak_mb, report.get("rss_mb_start"), report.get("rss_mb_before"),
                                report.get("rss_mb_after")) if v is not None]
        report["rss_mb_peak"] = round(max(readings), 1) if readings else None
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)  # the server this script started, nothing else
            process.wait(timeout=30)

    outcomes = {}
    for request in requests:
        outcomes[request.outcome] = outcomes.get(request.outcome, 0) + 1
    bad_ones = [r for r in requests if r.outcome not in ("ok", "clear_error")]
    warm_bad = [r for r in warmup + burst if r.outcome not in ("ok", "clear_error")]
    before, after = report["rss_mb_before"], report["rss_mb_after"]
    growth = None if before is None or after is None else round(after - before, 1)
    report.update({
        "outcomes": outcomes,
        "good": sum(not r.malformed for r in requests),
        "malformed": sum(bool(r.malformed) for r in requests),
        "rss_growth_mb": growth,
        "latency": {"all": percentiles([r.latency_ms for r in requests], digits=1),
                    **{f"{api} {kind}": percentiles([r.latency_ms for r in requests if r.api == api
                                                     and bool(r.malformed) == (kind == "malformed")], digits=1)
                       for api in ("predict", "explain") for kind in ("good", "malformed")}},
    })
    report["checks"] = {
        "every good request answered": not any(r.outcome == "failed" for r in requests),
        "every malformed request got the app's clear message":
            not any(r.outcome in ("unclear_error", "accepted_malformed") for r in requests),
        "warm-up answered as expected": not warm_bad,
        "server alive and answering at the end": alive,
    }
    if pid:  # measured whenever the server's process is known
        report["checks"][f"memory growth under {args.max_growth_mb:g} MB"] = (growth is not None
                                                                              and growth < args.max_growth_mb)
        report["checks"][f"memory at the end at most {args.max_rss_mb:g} MB"] = (after is not None
                                                                                 and after <= args.max_rss_mb)
    report["passed"] = all(report["checks"].values())
    report["problems"] = [asdict(r) for r in (warm_bad + bad_ones)[:50]]

    lat = report["latency"]["all"]
    print(f"\n{len(requests)} requests from {args.clients} clients in {report['wall_s']} s against {url} "
          f"({report['good']} good, {report['malformed']} malformed; architectures: {', '.join(archs)})")
    print(f"inputs: {len(good)} real images, {len(bad)} bad uploads, {len(BAD_NAMES)} bad names")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"latency (upload to answer): p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms, "
          f"max {lat.get('max_ms')} ms")
    for key, value in report["latency"].items():
        if key != "all" and value["n"]:
            print(f"  {key:18s} n={value['n']:4d}  p50 {value['p50_ms']:8.1f} ms  p95 {value['p95_ms']:8.1f} ms")
    print(f"server memory (RSS): start {_mb(report['rss_mb_start'])}, after warm-up {_mb(before)}, end {_mb(after)}, "
          f"peak {_mb(report['rss_mb_peak'])} MB (growth {growth} MB)" if pid
          else "server memory: not measured (give --pid with --url)")
    for name, passed in report["checks"].items():
        print(f"  [{'ok' if passed else 'FAILED'}] {name}")
    for problem in report["problems"][:10]:
        print(f"  problem: {problem['api']} {problem['arch']!r} {problem['file']}: {problem['outcome']} "
              f"{problem['message'][:160]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**report, "results": [asdict(r) for r in requests]}, indent=1))
        print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
