"""The planted bugs of docs/fidelity.md: plant each in a checkout, run the numerical tests,
list the tests that fail, and restore the file.

    git worktree add /tmp/planted HEAD && ln -s "$PWD/.venv" /tmp/planted/.venv
    python tests/plant_bugs.py /tmp/planted planted.log [TEST FILES ...]

Run it in a separate worktree (it edits the tree it is given, and puts each file back
afterwards).  Each bug must make at least one test fail; docs/fidelity.md lists which.
"""
import subprocess, sys, os
BUGS = {
 "swap-branches-mxnet": ("backends/mxnet/model.py", "F.np.concatenate([b(X) for b in self.branches], axis=1)",
     "F.np.concatenate([b(X) for b in [self.branches[1], self.branches[0]] + list(self.branches[2:])], axis=1)"),
 "same-padding-tf": ("backends/tensorflow/model.py", 'self.pad = None if same or not layer.padding else _pads(layer.padding)\n        self.conv = layers.Conv2D(layer.out, layer.kernel, layer.stride,\n                                  padding="same" if same else "valid"',
     'self.pad = None\n        self.conv = layers.Conv2D(layer.out, layer.kernel, layer.stride,\n                                  padding="same" if layer.padding else "valid"'),
 "bn-momentum-paddle": ("backends/paddle/model.py", "momentum=1 - BN_MOMENTUM", "momentum=BN_MOMENTUM"),
 "grad-x1.01-pytorch": ("backends/pytorch/training.py", "            grad_of.backward()\n",
     "            grad_of.backward()\n            [p.grad.mul_(1.01) for n, p in self.net.named_parameters() if n == 'stages.b3.inception3a.branches.1.1.conv.weight']\n"),
 "wd-twice-tf": ("backends/tensorflow/training.py", "grads = [g + self.coupled_decay * p for g, p in zip(grads, params)]",
     "grads = [g + 2 * self.coupled_decay * p for g, p in zip(grads, params)]"),
}
tree, out = sys.argv[1], sys.argv[2]
tests = sys.argv[3:] or ["tests/test_equivalence.py", "tests/test_recipes.py", "tests/test_fast_paths.py"]
with open(out, "w") as log:
    for name, (path, old, new) in BUGS.items():
        p = os.path.join(tree, path); src = open(p).read()
        assert src.count(old) == 1, (name, src.count(old))
        open(p, "w").write(src.replace(old, new))
        try:
            r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "--tb=no", "-rf", "-p", "no:cacheprovider", *tests],
                               cwd=tree, capture_output=True, text=True, timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
            failed = [l.split()[1] for l in r.stdout.splitlines() if l.startswith("FAILED")]
            log.write(f"## {name}: {len(failed)} failed; {r.stdout.strip().splitlines()[-1]}\n" + "".join(f"  {f}\n" for f in failed))
            log.flush()
        finally:
            open(p, "w").write(src)
