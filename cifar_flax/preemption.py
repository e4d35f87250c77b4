"""Stopping a run cleanly: SIGINT/SIGTERM end it after the current step, agreed on by every
process; the messages that say what was saved and where a resumed run takes up."""

from __future__ import annotations

import pathlib
import signal
import sys
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from cifar_flax.errors import RunInterruptedError


class StopSignals:
    """SIGINT/SIGTERM ask the run to stop after the current step; a second SIGINT quits at once.

    With several processes the request is shared every SYNC_EVERY steps and at epoch ends, so
    that all of them stop after the same step and save one checkpoint together.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    SYNC_EVERY = 20

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"{signal.Signals(signum).name}: stopping after this step to save a checkpoint "
            "(Ctrl-C again quits without saving)",
            file=sys.stderr,
            flush=True,
        )

    def requested(self, step_index: int | None = None) -> bool:
        """Whether to stop now; `step_index` None marks an epoch boundary (always a sync point)."""
        if jax.process_count() == 1:
            return self.received is not None
        if step_index is not None and (step_index + 1) % self.SYNC_EVERY:
            return False
        local = np.int32(self.received or 0)
        signals = multihost_utils.process_allgather(local)
        self.received = self.received or int(np.max(signals)) or None
        return self.received is not None


def interrupted(
    signum: int, workdir: pathlib.Path, step: int, epoch: int, steps_done: int, steps: int
) -> RunInterruptedError:
    """What a stopped run says: the checkpoint it left (`steps_done` of `epoch`'s `steps`)."""
    name = signal.Signals(signum).name
    if steps_done:
        saved = f"saved step {step} ({steps_done}/{steps} steps of epoch {epoch})"
    elif step:
        saved = f"the checkpoint of step {step} (end of epoch {step // steps}) is the latest"
    else:
        saved = "no step had run, nothing to save"
    return RunInterruptedError(
        f"{name}: training stopped; {saved} in {workdir}; run the same command to resume", signum
    )


def resuming(workdir: pathlib.Path, epochs_done: int, steps_done: int, steps: int) -> str:
    """What a resumed run says: the checkpoint it takes up from."""
    where = f"epoch {epochs_done}"
    if steps_done:
        where += f" and {steps_done}/{steps} steps of epoch {epochs_done + 1}"
    return f"Resuming from the checkpoint after {where} in {workdir}"
