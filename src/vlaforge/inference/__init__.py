"""Deployment: what serving, evaluation, benchmarking and export load a trained policy with.

* ``load.py``: `load_policy(path, int8=, bf16=, compile=)`: any checkpoint with the chosen fast paths,
  warmed up; `check_fast_paths`; `example_observations` (the warm-up input);
* ``fastpaths.py``: int8 Linear layers, bf16 weights, torch.compile (`PathUnavailable` when one does not
  apply), `lm_family` (which pretrained-LM family a policy is);
* ``prefix_cache.py``: Octo's task-prefix KV cache (`StagedPredictor(prefix_cache=True)`), and the
  stage timers `vlaforge bench` reads through it.

Library code raises (ValueError and its subclasses `PathUnavailable`, `CheckpointError`); the command
lines turn the exceptions into one-line messages.
"""

from vlaforge.inference.fastpaths import PathUnavailable
from vlaforge.inference.load import check_fast_paths, load_policy

__all__ = ["PathUnavailable", "check_fast_paths", "load_policy"]
