"""VLA recipes on the pretrained-LM backbone: RT-2, OpenVLA, OpenVLA-OFT (see docs/recipes.md).

* ``action_tokenizer.py``: 256-bin action tokens (OpenVLA's last ids, RT-2's integer tokens, reserved ids);
* ``config.py``: :class:`VLAConfig`;
* ``policy.py``: :class:`VLAPolicy` (same contract as ``octo.Policy``; checkpoints say ``policy_class: "vla"``);
* ``film.py``: OFT's FiLM on the vision-tower blocks;
* ``recipes.py``: ``openvla``, ``openvla-oft``, ``rt2`` and their ``-tiny`` variants, ``make_vla_policy``,
  ``make_cotraining_policy`` (RT-2 co-training; the dataset side is ``data/cotrain.py``).

The released ``openvla/openvla-7b`` converts with ``vlaforge.convert.openvla``.
"""

from vlaforge.policies.vla.action_tokenizer import ActionDecodeError, ActionTokenizer, DecodedActions
from vlaforge.policies.vla.config import VLAConfig
from vlaforge.policies.vla.policy import VLAPolicy
from vlaforge.policies.vla.recipes import VLA_RECIPES, make_vla_policy

__all__ = [
    "VLA_RECIPES",
    "ActionDecodeError",
    "ActionTokenizer",
    "DecodedActions",
    "VLAConfig",
    "VLAPolicy",
    "make_vla_policy",
]
