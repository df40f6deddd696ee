"""Command line beside the notebook: python -m k7lib {train,explore,validate,links} ...

Each subcommand lives in the module of its concept and is imported only when used.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("k7lib.train", "phased training with numbered checkpoints"),
    "explore": ("k7lib.explore", "spectral gap, curvature, geodesics and region statistics of a run"),
    "validate": ("k7lib.validate", "G2 identity report on a trained run"),
    "links": ("k7lib.links", "G2 structures on the link of the quintic: sample | train | validate | ricci"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:9s} {desc}" for name, (_, desc) in COMMANDS.items()]
        print("usage: python -m k7lib COMMAND [options]\n\ncommands:\n" + "\n".join(lines))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    try:
        return int(module.main(argv[1:]) or 0)
    except (ValueError, OSError) as err:   # input errors and machine faults (disk full, ...): one line
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
