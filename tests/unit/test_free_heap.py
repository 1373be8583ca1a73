"""``ort_runtime.release_free_heap``: freed C-heap pages below a live chunk go back to the OS (RSS
falls), which glibc does not do on its own; measured on this process's own RSS."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from service.engine.ort_runtime import release_free_heap

BLOCK = 64 * 1024  # below glibc's mmap threshold: from the heap, not its own mapping
BLOCKS = 2048  # 128 MiB


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_freed_heap_pages_below_a_live_block_are_released() -> None:
    if not release_free_heap():
        pytest.skip("no glibc malloc_trim in this C library")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
    for b in blocks:
        ctypes.memset(b, 1, BLOCK)  # touch every page
    pin = libc.malloc(BLOCK)  # a live chunk above them: the heap top cannot shrink on its own
    for b in blocks:
        libc.free(b)
    held = rss_mb()
    assert release_free_heap()
    released = rss_mb()
    libc.free(pin)
    assert held - released > 0.75 * BLOCK * BLOCKS / 2**20, (held, released)
