"""The one exception type for mistakes in the user's input (config, data, checkpoints)."""


class CifarFlaxError(Exception):
    """A problem the user can fix; `main` prints its message as one line and exits non-zero."""


class RunInterruptedError(CifarFlaxError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal"


def first_line(error: BaseException) -> str:
    """An exception as one line for a message: its type and the first line of its text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__
