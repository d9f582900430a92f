"""Training: the recipe (``train_config``, ``schedules``, ``augment``), the backends' shared
trainer (``trainer``), the loop (``loop.fit``), checkpoints (``checkpoint``), signals
(``interrupt``), the run folder's lock (``runlock``) and the world of workers
(``distributed``).

Imports nothing itself.
"""
