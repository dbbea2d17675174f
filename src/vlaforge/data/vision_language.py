"""Vision-language data for RT-2-style co-training: a directory of (image, prompt, target) records.

RT-2 co-fine-tunes its VLM on robot data *and* the web vision-language data it was pretrained on, so
the model keeps its language skills while it learns the action tokens. This module reads a small,
hub-free format for that second stream::

    VL_DIR/
      vl.jsonl        one JSON object per line: {"image": ..., "prompt": "...", "target": "..."}
      images/...      PNG files named by "image" (a path relative to VL_DIR, ending in .png), and/or
      images.npz      uint8 (H, W, 3) arrays, named by "image" when it is not a .png path

Blank lines are skipped. Every record is checked when the directory is opened (JSON, keys, types, the
image file or npz key exists), so a bad line fails at start-up with its line number, not mid-run.
Images are decoded on access with PyAV (already a dependency for video; no PIL needed) and returned
at their own size: :class:`~vlaforge.data.cotrain.CoTrainingDataset` resizes them to the
policy's camera.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.data.errors import DatasetError

RECORDS_FILE = "vl.jsonl"
NPZ_FILE = "images.npz"
RECORD_KEYS = ("image", "prompt", "target")


def read_png(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB pixels of a PNG file, decoded with PyAV."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            return frame.to_ndarray(format="rgb24")  # (H, W, 3)
    except (av.FFmpegError, StopIteration) as e:
        raise DatasetError(f"{path}: cannot decode as a PNG image ({e})") from e


class VisionLanguageDataset(torch.utils.data.Dataset):
    """Records of a ``vl.jsonl`` directory (see the module docstring).

    ``ds[i]`` -> ``{"image": uint8 tensor (H, W, 3), "prompt": str, "target": str}``.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / RECORDS_FILE
        if not path.is_file():
            raise DatasetError(
                f"{self.root}: no {RECORDS_FILE}; a vision-language directory holds {RECORDS_FILE} "
                f'(one {{"image": ..., "prompt": ..., "target": ...}} per line) plus its images'
            )
        npz = self.root / NPZ_FILE
        self._npz_keys: set[str] = set()
        if npz.is_file():
            with np.load(npz) as f:
                self._npz_keys = set(f.files)
        self._npz: Any = None  # opened lazily, per process (DataLoader workers must not share the handle)
        self.records: list[dict[str, str]] = []
        for n, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                self.records.append(self._check(line, f"{path}:{n}"))
        if not self.records:
            raise DatasetError(f"{path} holds no records")

    def _check(self, line: str, where: str) -> dict[str, str]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise DatasetError(
                f"{where}: expected a JSON object with keys {RECORD_KEYS}, got {type(rec).__name__}"
            )
        for key in RECORD_KEYS:
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise DatasetError(
                    f"{where}: '{key}' must be a non-empty string (record keys: {sorted(rec)})"
                )
        image = rec["image"]
        if image.lower().endswith(".png"):
            if not (self.root / image).is_file():
                raise DatasetError(f"{where}: image file {self.root / image} does not exist")
        elif image not in self._npz_keys:
            have = (
                f"{NPZ_FILE} has {len(self._npz_keys)} arrays"
                if self._npz_keys
                else f"there is no {NPZ_FILE}"
            )
            raise DatasetError(
                f"{where}: image {image!r} is neither a .png path nor a key of {self.root / NPZ_FILE} ({have})"
            )
        return {k: rec[k] for k in RECORD_KEYS}

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> np.ndarray:
        """uint8 (H, W, 3) image of record `i`."""
        name = self.records[i]["image"]
        if name.lower().endswith(".png"):
            img = read_png(self.root / name)
        else:
            if self._npz is None:
                self._npz = np.load(self.root / NPZ_FILE)
            img = self._npz[name]
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise DatasetError(
                f"{self.root}: image {name!r} must be uint8 (H, W, 3), got {img.dtype} {tuple(img.shape)}"
            )
        return img

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"vision-language record {i} out of range ({len(self)} records in {self.root})")
        rec = self.records[i]
        return {
            "image": torch.from_numpy(np.ascontiguousarray(self.image(i))),
            **{k: rec[k] for k in ("prompt", "target")},
        }

    def texts(self) -> list[str]:
        """Every prompt and target (the tiny recipes build their word vocabulary from these too)."""
        return [r[k] for r in self.records for k in ("prompt", "target")]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_npz": None}

    def __repr__(self) -> str:
        return f"VisionLanguageDataset({self.root}, {len(self)} records)"
