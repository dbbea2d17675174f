"""Freezing by fnmatch globs over parameter names (``--freeze``, ``--train-only``).

:func:`freeze` / :func:`freeze_all_but` take fnmatch globs over parameter names; a glob that
matches nothing is an error, since a typo would otherwise train the whole model unnoticed.
Head-only tuning (``--train-only 'head.*'``) is :func:`freeze_all_but`, recorded with the run so
a resume freezes the same parameters.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn


def _matches(name: str, pattern: str) -> bool:
    """fnmatch glob over dotted names; a bare module path also matches everything below it."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


def _prefixes(names: Iterable[str], limit: int = 14) -> str:
    """A few valid patterns for error messages: top-level modules, then their children."""
    names = list(names)
    top = list(dict.fromkeys(n.split(".")[0] for n in names))
    second = list(dict.fromkeys(".".join(n.split(".")[:2]) for n in names if n.count(".") >= 2))
    out = [f"{p}.*" if any(n.startswith(p + ".") for n in names) else p for p in top]
    out += [f"{p}.*" for p in second if p not in top]
    more = f", ... ({len(out) - limit} more)" if len(out) > limit else ""
    return ", ".join(repr(p) for p in out[:limit]) + more


def _match_patterns(names: Sequence[str], patterns: Sequence[str], what: str, flag: str) -> set[str]:
    """Names matched by any pattern; a pattern that matches nothing is an error naming it."""
    if isinstance(patterns, str):
        raise TypeError(
            f"{what} patterns must be a list of globs, got the string {patterns!r}; use [{patterns!r}]"
        )
    matched: set[str] = set()
    for pattern in patterns:
        hits = {n for n in names if _matches(n, pattern)}
        if not hits:
            example = next((n for n in names if n.startswith("transformer.")), names[0])
            raise ValueError(
                f"{flag} pattern {pattern!r} matches no {what} of the policy. Patterns are fnmatch globs "
                f"over full dotted names such as {example!r} ('*' crosses dots: '*.attn.*'); "
                f"valid prefixes include {_prefixes(names)}"
            )
        matched |= hits
    return matched


def freeze(policy: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter matching a glob (``'image_encoders.*'``); returns them.

    ``make_optimizer`` only optimizes ``requires_grad`` parameters, so frozen ones also cost no
    optimizer memory. A pattern that matches nothing is an error (a typo must not go unnoticed).
    """
    names = [n for n, _ in policy.named_parameters()]
    hit = _match_patterns(names, patterns, "parameter", "--freeze")
    frozen = []
    for name, p in policy.named_parameters():
        if name in hit:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def freeze_all_but(policy: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Freeze every parameter NOT matching a glob; ``freeze_all_but(policy, ['head.*'])`` = head-only tuning.

    Returns the frozen names. Matching parameters are set trainable (so the call is idempotent).
    """
    names = [n for n, _ in policy.named_parameters()]
    if not patterns:
        raise ValueError(
            "freeze_all_but (--train-only): no patterns given, which would freeze everything; e.g. ['head.*']"
        )
    keep = _match_patterns(names, patterns, "parameter", "--train-only")
    frozen = []
    for name, p in policy.named_parameters():
        p.requires_grad_(name in keep)
        if name not in keep:
            frozen.append(name)
    return frozen
