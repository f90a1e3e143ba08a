"""Two file-system rules used across the package: how a private file is replaced atomically,
and how the feature repository's code becomes importable."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def put_first_on_sys_path(root: Path) -> None:
    """Put a feature repository first on sys.path so its modules (and their imports) resolve
    before any other repository's modules of the same names."""
    root_str = str(root.resolve())
    if root_str in sys.path:
        sys.path.remove(root_str)
    sys.path.insert(0, root_str)
