"""Numbered runs: a new run gets the next number, the latest is the default, `--run N` picks one.

A run is a folder `run_N` under a root (by default `G2_ML/1_4/checkpoints/`); named runs
(any other folder name) are found by name. A run name is one plain folder name: no path
separator, no "." or "..", not absolute, not empty; and the run's folder, resolved with its
symbolic links, must lie inside the resolved root (`run_path`), so a run never lands outside it.
Used by training, exploration, validation and links; `load_run` is the one loader of a saved run.

One writer per run: training holds `run_lock` (an OS-level file lock, `filelock`, on RUN_LOCK in the
run folder) for the whole of its work; a second writer gets RunInUse naming the holder's process
(written to RUN_OWNER once the lock is held) and writes nothing. The kernel releases the lock of a
process that dies, even by SIGKILL, so a lock left behind never blocks the next run.

Files are written through temporaries named `.<final name>.<pid>.tmp` (checkpoints) or in
`.export-staging-<pid>-*` folders (exports); `stale_temporaries` finds those whose writing
process is gone, so opening a run or exporting again removes what a killed writer left.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

import torch
from filelock import FileLock, Timeout

PACKAGE_ROOT = Path(__file__).resolve().parents[2]          # G2_ML/1_4 (this file is k7lib/learn/runs.py)
DEFAULT_ROOT = PACKAGE_ROOT / "checkpoints"
OUTPUTS = PACKAGE_ROOT / "outputs"
_RUN = re.compile(r"^run_(\d+)$")
_PID = re.compile(r"[.-](\d+)(?:\.tmp|-[^.-]*)$")    # writer's pid: ".<pid>.tmp" or "-<pid>-<token>"
RUN_LOCK, RUN_OWNER = ".k7lib-run.lock", ".k7lib-run.owner"
MAX_RUN_NAME = 200           # characters of a run name (folder names are limited to 255 bytes)
NEW_RUN_TRIES = 100          # numbers tried when another process takes run_N first


class RunInUse(OSError):
    """Another process holds the run's lock (it is training that run); one line in IPython."""

    def _render_traceback_(self):
        return [f"error: {self}"]


class StorageError(OSError, RuntimeError):
    """A file could not be written (disk full, unwritable folder, ...): names the path and the cause.

    An OSError (a machine fault) that is also a RuntimeError, so callers catching torch's writer
    errors keep working. IPython shows it as one line.
    """

    def _render_traceback_(self):
        return [f"error: {self}"]


def storage_error(path, err: BaseException, what: str = "write") -> StorageError:
    """StorageError "cannot <what> <path>: <cause>" from an OSError or a torch writer RuntimeError."""
    text = str(err).strip()
    cause = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    if "unexpected pos" in text or "file write failed" in text:
        cause = f"the file could not be written completely, probably no space left on the device ({cause})"
    out = StorageError(f"cannot {what} {path}: {cause}")
    out.errno = getattr(err, "errno", None)
    return out


def run_name(run: int | str) -> str:
    """Folder name of a run: N or "N" -> "run_N"; a name must be one plain folder name (module doc)."""
    if isinstance(run, bool):
        raise ValueError(f"run: expected a run number or a folder name, got {run!r}")
    if not isinstance(run, (int, str)):
        raise ValueError(f"run: expected a run number or a folder name, got the {type(run).__name__} {run!r}")
    if isinstance(run, int) or str(run).isdigit():
        if int(run) < 0:
            raise ValueError(f"run: a run number must be >= 0, got {run!r}")
        return f"run_{int(run)}"
    name = str(run)
    if len(name) > MAX_RUN_NAME or any(unicodedata.category(c) == "Cc" for c in name):
        raise ValueError(f"run: a run name is at most {MAX_RUN_NAME} characters without control characters, "
                         f"got {name[:40]!r}{'...' if len(name) > 40 else ''} ({len(name)} characters)")
    if (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or os.sep in name
            or (os.altsep and os.altsep in name) or "\0" in name or Path(name).is_absolute()
            or Path(name).drive):
        raise ValueError(f"run: {name!r} is not a plain folder name (no path separators, '.', '..', "
                         "absolute paths or empty names); runs stay inside the root folder")
    return name


def run_path(run: int | str, root: str | Path) -> Path:
    """root / run_name(run), after checking that it resolves (symbolic links included) inside the
    resolved root; ValueError otherwise (nothing is created)."""
    path = Path(root) / run_name(run)
    inside_root(path, root)
    return path


def inside_root(path: Path, root: str | Path) -> Path:
    """path itself when path.resolve() lies inside Path(root).resolve(); ValueError naming both otherwise."""
    try:
        real, base = Path(path).resolve(), Path(root).resolve()
    except (RuntimeError, OSError) as err:     # a symbolic link loop (RuntimeError before Python 3.13)
        raise ValueError(f"run: {path} cannot be resolved ({err})") from None
    if real == base or not real.is_relative_to(base):
        raise ValueError(f"run: {path} resolves to {real}, outside the root {base}; runs stay inside the "
                         "root folder (a symbolic link may not lead out of it)")
    return path


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                     # exists (another user's), or cannot tell: keep the file
    return True


def stale_temporaries(folder: str | Path, pattern: str) -> list[Path]:
    """Entries of `folder` matching the glob `pattern` whose writer (pid in the name) is not running."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob(pattern)):
        m = _PID.search(p.name)
        if m is None or not _pid_alive(int(m.group(1))):
            out.append(p)
    return out


def remove_stale(folder: str | Path, pattern: str) -> list[Path]:
    """Remove `stale_temporaries(folder, pattern)` (files or folders); returns what was removed."""
    gone = []
    for p in stale_temporaries(folder, pattern):
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(p)
        except FileNotFoundError:
            pass
    return gone


def list_runs(root: str | Path = DEFAULT_ROOT) -> list[tuple[int, Path]]:
    """Numbered runs under root as (N, path), in increasing N."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _RUN.match(p.name))]
    return sorted(found)


def new_run(root: str | Path = DEFAULT_ROOT) -> Path:
    """Create and return the folder of the next numbered run (run_1 if there is none); a number
    another process takes first (or any entry of that name) is passed over for the next one."""
    root = Path(root)
    runs = list_runs(root)
    first = runs[-1][0] + 1 if runs else 1
    for n in range(first, first + NEW_RUN_TRIES):
        path = root / f"run_{n}"
        try:
            path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free run number in run_{first}..run_{first + NEW_RUN_TRIES - 1} under {root}")


def resolve_run(run: int | str | None = None, root: str | Path = DEFAULT_ROOT) -> Path:
    """Folder of an existing run: None or "latest" -> highest number, N or "N" -> run_N, else a name.

    Raises ValueError with the runs that exist when the requested one does not, or when the
    name is not a plain folder name (run_name).
    """
    root = Path(root)
    runs = list_runs(root)
    if run is None or run == "latest":
        if not runs:
            raise ValueError(f"no trained run found under {root}; train one first "
                             "(python -m k7lib train --profile quick)")
        return inside_root(runs[-1][1], root)
    path = run_path(run, root)
    if not path.is_dir():
        have = ", ".join(p.name for p in sorted(root.iterdir()) if p.is_dir()) if root.is_dir() else "none"
        raise ValueError(f"run {run!r} not found under {root} (runs present: {have or 'none'})")
    return path


@contextmanager
def run_lock(run_dir: str | Path):
    """Hold the run's one-writer lock for the body (module doc); RunInUse, naming the holder's process,
    when another process holds it. The lock file is never followed through a symbolic link."""
    run_dir = Path(run_dir)
    path, owner = run_dir / RUN_LOCK, run_dir / RUN_OWNER
    if path.is_symlink() or owner.is_symlink():
        raise ValueError(f"run: {run_dir} holds a symbolic link named {RUN_LOCK} or {RUN_OWNER}; remove it")
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunInUse(f"run {run_dir.name} is being trained by {_holder(owner)}; wait for it to end (or stop "
                       f"it) before training {run_dir} again") from None
    except OSError as err:
        raise storage_error(path, err, "lock") from err
    try:
        _write_owner(owner)
        yield run_dir
    finally:
        try:
            owner.unlink()
        except OSError:
            pass
        lock.release()


def _write_owner(owner: Path) -> None:
    try:
        fd = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as err:
        raise storage_error(owner, err) from err


def _holder(owner: Path) -> str:
    """'process PID' from the owner file, or what is known when it is not written yet."""
    try:
        pid = int(owner.read_text().strip())
    except (OSError, ValueError):
        return "another process (its PID is not written yet)"
    return f"process {pid}"


def output_folder(out_dir=None) -> Path:
    """The output folder (default OUTPUTS) with its plots/ subfolder, created; ValueError if it cannot be."""
    out = Path(OUTPUTS if out_dir is None else out_dir)
    try:
        (out / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output folder {out} cannot be created: {err}") from None
    return out


def writable_folder(path: str | Path, field: str = "folder") -> Path:
    """Create `path` if needed and prove it writable with a probe file; ValueError naming `field` if not
    (also for a path that is not a non-empty string or path, or names an existing file or device)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise ValueError(f"{field}: expected a non-empty folder path, got {path!r}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{field}: {str(path)!r} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise ValueError(f"{field}: folder {str(path)!r} is not writable ({err.strerror or err})") from None
    return path


def fsync_dir(path: str | Path) -> None:
    """Make renames in a folder durable where the platform allows opening a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def plain_json(value):
    """value with tensors as lists, tuples as lists, Paths as strings and non-finite floats as None (strict JSON)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, Path):
        return str(value)
    return value.item() if hasattr(value, "item") else value


def write_json(path: str | Path, data) -> Path:
    """Write plain_json(data) to path atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(plain_json(data), indent=1, allow_nan=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        raise storage_error(path, err) from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ---------------------------------------------------------------- loading a saved run
@dataclass(frozen=True)
class SavedRun:
    """A loaded run: its folder, its configuration (a frozen dataclass) and {name: network} in eval mode."""
    path: Path
    config: object
    networks: dict

    def to_dict(self) -> dict:
        return {"path": str(self.path), "config": asdict(self.config) if is_dataclass(self.config) else self.config,
                "networks": sorted(self.networks)}


def read_fit(path: Path, config_type, names) -> tuple:
    """(config, {name: state dict}) of a fit saved as config.json and <name>.pt files.

    config.json -> config_type(**its known fields; lists become tuples); names(config) -> the state files.
    """
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{path} has no config.json: not a run of {config_type.__name__}")
    known = {f.name for f in fields(config_type)}
    raw = json.loads(cfg_file.read_text())
    config = config_type(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known})
    states = {}
    for name in names(config):
        file = path / f"{name}.pt"
        if not file.is_file():
            raise ValueError(f"run {path.name} lacks the {name} model ({file.name})")
        try:
            states[name] = torch.load(file, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
            raise ValueError(f"cannot load {file}: {err}") from err
    return config, states


def load_run(run: int | str | None = None, root: str | Path = DEFAULT_ROOT, *, read, build,
             dtype: torch.dtype = torch.float64, device="cpu") -> SavedRun:
    """The one loader of k7lib's saved runs (chart runs, the link fits, the Ricci-flat fit).

    The run folder is resolved (None: the latest run_N under root; a missing one is a ValueError),
    read(path) -> (config, {name: state dict}) reads what the run saved (`read_fit`, or the chart's
    checkpoint), build(config) -> {name: network} builds the networks on the CPU; each state is
    loaded (a mismatch is a ValueError naming the run) and the networks are returned in `dtype` on
    `device`, in eval mode.
    """
    path = resolve_run(run, root)
    config, states = read(path)
    with torch.device("cpu"):
        networks = build(config)
    for name, net in networks.items():
        try:
            net.load_state_dict(states[name])
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"cannot load the {name} network of run {path.name}: {err}") from err
        networks[name] = net.to(device=device, dtype=dtype).eval()
    return SavedRun(path=path, config=config, networks=networks)
