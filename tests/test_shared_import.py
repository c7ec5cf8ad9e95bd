"""`shared` is numpy + stdlib only: it must import (every module) with torch and jax unavailable."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_shared_imports_without_torch_or_jax():
    code = textwrap.dedent("""
        import importlib, pkgutil, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'jax', 'jaxlib', 'flax', 'optax', 'orbax'):
                    raise ImportError(f'blocked import of {name}')
                return None

        sys.meta_path.insert(0, Block())
        import shared
        names = [m.name for m in pkgutil.walk_packages(shared.__path__, 'shared.')]
        for name in names:
            importlib.import_module(name)
        bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'flax')]
        assert not bad, bad
        print(len(names), 'modules')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "modules" in out.stdout
