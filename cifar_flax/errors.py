"""The one exception type for mistakes in the user's input (config, data, checkpoints)."""


class CifarFlaxError(Exception):
    """A problem the user can fix; `main` prints its message as one line and exits non-zero."""
