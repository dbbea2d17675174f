"""π0 (arXiv 2410.24164) on the pretrained-LM backbone: Gemma + action expert with joint attention.

* ``config.py``: :class:`Pi0Config` (stored in the checkpoint's config.json, ``policy_class: "pi0"``);
* ``expert.py``: :class:`ActionExpert`, :class:`JointTransformer` (per-token weight routing, one joint
  attention per layer under the prefix -> state -> actions rule); the flow-time features are
  ``models/time_embedding.sincos_time_embedding``;
* ``policy.py``: :class:`Pi0Policy` (flow matching, Euler sampling with a prefix KV cache, RTC);
* ``recipes.py``: ``pi0-tiny``, ``pi0-small``, ``pi0`` and ``make_pi0_policy`` (see docs/recipes.md);
* π0-FAST: ``fast_tokenizer.py``, ``fast_config.py``, ``fast_policy.py``, ``fast_recipes.py``;
* π0.5 + knowledge insulation: ``pi05_config.py``, ``pi05_policy.py`` (:class:`Pi05Policy` on ``Pi0Policy``),
  ``pi05_recipes.py`` (``pi05-tiny``, ``pi05``, ``make_pi05_policy``).

Published π0 / π0.5 checkpoints convert with ``vlaforge.convert.pi0``.
"""

from vlaforge.models.time_embedding import sincos_time_embedding
from vlaforge.policies.pi0.config import Pi0Config
from vlaforge.policies.pi0.expert import (
    ActionExpert,
    AdaRMSNorm,
    JointTransformer,
    expert_lm_config,
)
from vlaforge.policies.pi0.fast_policy import Pi0FastPolicy
from vlaforge.policies.pi0.pi05_config import Pi05Config
from vlaforge.policies.pi0.pi05_policy import Pi05Policy
from vlaforge.policies.pi0.pi05_recipes import make_pi05_policy
from vlaforge.policies.pi0.policy import Pi0Policy
from vlaforge.policies.pi0.recipes import PI0_RECIPES, make_pi0_policy

__all__ = [
    "PI0_RECIPES",
    "ActionExpert",
    "AdaRMSNorm",
    "JointTransformer",
    "Pi05Config",
    "Pi05Policy",
    "Pi0Config",
    "Pi0FastPolicy",
    "Pi0Policy",
    "expert_lm_config",
    "make_pi05_policy",
    "make_pi0_policy",
    "sincos_time_embedding",
]
