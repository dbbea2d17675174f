"""Model building blocks: block attention masks, the block transformer, encoders, action heads.

Import from the submodules (``vlaforge.models.attention``, ``.transformer``, ``.encoders``,
``.heads``); this package file stays empty so ``import vlaforge`` never pulls in torch.
"""
