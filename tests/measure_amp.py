"""bf16 mixed precision against float32 on this CPU: seconds per training step (docs/performance.md).

    python -m tests.measure_amp [--backends pytorch,tensorflow] [--batch 32] [--steps 4]

The book's net at 96x96, ``Trainer(fast=True)``, one warm-up step then ``--steps`` timed
steps, each backend and precision in its own process, one at a time; prints the CPU's
flags and the load average before and after each run (a busy machine moves the numbers).
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = """
import sys, time, numpy as np
import torch
sys.path.insert(0, {root!r})
from backends import get_backend
bk = get_backend({name!r})
net = bk.build(seed=0)
trainer = bk.Trainer(net, lr=0.01, amp={amp!r})
rng = np.random.default_rng(0)
X = bk.to_tensor(rng.random(({batch}, 1, 96, 96), dtype=np.float32))
y = bk.to_tensor(rng.integers(0, 10, {batch}))
t = time.perf_counter(); trainer.train_step(X, y); first = time.perf_counter() - t
times = []
for _ in range({steps}):
    t = time.perf_counter(); trainer.train_step(X, y); times.append(time.perf_counter() - t)
print(first, min(times), sorted(times)[len(times) // 2])
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="pytorch,tensorflow")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    sys.path.insert(0, ROOT)
    from common.runtime import cpu_summary
    print(f"cpu: {cpu_summary()}; {os.cpu_count()} cores; batch {args.batch}, 96x96, the book's net\n")
    print("| backend | precision | load before -> after | first step s | s/step (min) | s/step (median) "
          "| examples/s (min) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name in args.backends.split(","):
        for amp in (None, "bf16"):
            before = os.getloadavg()[0]
            code = WORKER.format(root=ROOT, name=name, amp=amp, batch=args.batch, steps=args.steps)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
            after = os.getloadavg()[0]
            if out.returncode:
                print(f"| {name} | {amp or 'float32'} | failed: {out.stderr.strip().splitlines()[-1]} |||||")
                continue
            first, best, median = map(float, out.stdout.split()[-3:])
            print(f"| {name} | {amp or 'float32'} | {before:.1f} -> {after:.1f} | {first:.2f} | {best:.3f} | "
                  f"{median:.3f} | {args.batch / best:.1f} |", flush=True)
            time.sleep(2)


if __name__ == "__main__":
    main()
