"""The command lines (``scripts/*.py``): the layer above the backends.

``common`` (framework-free) <- ``backends`` (one framework each) <- ``cli`` (this package):
each arrow points one way; nothing in ``common`` or ``backends`` imports ``cli``.  Every
command's ``main(argv=None)`` returns an exit code; :func:`cli.errors.guard` turns a user's
mistake into one ``error:`` line and exit code 1 (``--debug`` shows the traceback).
"""
