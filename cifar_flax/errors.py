"""The exceptions a user sees as one line: mistakes in their input, and why a run stopped."""


class CifarFlaxError(Exception):
    """A problem the user can fix; `main` prints its message as one line and exits non-zero."""


class RunInterruptedError(CifarFlaxError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal"


class NonFiniteLossError(CifarFlaxError):
    """The loss became NaN or infinite; the run stops before saving the broken state."""


def first_line(error: BaseException) -> str:
    """An exception as one line for a message: its type and the first line of its text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__
