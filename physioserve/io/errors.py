"""The one error type of the readers."""

from __future__ import annotations


class RecordError(ValueError):
    """A file that cannot be read as a recording or label file; the message names the file and the fix."""
