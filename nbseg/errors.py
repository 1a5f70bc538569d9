"""Errors a user can fix. The CLI prints them without a traceback; each message names the input and the fix."""


class NbsegError(Exception):
    """Base class of nbseg's user-facing errors."""


class DataError(NbsegError, ValueError):
    """A dataset root, split file, image or label map is missing or malformed."""


class WeightsError(NbsegError, ValueError):
    """Backbone weights are missing or do not fit the model."""


class ConfigError(NbsegError, ValueError):
    """A configuration key, value or notebook parameter is wrong."""


class OutputError(NbsegError, ValueError):
    """An output location would destroy something: an input folder, or files written before (no --overwrite)."""


class StorageError(NbsegError, OSError):
    """The disk refused a write (full, over quota, read-only); the message names the file, the bytes and the way
    to resume."""
