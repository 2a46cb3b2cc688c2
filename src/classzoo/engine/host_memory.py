"""Host memory of a process that computes on the CPU: huge pages, and freed memory kept.

Why (2-core AMX VM, glibc 2.36, ResNet-50 training step, batch 16, bf16, channels_last):
PyTorch's CPU allocator has no cache. Every activation of a step is a fresh ``posix_memalign``
that glibc gives back to the kernel when it is freed, so each step faults in its ~2 GB of
activations again, 4 KiB page by 4 KiB page (31,000-94,000 minor page faults per step measured),
and oneDNN's kernels walk them through 4 KiB TLB entries. Two settings remove that, neither
changes a value computed:

- ``THP_MEM_ALLOC_ENABLE=1`` (read by PyTorch's ``c10/core/alloc_cpu.cpp`` once, at its first
  CPU allocation, so :func:`prefer_huge_pages` runs before ``import torch``): allocations of
  2 MiB or more are 2 MiB-aligned and ``madvise(MADV_HUGEPAGE)``'d (the kernel's THP mode
  ``madvise``, the common default, honours exactly that);
- glibc ``mallopt``: no ``mmap`` and no trimming of the heap below 2 GiB (the most its C ``int``
  argument can say), so a freed activation's pages (huge ones included) serve the next step
  without a fault (:func:`keep_freed_memory`). The process keeps its peak memory instead of
  returning it between steps, as jemalloc and tcmalloc (Intel's advice for CPU training) do.
  Measured: glibc keeps a freed 2 MiB-aligned block but
  still returns a 64-byte-aligned one (PyTorch's alignment without huge pages), so the two
  settings work together: tests/test_host_memory.py.

Measured together (docs/benchmarks.md, session 4): 0-330 faults per step instead of
31,000-94,000; up to 1.3x the images/s in single-process runs, 0.91x-1.07x through
benchmarks/bench_train_step.py (this VM's rounds vary by +-30 %); peak resident memory 2.5
instead of 2.0 GB (``classzoo bench --model resnet50 -b 16``).
``CLASSZOO_HOST_MEMORY=default`` leaves both as they are; so does a user's own
``THP_MEM_ALLOC_ENABLE``, glibc malloc variables or a preloaded allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPT_OUT = "CLASSZOO_HOST_MEMORY"  # "default": leave PyTorch's and glibc's defaults
THP_ENV = "THP_MEM_ALLOC_ENABLE"
_SET_BY_US = "_CLASSZOO_SET_THP"  # inherited by child processes (torchrun ranks, workers)
_GLIBC_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
# glibc malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST = 2**31 - 1  # mallopt's value is a C int

_state = {"huge_pages": "PyTorch's default", "kept": "glibc's default"}


def _opted_out() -> bool:
    return os.environ.get(OPT_OUT, "").lower() == "default"


def prefer_huge_pages() -> None:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the user set it or opted out. Call it before
    anything imports torch (``classzoo/__init__.py``); too late once torch is loaded."""
    ours = os.environ.get(_SET_BY_US) == "1" and os.environ.get(THP_ENV) == "1"
    if _opted_out():
        _state["huge_pages"] = f"off ({OPT_OUT}=default)"
    elif ours:  # set by the classzoo process that started this one
        _state["huge_pages"] = "2 MiB pages for tensors >= 2 MiB"
    elif THP_ENV in os.environ:
        _state["huge_pages"] = f"{THP_ENV}={os.environ[THP_ENV]} (yours)"
    elif "torch" in sys.modules:
        _state["huge_pages"] = "off (torch was imported before classzoo)"
    else:
        os.environ[THP_ENV] = os.environ[_SET_BY_US] = "1"
        _state["huge_pages"] = "2 MiB pages for tensors >= 2 MiB"


def _glibc():
    """glibc's C library, or None (macOS, Windows, musl)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(device_type: str) -> None:
    """Ask glibc to keep freed memory for the next step when this process computes on the CPU
    (module docstring). Idempotent; does nothing but record why where it does not apply."""
    preload = os.environ.get("LD_PRELOAD", "")
    if device_type != "cpu":  # an accelerator's activations are not host memory
        return
    if _opted_out():
        _state["kept"] = f"off ({OPT_OUT}=default)"
    elif any(v in os.environ for v in _GLIBC_MALLOC_ENV) or "malloc" in os.environ.get(
        "GLIBC_TUNABLES", ""
    ):
        _state["kept"] = "off (your glibc malloc settings)"
    elif any(a in preload for a in _OTHER_ALLOCATORS):
        _state["kept"] = "off (LD_PRELOAD allocator)"
    elif (libc := _glibc()) is None:
        _state["kept"] = "off (not glibc)"
    elif libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST) and libc.mallopt(_M_TRIM_THRESHOLD, _LARGEST):
        _state["kept"] = "freed memory kept (glibc mallopt)"
    else:
        _state["kept"] = "off (glibc refused mallopt)"


def describe() -> str:
    """One line for the start-of-run log and resolved.yaml."""
    return f"{_state['huge_pages']}; {_state['kept']}"
