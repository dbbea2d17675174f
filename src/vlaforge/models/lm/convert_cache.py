"""The user cache of converted pretrained weights: a GGUF file dequantized once into a Hugging Face
directory (``config.json`` + ``model.safetensors`` + ``tokenizer.json``) that later loads read directly.

Where: ``$VLAFORGE_CACHE`` if set, else ``$XDG_CACHE_HOME/vlaforge``, else ``~/.cache/vlaforge``;
an entry is ``<root>/lm/<source stem>-<key>/``, the key a hash of the source file's name, size and
modification time (and of :data:`CONVERSION_VERSION`): replacing the source file, or changing how it
is converted, makes a new entry; nothing is ever read from a stale one.

Safety: an entry is written into a temporary sibling and renamed into place, so a killed conversion
leaves no half entry. ``vlaforge_cache.json`` records each file's size and SHA-256; :func:`check_entry`
verifies them (and that the safetensors header parses) before every load. A corrupt or truncated
entry is reported by one warning line and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open

CACHE_ENV = "VLAFORGE_CACHE"
MANIFEST = "vlaforge_cache.json"
# Bump when the conversion's output changes (names, dtype, tokenizer files): old entries are then ignored.
CONVERSION_VERSION = 1
_HASH_CHUNK = 1 << 24  # 16 MiB


def cache_root() -> Path:
    """``$VLAFORGE_CACHE``, else ``$XDG_CACHE_HOME/vlaforge``, else ``~/.cache/vlaforge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vlaforge"


def source_key(source: Path) -> str:
    """16 hex digits from the source file's name, size and mtime (no read of its contents: fast)."""
    st = source.stat()
    text = f"{source.name}|{st.st_size}|{st.st_mtime_ns}|v{CONVERSION_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(source: Path, root: Path | None = None) -> Path:
    """Where the converted copy of ``source`` lives (whether or not it exists yet)."""
    return (root or cache_root()) / "lm" / f"{source.stem}-{source_key(source)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_entry(entry: Path) -> str | None:
    """None when ``entry`` is complete and intact, else what is wrong (one short phrase)."""
    manifest = entry / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} is missing"
    try:
        files: dict[str, dict[str, Any]] = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        return f"{MANIFEST} is unreadable ({e})"
    for name, rec in files.items():
        f = entry / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != rec["size"]:
            return f"{name} has {f.stat().st_size} bytes, {rec['size']} were written (truncated?)"
        if name.endswith(".safetensors"):
            try:
                with safe_open(str(f), framework="pt") as st:
                    st.keys()
            except Exception as e:  # safetensors raises its own error types for a damaged header
                return f"{name} has a damaged header ({e})"
        if sha256_file(f) != rec["sha256"]:
            return f"{name} does not match its recorded SHA-256 (corrupt)"
    return None


def write_entry(entry: Path, build: Callable[[Path], dict[str, Any]]) -> Path:
    """Run ``build(tmp_dir)`` (it writes the files and returns extra manifest fields), record every
    file's size and SHA-256, and move the directory to ``entry`` atomically."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        extra = build(tmp)
        files = {
            p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        record = {"conversion_version": CONVERSION_VERSION, **extra, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def cached_conversion(
    source: Path, build: Callable[[Path], dict[str, Any]], *, root: Path | None = None, refresh: bool = False
) -> tuple[Path, bool]:
    """-> (entry directory, whether it was built now). Builds when absent, on ``refresh``, or when
    :func:`check_entry` finds it damaged (one warning line, then rebuilt)."""
    entry = entry_dir(source, root)
    if entry.exists() and not refresh:
        problem = check_entry(entry)
        if problem is None:
            return entry, False
        warnings.warn(f"vlaforge cache {entry}: {problem}; rebuilding it from {source}", stacklevel=3)
    return write_entry(entry, build), True
