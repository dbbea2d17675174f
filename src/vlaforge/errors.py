"""Exceptions that several layers raise alike (a ground module: it imports nothing from vlaforge).

`CheckpointError` is raised wherever a checkpoint is read: the language-model and vision-tower
loaders in `models`, every policy class's `load` in `policies`, the converters in `convert`, and the
trainer's resume. It is a ValueError, so a command line turns it into one line like any bad input.
`mismatch_report` formats the missing / unexpected / wrongly shaped keys such an error lists.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint directory is missing files or holds something this version cannot read."""


def mismatch_report(
    title: str, missing: list[str], unexpected: list[str], mismatched: list[str], *, limit: int = 10
) -> str:
    """``title`` and one line per non-empty category (at most ``limit`` names each), for a CheckpointError."""
    parts = [title]
    for what, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"  {what} ({len(items)}): " + "; ".join(items[:limit]) + more)
    return "\n".join(parts)
