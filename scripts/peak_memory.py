r"""Peak memory of a command's whole process tree: the summed PSS of it and all its children.

    python scripts/peak_memory.py [--every=0.5] -- python -m cifar_flax.main --config=configs/s9.py

Runs the command, samples every --every seconds the proportional set size (PSS, which splits a
page shared by several processes between them, so that the sum counts it once) of the command's
process and every descendant (the augmentation workers), and prints the peak of the sum, the
peak of the largest process alone, and the command's wall time. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

PROC = pathlib.Path("/proc")


def children(pid: int) -> list[int]:
    try:
        tasks = (PROC / str(pid) / "task").iterdir()
        found = []
        for task in tasks:
            found += [int(child) for child in (task / "children").read_text().split()]
        return found
    except OSError:  # the process has just ended
        return []


def tree(pid: int) -> list[int]:
    pids, pending = [], [pid]
    while pending:
        current = pending.pop()
        pids.append(current)
        pending += children(current)
    return pids


def pss_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("error: give the command after --")
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak_tree = peak_single = 0
    while process.poll() is None:
        sizes = [pss_kib(pid) for pid in tree(process.pid)]
        peak_tree = max(peak_tree, sum(sizes))
        peak_single = max(peak_single, max(sizes, default=0))
        time.sleep(args.every)
    seconds = time.perf_counter() - started
    print(
        f"peak_tree_pss_gb={peak_tree / 2**20:.2f} peak_process_pss_gb={peak_single / 2**20:.2f} "
        f"seconds={seconds:.1f} returncode={process.returncode}",
        file=sys.stderr,
    )
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
