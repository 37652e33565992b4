"""The error hierarchy shared by every Datum package.

One root, `DatumError`; subsystem bases below it, mixed with builtins where natural so
callers can catch either (`SpecError` is also a `ValueError`).
"""


class DatumError(Exception):
    """Root of every error Datum raises on purpose."""


class ConfigError(DatumError, ValueError):
    """A setting or a configuration file is missing or invalid."""


class SpecError(DatumError, ValueError):
    """A task spec, query, formula or input does not validate."""


class ComputeError(DatumError):
    """An engine failed, or was asked for something its scheme cannot do."""


class ProtocolAbort(DatumError):
    """A multi-party protocol was aborted (a peer vanished, sent bad data, or timed out)."""
