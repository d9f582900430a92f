"""``python -m cli COMMAND ...``: the ``googlenet`` command without its installed script."""
import sys

from cli.main import main

sys.exit(main())
