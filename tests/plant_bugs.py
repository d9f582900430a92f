"""The planted bugs of docs/fidelity.md: plant each in a checkout, run the numerical tests,
list the tests that fail, and restore the file.

    git worktree add /tmp/planted HEAD && ln -s "$PWD/.venv" /tmp/planted/.venv
    python tests/plant_bugs.py /tmp/planted planted.log [TEST FILES ...]

Run it in a separate worktree (it edits the tree it is given, and puts each file back
afterwards).  Each bug must make at least one test fail; docs/fidelity.md lists which.
"""
import os
import subprocess
import sys

TF_CONV = ('self.pad = None if same or not layer.padding else _pads(layer.padding)\n'
           '        self.conv = layers.Conv2D(layer.out, layer.kernel, layer.stride,\n'
           '                                  padding="same" if ')
GRAD = "stages.b3.inception3a.branches.1.1.conv.weight"
#: name -> (file, text, the text with the bug)
BUGS = {
    "swap-branches-mxnet": (
        "backends/mxnet/model.py", "F.np.concatenate([b(X) for b in self.branches], axis=1)",
        "F.np.concatenate([b(X) for b in [self.branches[1], self.branches[0]] + list(self.branches[2:])], axis=1)"),
    "same-padding-tf": (
        "backends/tensorflow/model.py", TF_CONV + 'same else "valid"',
        TF_CONV.replace("None if same or not layer.padding else _pads(layer.padding)", "None")
        + 'layer.padding else "valid"'),
    "bn-momentum-paddle": ("backends/paddle/model.py", "momentum=1 - BN_MOMENTUM", "momentum=BN_MOMENTUM"),
    "grad-x1.01-pytorch": (
        "backends/pytorch/training.py", "            grad_of.backward()\n",
        "            grad_of.backward()\n"
        f"            [p.grad.mul_(1.01) for n, p in self.net.named_parameters() if n == {GRAD!r}]\n"),
    "wd-twice-tf": (
        "backends/tensorflow/training.py", "grads = [g + self.coupled_decay * p for g, p in zip(grads, params)]",
        "grads = [g + 2 * self.coupled_decay * p for g, p in zip(grads, params)]"),
}
TESTS = ["tests/test_equivalence.py", "tests/test_recipes.py", "tests/test_fast_paths.py"]


def failing_tests(tree, tests):
    """The tests that fail in ``tree``, and pytest's closing line."""
    r = subprocess.run([os.path.join(tree, ".venv/bin/python"), "-m", "pytest", "-q", "--tb=no", "-rf",
                        "-p", "no:cacheprovider", *tests], cwd=tree, capture_output=True, text=True,
                       timeout=1800, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = r.stdout.strip().splitlines()
    return [line.split()[1] for line in lines if line.startswith("FAILED")], (lines or [""])[-1]


def main(tree, out, tests):
    with open(out, "w") as log:
        for name, (path, old, new) in BUGS.items():
            p = os.path.join(tree, path)
            src = open(p).read()
            assert src.count(old) == 1, f"{name}: the text to change is not in {path} once"
            open(p, "w").write(src.replace(old, new))
            try:
                failed, closing = failing_tests(tree, tests)
                log.write(f"## {name}: {len(failed)} failed; {closing}\n" + "".join(f"  {f}\n" for f in failed))
                log.flush()
            finally:
                open(p, "w").write(src)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or TESTS)
