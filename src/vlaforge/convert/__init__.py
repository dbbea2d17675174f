"""Importers of released checkpoints into vlaforge policies (above the policy families they build).

* ``common.py``: what the converters share: the safetensors index, a strict key/shape report that
  fails as one `ConversionError`, shard-wise reading, building the target policy on the meta device;
* ``openvla.py``: the released ``openvla/openvla-7b`` -> an ``openvla`` policy
  (``vlaforge convert-openvla`` / ``python -m vlaforge.convert.openvla SRC OUT --unnorm-key KEY``);
* ``pi0.py``: LeRobot / openpi PyTorch π0 and π0.5 checkpoints -> a ``pi0`` / ``pi05`` policy
  (``vlaforge convert-pi0`` / ``python -m vlaforge.convert.pi0 SRC --out DIR``);
* ``arguments.py`` / ``commands.py``: the torch-free argument definitions and the CLI registration.
"""
