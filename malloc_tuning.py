"""The app's server process's memory: glibc malloc settings (``tune_malloc``), handing the memory that its
requests freed back to the system (``release_freed_memory``, ``then_release``), and leaving out the GPU
compiler that the app never uses (``leave_out_triton``).

Kept out of ``app.py`` so the app file stays layout and wiring; it imports nothing heavy, so ``app.py`` can
call it before torch and Gradio are imported.
"""
from __future__ import annotations

import ctypes
import functools
import inspect
import logging
import os
import sys


@functools.cache
def _libc():
    """glibc, or None on another system or C library (musl): nothing to tune there."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def leave_out_triton() -> None:
    """Make ``import triton`` fail in this process, so torch treats Triton as not installed.

    torch's CUDA wheels install Triton, the compiler behind ``torch.compile``, and importing torchvision
    imports ``torch._dynamo``, which imports Triton whenever it is installed: resident memory and start-up
    time spent in a server that runs its models eagerly and compiles nothing. Training (``train/``), which
    may compile, does not call this. Call it before torch is imported; it leaves an already imported Triton
    alone.
    """
    sys.modules.setdefault("triton", None)
    # torch warns once, at import, that flop counting will miss Triton kernels: nothing here counts flops.
    logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)


def tune_malloc(arenas: int = 2, mmap_threshold: int = 32 * 2**20, trim_threshold: int = 64 * 2**20) -> None:
    """What ``MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=67108864`` do, for a
    server started without them.

    glibc gives each allocating thread its own arena and seldom returns their memory, so a busy server
    grows; two arenas bound that. A fixed 32 MB mmap threshold (with 64 MB kept free before trimming) lets
    each request's activations reuse the same heap pages instead of fresh zero-filled mappings, which
    roughly halves small models' latency (bench/soak.py and bench/http_latency.py measure both). It runs
    before any server thread starts, since only arenas made later are bounded. A no-op off glibc; a
    setting given in the environment is left alone.
    """
    libc = _libc()
    if libc is None:
        return
    # mallopt's parameter numbers in glibc's malloc.h; setting either threshold stops its dynamic growth.
    for variable, number, value in (("MALLOC_ARENA_MAX", -8, arenas), ("MALLOC_MMAP_THRESHOLD_", -3, mmap_threshold),
                                    ("MALLOC_TRIM_THRESHOLD_", -1, trim_threshold)):
        if not os.environ.get(variable):
            libc.mallopt(number, value)


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim(0)``; a no-op elsewhere).

    glibc returns only the top of each heap by itself: the pages of chunks freed below a live one stay
    resident. An explanation's backward passes free far more than a prediction allocates, so without this a
    server keeps its explanations' peak. It takes milliseconds, and the next requests fault their pages in
    again: the app calls it after the slow requests (``then_release``), not after each /predict.
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def then_release(handler):
    """``handler``, followed by ``release_freed_memory()`` whether it returns or raises; for a generator
    function (a handler that answers in steps), once its last step is done or it stops."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def steps(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            finally:
                release_freed_memory()
        return steps

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        finally:
            release_freed_memory()
    return wrapped
