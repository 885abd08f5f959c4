"""Latency of the running app through HTTP, as a client sees it (a benchmark, not a test).

    python bench/http_latency.py                 # starts `python app.py` on a free port, measures, stops it
    python bench/http_latency.py --url http://127.0.0.1:7860/   # measures a server that is already running
    python bench/http_latency.py --pair vgg,resnet --url ...     # only: two clients, two architectures' /explain
    python bench/http_latency.py --url URL --versus URL2 --repeats 12   # only: /explain, /compare, two servers

Plain HTTP, as a browser or curl does (upload, then Gradio's ``/gradio_api/call/<api>`` and its event
stream): gradio_client adds about 70 ms of its own per call. Reports the time from process start to the
first answer, then p50/p95 of /predict for every architecture
with a checkpoint, of /explain (default settings), of /inside (every stage's maps) and of /compare, each over
``--repeats`` calls after one warm-up call. Every call uploads a fresh copy of the image (the same pixels in a
new file, ``fresh_copies``), so that no answer can come from what the app keeps for an upload; what such a redraw
costs (/explain of the same upload again, at another opacity; /predict of the same upload again) is
``again_p50_ms``. /explain and /compare
answer in steps (the map, then its verdict; every map, then every verdict), so for those also the p50 of the
first step (``first_p50_ms``) and, for /compare, of the step with every map (``maps_p50_ms``). Targets from the
app issues, on the 2-core CPU: /predict p50 <= 50 ms, /explain <= 150 ms, /inside <= 3x /predict
(``inside_vs_predict``), /compare <= 1 s, answering within 10 s.

``--pair a,b`` measures only whether two visitors explaining different architectures wait for each other
(``pair_run``): each architecture's /explain alone, then both at once from two clients, a fresh upload each call.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import cpu_seconds, percentiles, wait_until_idle  # noqa: E402  (bench/ is on sys.path when this file runs)

from tools.app_http import AppDidNotStart, free_port, iter_events, wait_until_answering  # noqa: E402


def _start_server() -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_answering(process, url, timeout_s=600, poll_s=0.1)
    except AppDidNotStart as error:
        raise SystemExit(str(error)) from None
    return process, url, time.monotonic() - start


class Caller:
    """Upload + call + event stream over plain HTTP, one httpx client per thread."""

    def __init__(self, url: str, timeout: float, session_per_client: bool = False):
        self.url, self.timeout, self.session_per_client = url.rstrip("/") + "/", timeout, session_per_client
        self._local = threading.local()
        info = httpx.get(f"{self.url}gradio_api/info", timeout=30).json()["named_endpoints"]
        # Every parameter's default: the raw call API wants every input, where gradio_client fills them in.
        self.defaults = {api[1:]: [p.get("parameter_default") for p in endpoint["parameters"]]
                         for api, endpoint in info.items()}

    def _client(self) -> httpx.Client:
        if not hasattr(self._local, "client"):
            self._local.client = httpx.Client(timeout=self.timeout)
            self._local.session = uuid.uuid4().hex[:11] if self.session_per_client else None
        return self._local.client

    def call(self, api: str, name: str, data: bytes | None, arch: str | None, settings: tuple = (),
             uploaded_path: str | None = None) -> tuple[str, str]:
        """("complete", data) or ("error", message or "null") or ("http", status and body).

        ``settings`` replace the endpoint's defaults of the inputs after the architecture, in order. The
        milliseconds from the call's start to each step of the answer (each "generating" event, then
        "complete") and the step's data are left in ``steps`` (one list per thread), the uploaded file's path on
        the server in
        ``uploaded_path``; give that path instead of ``data`` to send the same upload again, as the page does
        when a setting changes."""
        client = self._client()
        start = time.perf_counter()
        self._local.steps = []
        if uploaded_path is None:
            uploaded = client.post(f"{self.url}gradio_api/upload", files=[("files", (name, data))])
            if uploaded.status_code != 200:
                return "http", f"upload {uploaded.status_code}: {uploaded.text[:200]}"
            uploaded_path = uploaded.json()[0]
        self._local.uploaded_path = uploaded_path
        # (image, architecture, settings...) for /predict and /explain; (image,) for /compare. An endpoint that
        # /info leaves out (undocumented, such as /describe) has no defaults there: it gets what is given.
        file = {"path": uploaded_path, "meta": {"_type": "gradio.FileData"}}
        inputs = [file, *self.defaults[api][1:]] if api in self.defaults else [file, *([arch] if arch else [])]
        first = 1  # the settings follow the image, and the architecture where the endpoint takes one
        if arch is not None:
            inputs[1], first = arch, 2
        inputs[first:first + len(settings)] = settings
        payload = {"data": inputs}
        if self._local.session:  # as gradio_client does: one session for all of this client's calls
            payload["session_hash"] = self._local.session
        started = client.post(f"{self.url}gradio_api/call/{api}", json=payload)
        if started.status_code != 200:
            return "http", f"call {started.status_code}: {started.text[:200]}"
        with client.stream("GET", f"{self.url}gradio_api/call/{api}/{started.json()['event_id']}") as stream:
            for kind, body in iter_events(stream.iter_lines()):
                if kind in ("generating", "complete"):
                    self._local.steps.append(((time.perf_counter() - start) * 1000, body))
                if kind == "complete":
                    return "complete", body
                if kind == "error":
                    try:
                        message = json.loads(body)
                        message = message.get("error") if isinstance(message, dict) else message
                    except ValueError:
                        message = body
                    return "error", "null" if message is None else str(message)
        return "http", f"stream {stream.status_code} ended without an answer"

    @property
    def steps(self) -> list[tuple[float, str]]:
        """This thread's last call: (milliseconds to it, its data as JSON) for each step of its answer."""
        return getattr(self._local, "steps", [])

    @property
    def uploaded_path(self) -> str | None:
        """This thread's last call: where its upload lies on the server."""
        return getattr(self._local, "uploaded_path", None)


def fresh_copies(path: str) -> Iterator[bytes]:
    """The image again and again, each copy a new file whose answer the app cannot have kept from an earlier
    call, with the same pixels: a JPEG gets a comment segment naming the copy after its start marker, any
    other image is sent as a PNG with that name in a text chunk."""
    data = Path(path).read_bytes()
    if data[:2] == b"\xff\xd8":  # JPEG: SOI, then a COM segment (marker, big-endian length including itself)
        for serial in itertools.count(1):
            comment = f"copy {serial}".encode()
            yield data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
    from PIL import Image, PngImagePlugin

    with Image.open(path) as opened:
        pixels = opened.copy()
    for serial in itertools.count(1):
        info = PngImagePlugin.PngInfo()
        info.add_text("copy", str(serial))
        buffer = BytesIO()
        pixels.save(buffer, "PNG", pnginfo=info)
        yield buffer.getvalue()


def _time(call, repeats: int, steps: dict | None = None) -> dict:
    """p50/p95 of ``call()`` (which returns ``Caller.steps``: the milliseconds from its upload to each step of
    the answer, the last being the whole answer, and each step's data) after one warm-up call; with ``steps``
    ({name: function of that list, returning milliseconds}) also each such step's p50."""
    call()  # warm-up: loads the model, fills caches
    times, stepped = [], {name: [] for name in steps or {}}
    for _ in range(repeats):
        answer = call()
        times.append(answer[-1][0])
        for name, pick in (steps or {}).items():
            stepped[name].append(pick(answer))
    figures = percentiles(times, digits=1)
    return {"p50_ms": figures["p50_ms"], "p95_ms": figures["p95_ms"], "n": repeats,
            **{f"{name}_p50_ms": round(statistics.median(values), 1) for name, values in stepped.items()}}


def load_run(caller: Caller, name: str, uploads: list[bytes], clients: int, calls: int, single: dict,
             server_pid: int | None = None) -> dict:
    """``clients`` threads each sending ``calls`` /predict requests at once, round-robin over the
    architectures, each call a fresh upload of ``uploads`` (clients x calls of them): failures, total throughput
    against one client's (1000 / its p50), and the p95 under
    load against 10x one client's p50 (queueing is expected on two cores; starving is not).

    Also the CPU time per request of the server (``server_pid``) and of these client threads, which share
    the machine's cores with it: what the clients use, the server cannot."""
    archs = [arch for arch, figures in single.items() if isinstance(figures, dict)]
    if not archs:
        return {"error": "no architecture answered"}

    def client(index: int) -> tuple[list[float], int]:
        times, failures = [], 0
        for call in range(calls):
            started = time.perf_counter()
            kind, _ = caller.call("predict", name, uploads[index * calls + call], archs[(index + call) % len(archs)])
            times.append((time.perf_counter() - started) * 1000)
            failures += kind != "complete"
        return times, failures

    client_cpu, server_cpu = cpu_seconds(), cpu_seconds(server_pid) if server_pid else None
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    client_cpu = cpu_seconds() - client_cpu
    server_cpu = None if server_cpu is None else cpu_seconds(server_pid) - server_cpu
    under_load = percentiles([t for result in results for t in result[0]], digits=1)
    single_p50 = statistics.median(single[arch]["p50_ms"] for arch in archs)
    n = under_load["n"]
    return {"clients": clients, "requests": n, "failed": sum(r[1] for r in results),
            "throughput_rps": round(n / wall, 1), "single_client_rps": round(1000 / single_p50, 1),
            "p50_ms": under_load["p50_ms"], "p95_ms": under_load["p95_ms"], "p95_limit_ms": round(10 * single_p50, 1),
            "wall_s": round(wall, 2), "client_cpu_ms_per_request": round(1000 * client_cpu / n, 1),
            "server_cpu_ms_per_request": None if server_cpu is None else round(1000 * server_cpu / n, 1)}


def pair_run(caller: Caller, name: str, copies: Iterator[bytes], archs: list[str], rounds: int) -> dict:
    """/explain of each of ``archs`` alone (``rounds`` calls each, after one warm-up), then of all of them at once
    from one client each (``rounds`` rounds), every call a fresh upload. ``waiting_share`` places a round's wall
    time between running side by side (0: the longest alone) and one after the other (1: the sum of the alone
    times): near 1, the explanations of different architectures wait for each other."""
    def explain_once(job: tuple[str, bytes]) -> float:
        arch, data = job
        kind, body = caller.call("explain", name, data, arch)
        if kind != "complete":
            raise RuntimeError(f"/explain {arch}: {kind}: {body[:160]}")
        return caller.steps[-1][0]

    alone = {}
    for arch in archs:
        explain_once((arch, next(copies)))  # warm-up: loads the model and its twin
        alone[arch] = statistics.median(explain_once((arch, next(copies))) for _ in range(rounds))
    together, walls = {arch: [] for arch in archs}, []
    with ThreadPoolExecutor(len(archs)) as pool:
        for _ in range(rounds):
            jobs = [(arch, next(copies)) for arch in archs]
            started = time.perf_counter()
            for arch, ms in zip(archs, pool.map(explain_once, jobs)):
                together[arch].append(ms)
            walls.append((time.perf_counter() - started) * 1000)
    wall, longest, total = statistics.median(walls), max(alone.values()), sum(alone.values())
    return {"archs": archs, "rounds": rounds, "alone_p50_ms": {arch: round(ms, 1) for arch, ms in alone.items()},
            "together_p50_ms": {arch: round(statistics.median(ms), 1) for arch, ms in together.items()},
            "round_wall_p50_ms": round(wall, 1),
            "waiting_share": round((wall - longest) / (total - longest), 2) if total > longest else None}


def versus_run(ours: Caller, theirs: Caller, name: str, copies: Iterator[bytes], archs: list[str], rounds: int,
               compare_rounds: int) -> dict:
    """/explain of each of ``archs`` and /compare on two running servers (say, this commit's and an older one's),
    call by call in turn, every call a fresh upload: whatever else the machine is doing falls on both alike. The
    p50 of the whole answer and of its first step (the map; for /compare, the predictions), per server."""
    def once(caller: Caller, api: str, arch: str | None) -> list[tuple[float, str]]:
        kind, body = caller.call(api, name, next(copies), arch)
        if kind != "complete":
            raise RuntimeError(f"/{api} {arch or ''}: {kind}: {body[:160]}")
        return caller.steps

    def p50s(samples: list) -> dict:
        return {"p50_ms": round(statistics.median(s[-1][0] for s in samples), 1),
                "first_p50_ms": round(statistics.median(s[0][0] for s in samples), 1)}

    result = {"ours": {}, "theirs": {}}
    jobs = [("explain", arch, rounds) for arch in archs] + [("compare", None, compare_rounds)]
    for api, arch, count in jobs:
        samples = {"ours": [], "theirs": []}
        for caller in (ours, theirs):
            once(caller, api, arch)  # warm-up: loads the model and its twin
        for _ in range(count):
            for side, caller in (("ours", ours), ("theirs", theirs)):
                samples[side].append(list(once(caller, api, arch)))
        for side in samples:
            result[side][arch or "compare"] = p50s(samples[side])
    explained = [result[side] for side in ("ours", "theirs")]
    result["explain_median_p50_ms"] = {side: statistics.median(r[a]["p50_ms"] for a in archs)
                                       for side, r in zip(("ours", "theirs"), explained)}
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="", help="a running server; default: start app.py")
    parser.add_argument("--pid", type=int, default=0, help="with --url: the server's process id, for its CPU time")
    parser.add_argument("--image", default="", help="image to send; default: the first example")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compare-repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the load run; 0 skips it")
    parser.add_argument("--load-calls", type=int, default=20, help="/predict calls per client in the load run")
    parser.add_argument("--pair", default="", help="comma-separated architectures: measure only their /explain "
                                                   "alone and side by side (pair_run)")
    parser.add_argument("--versus", default="", help="a second running server (say, an older commit's): only "
                                                     "/explain and /compare on both, call by call in turn")
    args = parser.parse_args(argv)

    from architectures import list_models

    image = args.image or str(sorted((ROOT / "examples").glob("*.jpg"))[0])
    process, startup = None, None
    url = args.url
    if not url:
        process, url, startup = _start_server()
    try:
        caller = Caller(url, timeout=120, session_per_client=True)
        name_sent = Path(image).name
        copies = fresh_copies(image)

        def call(api: str, arch: str | None = None, settings: tuple = (),
                 uploaded_path: str | None = None) -> list[tuple[float, str]]:
            kind, body = caller.call(api, name_sent, None if uploaded_path else next(copies), arch, settings,
                                     uploaded_path)
            if kind != "complete":
                raise RuntimeError(f"/{api} {arch or ''}: {kind}: {body[:160]}")
            return caller.steps

        def explain_again(arch: str) -> list[tuple[float, str]]:
            """/explain of a new upload, then of the same upload at another opacity, as the page sends it when
            the slider moves: the second call's steps."""
            call("explain", arch)
            # method, layer, target, opacity: the defaults but the opacity
            return call("explain", arch, ("recommended", 99, "predicted", 0.7), caller.uploaded_path)

        first = {"first": lambda steps: steps[0][0]}
        # /compare's steps: the predictions, then the maps, then the verdicts; "maps": the first step whose
        # gallery (its second output) holds as many maps as the whole answer's.
        every_map = {**first, "maps": lambda steps: next(
            ms for ms, data in steps if len(json.loads(data)[1]) == len(json.loads(steps[-1][1])[1]))}

        if args.versus:
            report = {"image": Path(image).name, "ours": url, "theirs": args.versus,
                      "versus": versus_run(caller, Caller(args.versus, timeout=120, session_per_client=True),
                                           name_sent, copies, list_models(), max(3, args.repeats // 4),
                                           args.compare_repeats)}
            print(json.dumps(report, indent=2))
            return
        if args.pair:
            report = {"startup_s": None if startup is None else round(startup, 1), "image": Path(image).name,
                      "idle_wait_s": round(wait_until_idle(process.pid if process else (args.pid or None)), 1)}
            report["pair"] = pair_run(caller, name_sent, copies, args.pair.split(","), max(3, args.repeats // 4))
            print(json.dumps(report, indent=2))
            return
        report = {"startup_s": None if startup is None else round(startup, 1), "image": Path(image).name,
                  "predict": {}, "explain": {}, "inside": {}, "inside_vs_predict": {}}
        # The app imports the CAM library in the background once it answers. A first /explain by a CAM would
        # wait for it, but one whose default is occlusion does not (the basic ConvNet's, the first): wait
        # until the server is idle, or the first architecture's calls share the CPU with the import (its
        # /predict measured 58-74 ms instead of about 30 on a 2-core AMD EPYC).
        for name in list_models():
            try:
                call("explain", name)
                break
            except RuntimeError:
                continue
        report["idle_wait_s"] = round(wait_until_idle(process.pid if process else (args.pid or None)), 1)
        for name in list_models():
            try:
                call("predict", name)
            except RuntimeError as error:  # no checkpoint: say so and go on
                report["predict"][name] = f"unavailable: {str(error)[:80]}"
                continue
            # Each timed call has this architecture bound (arch=name) instead of reading the loop variable later.
            report["predict"][name] = _time(lambda arch=name: call("predict", arch), args.repeats)
            report["predict"][name]["again_p50_ms"] = _time(
                lambda arch=name: call("predict", arch, uploaded_path=caller.uploaded_path), args.repeats)["p50_ms"]
            report["explain"][name] = _time(lambda arch=name: call("explain", arch), max(3, args.repeats // 4), first)
            report["explain"][name]["again_p50_ms"] = _time(lambda arch=name: explain_again(arch), 3)["p50_ms"]
            report["inside"][name] = _time(lambda arch=name: call("inside", arch), max(3, args.repeats // 4))
            report["inside_vs_predict"][name] = round(report["inside"][name]["p50_ms"]
                                                      / report["predict"][name]["p50_ms"], 2)
        report["compare"] = _time(lambda: call("compare"), args.compare_repeats, every_map)
        if args.clients:
            uploads = [next(copies) for _ in range(args.clients * args.load_calls)]
            report["load"] = load_run(caller, name_sent, uploads, args.clients, args.load_calls, report["predict"],
                                      args.pid or (process.pid if process is not None else None))
        print(json.dumps(report, indent=2))
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)  # the server this script started, nothing else
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
