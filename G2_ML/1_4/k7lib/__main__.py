"""python -m k7lib COMMAND [options]: the command line of `k7lib.cli`."""
import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
