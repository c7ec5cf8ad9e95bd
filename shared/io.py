"""Backend-neutral checkpoint-directory helpers: atomic directory writes and config files.

A native checkpoint is a directory holding `config.json` (the model config with its format
version) and the weights (`model.safetensors` for PyTorch, an orbax tree for JAX), plus the
training state when saved from a training run.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` in one rename.

    If the body raises, the temporary directory is removed and `path` is left as it was. A crash
    can at worst leave a hidden `.NAME.tmp-*` or `.NAME.old-*` sibling, never a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
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
