"""Policy families built from the blocks in `vlaforge.models` (see docs/architecture.md):

* ``octo/``: the Octo layout on vlaforge's block transformer (``octo-tiny`` / ``-small`` / ``-base``);
* ``vla/``: RT-2, OpenVLA and OpenVLA-OFT on a pretrained decoder LM;
* ``pi0/``: π0, π0-FAST and π0.5 (Gemma backbone + action expert, FAST tokens);

and what they share: ``base.py`` (checkpoint files, the table of checkpoint classes, common methods),
``config.py`` (config methods), ``lm_base.py`` / ``lm_recipes.py`` (the pretrained-LM families'
plumbing and recipe pieces), ``embodiment.py`` (what a recipe reads from a dataset). ``registry.py``
lists the families (config class, policy class, recipes, builder; what each supports is declared by its
class), ``recipes.py`` is the one recipe lookup over all of them (`make_policy`).

Importing this package imports every family, so each has registered its checkpoint class before a
checkpoint is read: ``Policy.load(dir)`` returns whichever class the checkpoint names.
"""

from vlaforge.policies import octo, pi0, vla
from vlaforge.policies.octo import Policy, PolicyConfig
from vlaforge.policies.recipes import all_recipe_names, get_recipe, make_mixture_policy, make_policy

__all__ = [
    "Policy",
    "PolicyConfig",
    "all_recipe_names",
    "get_recipe",
    "make_mixture_policy",
    "make_policy",
    "octo",
    "pi0",
    "vla",
]
