"""Training: the compression methods and the loop that trains them (METHOD.md §2–3).

- :mod:`smec.training.methods`: the method registry (schedule × level head × unsupervised
  term), the one list the config validates ``train.method`` against; no torch.
- :mod:`smec.training.prepare`: cached embeddings and qrels turned into tensors — the grouped
  hold-out, hard-negative mining, the label-free probes — and one step's batch.
- :mod:`smec.training.engine`: the loop — :func:`~smec.training.engine.train_stage` (one
  stage, its state one :class:`~smec.training.engine.StageState`) and
  :func:`~smec.training.engine.train_method` (a method's stages in a row), on any device.
"""
