"""Numbered runs: a new run gets the next number, the latest is the default, `--run N` picks one.

A run is a folder `run_N` under a root (by default `G2_ML/1_4/checkpoints/`); named runs
(any other folder name) are found by name. Used by training, exploration, validation and links.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent        # G2_ML/1_4
DEFAULT_ROOT = PACKAGE_ROOT / "checkpoints"
OUTPUTS = PACKAGE_ROOT / "outputs"
_RUN = re.compile(r"^run_(\d+)$")


def list_runs(root: str | Path = DEFAULT_ROOT) -> list[tuple[int, Path]]:
    """Numbered runs under root as (N, path), in increasing N."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _RUN.match(p.name))]
    return sorted(found)


def new_run(root: str | Path = DEFAULT_ROOT) -> Path:
    """Create and return the folder of the next numbered run (run_1 if there is none)."""
    root = Path(root)
    runs = list_runs(root)
    path = root / f"run_{runs[-1][0] + 1 if runs else 1}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def resolve_run(run: int | str | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """Folder of an existing run: None or "latest" -> highest number, N or "N" -> run_N, else a name.

    Raises ValueError with the runs that exist when the requested one does not.
    """
    root = Path(root)
    runs = list_runs(root)
    if run is None or run == "latest":
        if not runs:
            raise ValueError(f"no trained run found under {root}; train one first "
                             "(python -m k7lib train --profile quick)")
        return runs[-1][1]
    name = f"run_{int(run)}" if isinstance(run, int) or str(run).isdigit() else str(run)
    path = root / name
    if not path.is_dir():
        have = ", ".join(p.name for p in sorted(root.iterdir()) if p.is_dir()) if root.is_dir() else "none"
        raise ValueError(f"run {run!r} not found under {root} (runs present: {have or 'none'})")
    return path


def writable_folder(path: str | Path, field: str = "folder") -> Path:
    """Create `path` if needed and prove it writable with a probe file; ValueError naming `field` if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"{field}: folder {str(path)!r} is not writable ({err.strerror or err})") from None
    return path
