"""Export trained policies for deployment without the training stack.

* :mod:`vlaforge.export.onnx` — :class:`~vlaforge.export.onnx.OnnxPolicy`, the robot-side runner:
  numpy + onnxruntime only (no torch), the same ``spec`` / ``predict`` contract as ``Policy``.
* :mod:`vlaforge.export.graph` — the pure-tensor inference graph of an Octo-layout ``Policy``
  (encoders, transformer, the head's sampler unrolled, unnormalization) that is traced to ONNX.
* :mod:`vlaforge.export.onnx_export` — :func:`~vlaforge.export.onnx_export.export_onnx`: trace,
  write ``model.onnx`` + ``export.json``, check onnxruntime against PyTorch, time both.
* :mod:`vlaforge.export.commands` — ``vlaforge export RUN_OR_POLICY_DIR --format onnx --out DIR``.

This package file imports nothing heavy, so the runner stays importable on a torch-free robot.
"""

from __future__ import annotations

import importlib

EXTRA_HINT = "pip install 'vlaforge[export]'"


class ExportError(ValueError):
    """The policy cannot be exported (unsupported class or option) or the exported graph is wrong."""


def require_modules(*names: str, purpose: str) -> None:
    """Import each module or raise ImportError naming the missing one and the extra that provides it."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(
                f"{purpose} needs the '{name}' package, which is not installed: {EXTRA_HINT}"
            ) from e
