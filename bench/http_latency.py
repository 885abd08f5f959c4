"""Latency of the running app through HTTP, as a client sees it (a benchmark, not a test).

    python bench/http_latency.py                 # starts `python app.py` on a free port, measures, stops it
    python bench/http_latency.py --url http://127.0.0.1:7860/   # measures a server that is already running

Reports the time from process start to the first answer, then p50/p95 of /predict for every architecture
with a checkpoint, of /explain (default settings) and of /compare, each over ``--repeats`` calls after
one warm-up call. Targets from the app issue, on the 2-core CPU: /predict p50 <= 50 ms, /explain <= 150 ms,
/compare <= 1 s, answering within 10 s of start.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server() -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    start = time.monotonic()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url, time.monotonic() - start
        except httpx.HTTPError:
            time.sleep(0.1)


def _time(call, repeats: int) -> dict:
    call()  # warm-up: loads the model, fills caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1), "n": repeats}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="", help="a running server; default: start app.py")
    parser.add_argument("--image", default="", help="image to send; default: the first example")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compare-repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from architectures import list_models

    image = args.image or str(sorted((ROOT / "examples").glob("*.jpg"))[0])
    process, startup = None, None
    url = args.url
    if not url:
        process, url, startup = _start_server()
    try:
        client = Client(url, verbose=False)
        report = {"startup_s": None if startup is None else round(startup, 1), "image": Path(image).name,
                  "predict": {}, "explain": {}}
        for name in list_models():
            try:
                client.predict(handle_file(image), name, api_name="/predict")
            except Exception as error:  # no checkpoint: say so and go on
                report["predict"][name] = f"unavailable: {str(error)[:80]}"
                continue
            report["predict"][name] = _time(lambda: client.predict(handle_file(image), name, api_name="/predict"),
                                            args.repeats)
            report["explain"][name] = _time(lambda: client.predict(handle_file(image), name, api_name="/explain"),
                                            max(3, args.repeats // 4))
        report["compare"] = _time(lambda: client.predict(handle_file(image), api_name="/compare"),
                                  args.compare_repeats)
        print(json.dumps(report, indent=2))
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)  # the server this script started, nothing else
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
