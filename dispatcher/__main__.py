"""``python -m dispatcher``: the same as the ``ebd`` command."""

import sys

from dispatcher.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
