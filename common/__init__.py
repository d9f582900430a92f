"""The framework-free layer, in rooms: the network, training, inputs, serving, results.

Imports no framework and no backend (the tests check it).  ``__version__``
is the project's one version: ``pyproject.toml`` reads it, ``googlenet --version`` prints it.

The rooms (``ROOMS``), one folder each; ``runtime`` (the machine and its environment) stays
here:

* ``common.net``: the table (``spec``), the oracle, the walk and the model API (``model``),
  weights, the restricted unpickler (``safepickle``);
* ``common.train``: the recipe (``train_config``, ``schedules``, ``augment``), the trainer's
  shared part, the loop, checkpoints, signals, the run folder's lock, the world of workers,
  fine-tuning (``finetune``);
* ``common.inputs``: IDX files, Fashion-MNIST and the loader (``data``), the other datasets;
* ``common.serve``: exported models and their metadata (``export``), predictions, int8
  quantization (``quantize``);
* ``common.results``: the comparison report, the plots, the benchmark's numbers.

Every module used to sit directly here, and that path still works: ``common.spec`` is the
module ``common.net.spec`` (the same object), imported only when asked for (``_OldPaths``).
Importing ``common`` imports no room.
"""
import sys

__version__ = "0.1.0"

#: room -> the modules it holds
ROOMS = {
    "net": ("spec", "oracle", "model", "weights", "safepickle", "family", "zoo", "classic", "zoofiles",
            "pretrained"),
    "train": ("trainer", "train_config", "schedules", "augment", "loop", "checkpoint", "interrupt",
              "runlock", "distributed", "finetune"),
    "inputs": ("data", "datasets", "download"),
    "serve": ("export", "predict", "quantize"),
    "results": ("report", "plots", "bench", "tensorboard"),
}

#: modules written after the rooms were built: they never had an old path
NEW = ("family", "zoo", "classic", "tensorboard", "finetune", "zoofiles", "pretrained", "download", "quantize")

#: old path -> new path: ``common.spec`` -> ``common.net.spec`` ...
MOVED = {f"{__name__}.{module}": f"{__name__}.{room}.{module}"
         for room, modules in ROOMS.items() for module in modules if module not in NEW}


class _OldPaths:
    """The import system's finder and loader for the old paths: ``import common.spec`` imports
    ``common.net.spec`` and binds the same module object under both names (``sys.modules``
    and the attribute ``common.spec``), so the module runs once and its state is shared."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        from importlib.machinery import ModuleSpec
        return ModuleSpec(name, self)

    def create_module(self, spec):
        import importlib
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__       # the import system sets __spec__ to ours next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state   # the module's own spec again (its new name)


if not any(type(f).__name__ == "_OldPaths" for f in sys.meta_path):
    sys.meta_path.insert(0, _OldPaths())    # first, so that no stale common/<module>.py shadows a room
