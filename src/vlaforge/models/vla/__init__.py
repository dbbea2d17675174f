"""VLA recipes on the pretrained-LM backbone: RT-2, OpenVLA, OpenVLA-OFT (see docs/recipes.md).

* ``action_tokenizer.py``: 256-bin action tokens (OpenVLA's last ids, RT-2's integer tokens, reserved ids);
* ``config.py``: :class:`VLAConfig`;
* ``policy.py``: :class:`VLAPolicy` (same contract as ``models.policy.Policy``);
* ``recipes.py``: ``openvla``, ``openvla-oft``, ``rt2`` and their ``-tiny`` variants, ``make_vla_policy``;
* ``convert_openvla.py``: the released ``openvla/openvla-7b`` -> a vlaforge policy
  (``python -m vlaforge.models.vla.convert_openvla SRC OUT --unnorm-key KEY``).
"""

from vlaforge.models.vla.action_tokenizer import ActionDecodeError, ActionTokenizer, DecodedActions
from vlaforge.models.vla.config import VLAConfig
from vlaforge.models.vla.recipes import VLA_RECIPES, make_vla_policy

__all__ = [
    "VLA_RECIPES",
    "ActionDecodeError",
    "ActionTokenizer",
    "DecodedActions",
    "VLAConfig",
    "make_vla_policy",
]
