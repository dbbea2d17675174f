"""Frames as parquet rows: numpy <-> arrow conversion in the column types LeRobot (HF datasets) uses.

shape (1,)      -> scalar column               (datasets.Value)
shape (D,)      -> fixed_size_list<dtype>[D]   (datasets.Sequence(length=D))
shape (A, B..)  -> nested fixed-size lists
dtype "image"   -> struct<bytes: binary, path: string> holding a PNG (datasets.Image)
Video features are not stored in parquet (they live in mp4 files).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.data.errors import DatasetError
from vlaforge.types import FeatureSpec

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _arrow_type(dtype: str) -> pa.DataType:
    return pa.from_numpy_dtype(np.dtype(dtype))


def encode_png(img: np.ndarray) -> bytes:
    try:
        from PIL import Image
    except ImportError as e:  # pillow comes with matplotlib; say so if it is missing
        raise DatasetError("features of dtype 'image' need Pillow (pip install pillow)") from e
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode_png(data: bytes, where: str) -> np.ndarray:
    try:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except ImportError as e:
        raise DatasetError("features of dtype 'image' need Pillow (pip install pillow)") from e
    except Exception as e:  # PIL raises many types for a corrupt image
        raise DatasetError(f"{where}: cannot decode the stored PNG image ({e})") from e


def to_arrow(arr: np.ndarray, spec: FeatureSpec) -> pa.Array:
    """(N, *shape) numpy -> arrow column for `spec`."""
    n = len(arr)
    if spec.dtype == "image":
        return pa.array([{"bytes": encode_png(img), "path": None} for img in arr], type=IMAGE_STRUCT)
    flat = pa.array(np.ascontiguousarray(arr, dtype=spec.dtype).reshape(-1), type=_arrow_type(spec.dtype))
    if tuple(spec.shape) == (1,):
        return flat
    col: pa.Array = flat
    for d in reversed(spec.shape):
        col = pa.FixedSizeListArray.from_arrays(col, int(d))
    assert len(col) == n
    return col


def build_table(columns: dict[str, np.ndarray], specs: dict[str, FeatureSpec]) -> pa.Table:
    """One episode's (or file's) rows; column order follows `specs`, video features are skipped."""
    names, arrays = [], []
    for key, spec in specs.items():
        if spec.dtype == "video":
            continue
        names.append(key)
        arrays.append(to_arrow(columns[key], spec))
    return pa.Table.from_arrays(arrays, names=names)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.is_file():
        raise DatasetError(f"missing parquet file {path}")
    try:
        schema = pq.read_schema(path)
        if columns is not None:
            absent = [c for c in columns if c not in schema.names]
            if absent:
                raise DatasetError(f"{path}: missing column(s) {absent}; the file has {schema.names}")
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"cannot read parquet file {path} (truncated or corrupt?): {e}") from e


def from_arrow(col: pa.ChunkedArray | pa.Array, spec: FeatureSpec, where: str) -> np.ndarray:
    """Arrow column -> (N, *shape) numpy for numeric features.

    Images come back as an object array of PNG bytes (N,), strings as an object array (N, 1).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if spec.dtype == "image":
        if not pa.types.is_struct(col.type):
            raise DatasetError(f"{where}: image column has type {col.type}, expected struct<bytes, path>")
        return np.array(col.field("bytes").to_pylist(), dtype=object)
    if spec.dtype == "string":  # e.g. LeRobot language annotations: kept as Python strings
        return np.array(col.to_pylist(), dtype=object).reshape(n, 1)
    if col.null_count:
        raise DatasetError(
            f"{where}: column has {col.null_count} null value(s); expected {spec.dtype}{spec.shape}"
        )
    while (
        pa.types.is_list(col.type)
        or pa.types.is_fixed_size_list(col.type)
        or pa.types.is_large_list(col.type)
    ):
        col = col.flatten()
    values = col.to_numpy(zero_copy_only=False)
    expected = n * int(np.prod(spec.shape))
    if values.size != expected:
        raise DatasetError(
            f"{where}: {n} rows hold {values.size} values, expected shape {spec.shape} per row ({expected} values)"
        )
    try:
        return values.astype(spec.dtype, copy=False).reshape(n, *spec.shape)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: cannot read values as {spec.dtype}: {e}") from e
