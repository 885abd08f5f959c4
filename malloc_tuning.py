"""glibc malloc settings for the app's server process, set before any server thread starts (see ``tune_malloc``).

Kept out of ``app.py`` so the app file stays layout and wiring; it imports nothing heavy, so ``app.py`` can
call it before torch and Gradio are imported.
"""
from __future__ import annotations

import ctypes
import os
import sys


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
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt's parameter numbers in glibc's malloc.h; setting either threshold stops its dynamic growth.
        for variable, number, value in (("MALLOC_ARENA_MAX", -8, arenas), ("MALLOC_MMAP_THRESHOLD_", -3, mmap_threshold),
                                        ("MALLOC_TRIM_THRESHOLD_", -1, trim_threshold)):
            if not os.environ.get(variable):
                libc.mallopt(number, value)
    except (OSError, AttributeError):
        pass  # another C library (musl): nothing to tune
