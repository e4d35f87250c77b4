"""The one exception type for mistakes in the user's input (config, data, checkpoints)."""


class CifarFlaxError(Exception):
    """A problem the user can fix; `main` prints its message as one line and exits non-zero."""


class RunInterruptedError(CifarFlaxError):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for "killed by signal"
