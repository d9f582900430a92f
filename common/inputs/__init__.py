"""The inputs: IDX files, Fashion-MNIST and the loader (``data``, imported as ``D``) and the
other datasets behind the same interface (``datasets``, imported as ``DS``).

Imports nothing itself.
"""
