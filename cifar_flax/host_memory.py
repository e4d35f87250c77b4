"""Huge pages for XLA's CPU buffers, so that a training step does not spend its time faulting.

XLA's CPU runtime allocates every step's buffers with malloc and frees them after it. glibc
serves large blocks with mmap and unmaps them on free, so the next step page-faults and zeroes
its memory again, 4 KiB at a time, in kernel time comparable to the computing itself. With
glibc's `hugetlb` tunable the mappings get transparent huge pages, and the faults almost vanish.
Tunables are read when a process starts, hence the restart of the program under them; it
happens only where JAX trains on the CPU (docs/performance.md has the measurements).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

# Transparent huge pages for what malloc maps (madvise): a fresh 2 MiB page per fault instead of
# 4 KiB cuts the faults about 500-fold, while freed memory still goes back to the system. Keeping
# every freed block instead (one arena, no mmap, no trimming) avoided the faults too, but the
# heap then only grew: s9_inverted_residual peaked at 10.5 GB against 3.7 (docs/performance.md).
TUNABLES = "glibc.malloc.hugetlb=1"


# JAX's accelerator plugins: where one is installed, JAX trains on the GPU or TPU, and host-side
# allocation is not what limits a step. Their names start with these.
ACCELERATOR_PACKAGES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def trains_on_the_cpu(installed: list[str] | None = None, platforms: str | None = None) -> bool:
    """Whether JAX will run on the CPU: JAX_PLATFORMS says so, or no accelerator plugin is
    installed (decided without importing JAX, which the restart must come before)."""
    platforms = os.environ.get("JAX_PLATFORMS", "") if platforms is None else platforms
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    if installed is None:
        installed = [dist.metadata["Name"] or "" for dist in importlib.metadata.distributions()]
    return not any(name.lower().startswith(ACCELERATOR_PACKAGES) for name in installed)


def uses_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not Linux, or a libc without the name
        return False


def restart_reusing_freed_memory() -> None:
    """Restart the running program (same PID, arguments and environment) under `TUNABLES`.

    Returns without restarting where JAX will not train on the CPU, where the C library is not
    glibc, or where GLIBC_TUNABLES is already set: by this restart, or by a user who wants other
    settings (`GLIBC_TUNABLES=` keeps glibc's defaults). Call it first thing: whatever the
    program did before is lost.
    """
    if "GLIBC_TUNABLES" in os.environ or not uses_glibc() or not trains_on_the_cpu():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [sys.executable, *sys.orig_argv[1:]],
        {
            **os.environ,
            "GLIBC_TUNABLES": TUNABLES,
        },
    )
