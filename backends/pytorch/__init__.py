"""The PyTorch backend (``torch.nn``).

Importing this package imports no framework: its card (``card.CARD``) is what the rest of
the project reads; ``backends.get_backend('pytorch')`` loads the framework and returns the
public API (``api.py``, the same names in every backend: ``backends.API``).
"""
from .card import CARD

__all__ = ["CARD"]
