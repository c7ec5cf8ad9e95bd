"""Backend-neutral checkpoint-directory helpers: atomic directory writes and config files.

A native checkpoint is a directory holding `config.json` (the model config with its format
version) and the weights (`model.safetensors` for PyTorch, an orbax tree for JAX), plus the
training state when saved from a training run.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .config import ConfigError, ModelConfig, config_from_dict, config_to_json

CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or does not match what was asked for."""


def _fsync_dir(path: Path) -> None:
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


@functools.lru_cache(maxsize=1)
def _renameat2():
    """glibc's renameat2 (Linux >= 3.15, glibc >= 2.28), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (renameat2 with RENAME_EXCHANGE). False where the system or
    the file system cannot (then nothing was changed); other failures raise OSError."""
    fn = None if os.environ.get("DREAMER4_NO_EXCHANGE") else _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def recover_directory(path: str | os.PathLike) -> bool:
    """Put back the previous copy of a directory whose replacement was cut off between its two renames.

    Where the file system cannot exchange two paths in one step, `atomic_directory` moves the old copy
    aside under `.NAME.old-*` and then renames the new one in; a crash between the two leaves no `path`.
    Readers call this first: it renames the newest such copy back (True), or does nothing (False)."""
    path = Path(path)
    if path.exists() or path.is_symlink() or not path.parent.is_dir():
        return False
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime_ns)
    if not olds:
        return False
    with contextlib.suppress(FileNotFoundError, FileExistsError, OSError):
        os.rename(olds[-1], path)
        _fsync_dir(path.parent)
        return True
    return path.exists()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one step.

    If the body raises, the temporary directory is removed and `path` is left as it was. Replacing an
    existing directory swaps the two in one atomic rename (Linux); elsewhere it takes two renames, and a
    crash between them is repaired by `recover_directory`, which every reader calls. At no moment is a
    half-written `path` visible; a crash can leave a hidden `.NAME.tmp-*` or `.NAME.old-*` sibling.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists() and not path.is_symlink() and exchange_paths(tmp, path):
            _fsync_dir(path.parent)
            shutil.rmtree(tmp, ignore_errors=True)      # tmp now holds the old copy
            return
        old = None
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_config(directory: str | os.PathLike, cfg: ModelConfig) -> None:
    (Path(directory) / CONFIG_FILE).write_text(config_to_json(cfg))


def read_config(directory: str | os.PathLike) -> ModelConfig:
    """Read and validate `DIR/config.json`; errors name the path and the problem."""
    directory = Path(directory)
    recover_directory(directory)
    if not directory.exists():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a checkpoint directory (expected a directory with "
                              f"{CONFIG_FILE}); to import an upstream .pt file use `python -m convert upstream`")
    cfg_path = directory / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: {directory} is not a native checkpoint")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {e}") from e
    try:
        return config_from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from e
