"""Exceptions that several layers raise alike (a ground module: it imports nothing from vlaforge).

`CheckpointError` is raised wherever a checkpoint is read: the language-model and vision-tower
loaders in `models`, every policy class's `load` in `policies`, the converters in `convert`, and the
trainer's resume. It is a ValueError, so a command line turns it into one line like any bad input.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or holds something this version cannot read."""
