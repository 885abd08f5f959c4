"""ZeroGPU: a Hugging Face Space that borrows a GPU only while a handler runs.

On ZeroGPU hardware the Space sets ``SPACES_ZERO_GPU``; the ``spaces`` package then emulates CUDA in the
main process (``.to("cuda")`` at start-up is recorded, and the weights are packed when Gradio launches) and
runs each function decorated with ``spaces.GPU`` in a forked worker that holds a real GPU for that call.
So every model must be on CUDA before the launch (``preload``): one loaded inside a call lives in the
worker and is lost with it; arguments and results cross the process boundary by pickle, so a handler
returns images, tables and floats, never a CUDA tensor. Elsewhere ``spaces.GPU`` returns the function
itself: on a CPU Space or a dedicated GPU the handlers are the plain functions, with no cost per request.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def on_zerogpu() -> bool:
    """Whether this process runs on ZeroGPU: ``SPACES_ZERO_GPU`` read as ``spaces.config`` reads it."""
    value = os.environ.get("SPACES_ZERO_GPU")
    return value is not None and value.lower() in ("1", "t", "true")


if on_zerogpu():
    # Before anything touches CUDA: `spaces` patches torch to emulate it and refuses to start once CUDA is
    # initialised. Importing torch is harmless; app.py imports this module before building the store.
    import spaces  # noqa: F401


def gpu(duration: int) -> Callable[[F], F]:
    """``spaces.GPU(duration=duration)`` when the ``spaces`` package imports, else nothing.

    ``duration`` (seconds) is what ZeroGPU checks against the visitor's remaining daily quota before it
    schedules the call; only the time used is charged, and a shorter request gets a place sooner in the
    queue. The returned function carries it as ``gpu_duration``; ``functools.wraps`` keeps the signature
    that Gradio reads (a ``gr.Progress()`` default still gets injected).
    """
    if duration <= 0:
        raise ValueError(f"a GPU duration is a positive number of seconds, got {duration}")

    def decorate(fn: F) -> F:
        try:
            import spaces
        except ImportError:
            decorated = fn  # a checkout without `spaces` installed runs everywhere but on ZeroGPU
        else:
            decorated = spaces.GPU(duration=duration)(fn)
        decorated.gpu_duration = duration
        return decorated

    return decorate


def preload(store) -> list[str]:
    """Load every available checkpoint and its random-weights twin onto ``store.device``, and import the CAM
    library, in the main process before the launch: on ZeroGPU that is where the workers fork from and
    where the weights get packed for the GPU. Returns the architectures loaded."""
    import explain

    from .store import ModelUnavailable

    loaded_names = []
    for name in store.available(fetch=bool(store.repo)):
        try:
            store.random_twin(store.get(name))
        except ModelUnavailable as error:
            # The app still serves it, loaded inside each call (and lost after): slower, so say so in the log.
            print(f"ZeroGPU preload: {error}", file=sys.stderr)
            continue
        loaded_names.append(name)
    explain.warm_up()
    return loaded_names
