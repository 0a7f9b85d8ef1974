"""The add-on's one user-facing error: operators report its message with `self.report({'ERROR'}, ...)`."""


class StyleError(Exception):
    """Something the user can fix or should know about; the message is one readable sentence."""
