"""One worker of tests/test_distributed.py: three SGD steps with momentum on a small table,
through the backend's distributed engine (or in one process with ``single``).

    python tests/dist_worker.py BACKEND OUT_DIR [single]

Worker ``r`` of ``N`` takes its rows of each global batch (``World.rows``), exactly as the
training loop does.  Writes ``OUT_DIR/rank<r>.npz`` (the weights after every step) and
``OUT_DIR/rank<r>.json`` (rank, world size and engine as read from the framework)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from backends import get_backend  # noqa: E402
from common.net import spec as S  # noqa: E402
from common.train.distributed import SINGLE  # noqa: E402

GLOBAL, SIZE, STEPS = 12, 16, 3


def small_spec():
    return S.Spec("dist", 1, SIZE, (
        S.stage("s1", S.Conv(8, 3, 1, 1), S.MaxPool(3, 2, 1)),
        S.stage("s2", S.Inception(4, (4, 8), (2, 4), 4), S.GlobalAvgPool(), S.Flatten(), S.Dense(10))))


def batch(step):
    rng = np.random.default_rng(100 + step)
    return rng.random((GLOBAL, 1, SIZE, SIZE), dtype=np.float32), rng.integers(0, 10, GLOBAL).astype(np.int64)


def main(name, out, single=False):
    bk = get_backend(name)
    world = SINGLE if single else bk.distribute.init(120)
    net = bk.build(small_spec(), seed=3, world=world)
    trainer = bk.Trainer(net, lr=0.1, momentum=0.9, world=world)
    saved = {}
    for step in range(STEPS):
        X, y = batch(step)
        rows = world.rows(GLOBAL)
        if world.distributed:
            trainer.train_step(bk.to_tensor(X[rows]), bk.to_tensor(y[rows]), global_batch=GLOBAL)
        else:
            trainer.train_step(bk.to_tensor(X), bk.to_tensor(y))
        saved.update({f"{step}/{k}": v for k, v in bk.get_weights(net).items()})
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f"rank{world.rank}.npz"), **saved)
    with open(os.path.join(out, f"rank{world.rank}.json"), "w") as f:
        json.dump(dict(rank=world.rank, size=world.size, engine=world.engine, pid=os.getpid()), f)
    world.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], single=len(sys.argv) > 3 and sys.argv[3] == "single")
