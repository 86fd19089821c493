"""The one error type vaelab raises for bad input (the CLI prints it as one line), and the
check of counts that input validation everywhere shares."""

from __future__ import annotations


class VaelabError(Exception):
    """A problem with the user's input, files or configuration (not a bug in vaelab)."""


class DataError(VaelabError):
    """A data set or data file is missing, corrupt or of the wrong shape."""


class ConfigError(VaelabError):
    """A configuration file or ``--set`` override is invalid."""


class CheckpointError(VaelabError):
    """A run folder or checkpoint cannot be trusted or read."""


def is_count(value: object, least: int = 1) -> bool:
    """Whether ``value`` is a whole number ≥ ``least``: an int, but not a bool (True is 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least
