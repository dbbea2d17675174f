"""The one exception type of the dataset layer.

Every problem with a dataset on disk (missing or truncated file, malformed metadata, unknown
key, index out of range) raises `DatasetError` with a message naming the file or key and what
was expected, so a user can fix the data instead of guessing. Nothing is silently skipped.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset on disk (or a value given to the writer) is not what the format expects."""


class DatasetIndexError(DatasetError, IndexError):
    """A frame or episode index out of range.

    Also an IndexError, so Python's sequence protocol (`for x in ds`) stops where it should.
    """
