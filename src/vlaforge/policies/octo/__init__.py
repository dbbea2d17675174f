"""Octo (arXiv 2405.12213) on vlaforge's own block transformer: the first policy family.

* ``config.py``: :class:`PolicyConfig` (stored in the checkpoint's config.json; no ``policy_class``);
* ``policy.py``: :class:`Policy` (encoders + block transformer with Octo's mask + an action head from
  ``models/heads``), :class:`DatasetPolicy` (one dataset's view of a mixture policy);
* ``recipes.py``: ``octo-tiny``, ``octo-small``, ``octo-base`` (see docs/recipes.md).
"""

from vlaforge.policies.octo.config import PolicyConfig
from vlaforge.policies.octo.policy import DatasetPolicy, Policy

__all__ = ["DatasetPolicy", "Policy", "PolicyConfig"]
