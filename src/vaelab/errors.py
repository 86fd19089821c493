"""The one error type vaelab raises for bad input; the CLI prints it as one line."""

from __future__ import annotations


class VaelabError(Exception):
    """A problem with the user's input, files or configuration (not a bug in vaelab)."""


class DataError(VaelabError):
    """A data set or data file is missing, corrupt or of the wrong shape."""


class ConfigError(VaelabError):
    """A configuration file or ``--set`` override is invalid."""


class CheckpointError(VaelabError):
    """A run folder or checkpoint cannot be trusted or read."""
