"""Talking to a running ``app.py`` over plain HTTP, as curl or a browser does: a free port, waiting for the
first answer, and reading Gradio's event streams. Shared by the tests, the benchmarks and the Space dry run."""
from __future__ import annotations

import socket
import subprocess
import time

import httpx


class AppDidNotStart(RuntimeError):
    """The app exited, or did not answer in time; the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process: subprocess.Popen, url: str, timeout_s: float, poll_s: float = 0.2) -> float:
    """Seconds until ``url`` answers 200; ``AppDidNotStart`` if ``process`` exits first or time runs out."""
    start = time.monotonic()
    while True:
        if process.poll() is not None:
            raise AppDidNotStart(f"app.py exited with {process.returncode} before answering")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        if time.monotonic() - start > timeout_s:
            raise AppDidNotStart(f"app.py did not answer within {timeout_s:.0f} s")
        time.sleep(poll_s)


def read_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream's whole text."""
    return list(iter_events(text.splitlines()))


def iter_events(lines):
    """(event, data) pairs of a server-sent event stream's lines, each as soon as its data line is read."""
    kind = None
    for line in lines:
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:") and kind is not None:
            yield kind, line[5:].strip()
            kind = None
