"""The framework-free layer: the table, the oracle, data, recipes, checkpoints, reports.

Imports no framework and no backend (the tests check it).  ``__version__``
is the project's one version: ``pyproject.toml`` reads it, ``googlenet --version`` prints it.
"""
__version__ = "0.1.0"
