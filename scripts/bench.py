#!/usr/bin/env python
"""Benchmark our GoogLeNet against the book's own code, every installed backend, one run.

    .venv/bin/python scripts/bench.py                          # all backends, batch 32, 96x96
    .venv/bin/python scripts/bench.py --backends pytorch,mxnet --repeats 7 --steps 10
    .venv/bin/python scripts/bench.py --quick --backends pytorch   # a smoke test (seconds)

For each backend, three configurations (and any opt-in ones), each in its own subprocess
(``scripts/bench.py --worker BACKEND --config CONFIG`` prints one JSON line), so that
frameworks never share a process and the peak memory (max RSS) is that configuration's:

* ``book``  — the book's code: ``backends/<backend>/book.py``'s ``book_net()`` and
  ``make_book_step`` (one step exactly as ``d2l.train_ch6``), ``book_logits`` for inference;
* ``eager`` — ours without fast paths: ``build()`` + ``Trainer(net, fast=False)``;
* ``fast``  — ours as shipped: ``build()`` + ``Trainer(net, fast=True)`` (the default);
* opt-in fast paths that are not the default, for PyTorch ``channels_last``
  (``Trainer(net, fast='channels_last')``); ``--no-opt-in`` leaves them out.

Training throughput: ``--warmup`` steps excluded, then ``--repeats`` timings of ``--steps``
steps each; the median is reported.  A step takes a NumPy batch (generated data, four
batches cycled) and returns host numbers, so it is synchronised and includes the
NumPy-to-tensor conversion for both the book and ours.  Inference: the same with the
eval step (``book_logits`` / ``Trainer.eval_step``).

Also measured in the same run: the float32 matrix-multiply rate of this machine
(2048x2048, median of 7) with NumPy and with each selected framework in its own process
(NumPy again at the end); the best of them is the roofline (examples/s = peak FLOP/s / training FLOPs per example; see
``common/results/bench.py`` for the FLOP convention), and, for one backend, the data
pipeline: ``common.train.loop.fit`` with ``common.inputs.data.Loader`` on a generated dataset,
compute-only vs end-to-end examples/s.

Writes ``bench.json`` and ``bench.md`` into ``--out`` (default ``reports/bench-<time>/``).
"""
import _path  # noqa: F401
from cli.bench import main
from cli.errors import run

if __name__ == "__main__":
    run(main)
