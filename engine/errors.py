"""The engine's one user-facing error type.

Anything a user can cause (bad image, bad weights, bad option) raises
`EngineError` with one readable sentence; the CLI and the worker print that
sentence instead of a traceback.
"""


class EngineError(Exception):
    """A problem the user can fix; its message is shown as is."""


class Cancelled(Exception):
    """Raised inside the optimisation loop when the caller's cancel check fires."""
