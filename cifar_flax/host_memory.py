"""Keep freed host memory for reuse, so that XLA's CPU backend stops re-faulting its buffers.

XLA's CPU runtime allocates every step's buffers with malloc and frees them after it. glibc
serves large blocks with mmap and unmaps them on free, so the next step page-faults and zeroes
its memory again, in kernel time comparable to the computing itself. glibc's tunables turn that
off (heap only, never trimmed, one arena, transparent huge pages), at the cost of a larger peak
RSS (memory is never handed back); docs/performance.md has the measurements. The tunables are
read when a process starts, hence the restart of the program under them.
"""

from __future__ import annotations

import os
import sys

TUNABLES = ":".join(
    (
        "glibc.malloc.hugetlb=1",  # madvise transparent huge pages: fewer TLB misses
        "glibc.malloc.arena_max=1",  # every thread in the main heap: the one that can grow
        "glibc.malloc.mmap_max=0",  # no block in a mapping of its own, which free unmaps
        "glibc.malloc.trim_threshold=68719476736",  # nor handing the heap's top back (64 GiB)
    )
)


def uses_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not Linux, or a libc without the name
        return False


def restart_reusing_freed_memory() -> None:
    """Restart the running program (same PID, arguments and environment) under `TUNABLES`.

    Returns without restarting where the C library is not glibc, or where GLIBC_TUNABLES is
    already set: by this restart, or by a user who wants other settings (`GLIBC_TUNABLES=`
    keeps glibc's defaults). Call it first thing: whatever the program did before is lost.
    """
    if "GLIBC_TUNABLES" in os.environ or not uses_glibc():
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
