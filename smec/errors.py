"""The one exception type the CLI turns into a one-line message on stderr."""


class SmecError(Exception):
    """A user-facing error: the message names the file, line or field and says what to fix."""
