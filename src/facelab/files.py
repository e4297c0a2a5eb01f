"""Atomic file writes and sha256 digests cached per process: the two file primitives everything else shares.

* :func:`atomic_path` / :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`: the
  content goes to a temporary file in the destination's folder (same file system), is flushed to disk, and only
  then replaces the destination with :func:`os.replace`. A process killed mid-write leaves the old file intact
  (plus, at worst, a hidden ``.<name>.*.part`` temporary); readers never see half a file.
* :func:`sha256_file`: the hex sha256 of a file, computed once per process for a given (path, size, mtime, inode);
  a file rewritten afterwards is hashed again.

This module imports nothing from :mod:`facelab`, so the bottom layer (``assets``, ``checkpoints``, ``book``) can
use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "sha256_file",
           "clear_sha256_cache"]

_SHA256_CACHE: dict[tuple, str] = {}
_LOCK = threading.Lock()


def _file_key(path: Path) -> tuple:
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def sha256_file(path, *, chunk: int = 1 << 20, cache: bool = True) -> str:
    """Hex sha256 of the file at ``path``, cached per process by (resolved path, size, mtime, ctime, inode).

    The cache makes repeated verification of the same large file free; any rewrite changes the key (a replaced file
    has a new inode, an edited one a new mtime/ctime), so it is hashed again. ``cache=False`` always re-reads.
    """
    path = Path(path)
    key = _file_key(path)
    if cache:
        with _LOCK:
            hit = _SHA256_CACHE.get(key)
        if hit is not None:
            return hit
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if cache and _file_key(path) == key:   # unchanged while we read it
        with _LOCK:
            _SHA256_CACHE[key] = digest
    return digest


def clear_sha256_cache() -> None:
    """Forget every cached digest (tests)."""
    with _LOCK:
        _SHA256_CACHE.clear()


def _umask() -> int:
    with _LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Context manager yielding a temporary path next to ``path``; on a clean exit the temporary file is flushed
    to disk and moved onto ``path`` (:func:`os.replace`), on an exception it is deleted and ``path`` is untouched.

    For writers that want a file name (``safetensors.torch.save_file(tensors, str(tmp))``)::

        with atomic_path(dest) as tmp:
            save_file(tensors, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        # mkstemp creates the file private (0600); give it the mode a plain open() would (or the old file's)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as fh:   # the writer may have closed and reopened it: flush what is on disk
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``Path(path)``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path, obj: Any, *, indent: int | None = 1, **dumps_kwargs) -> Path:
    """Serialise ``obj`` as JSON (``json.dumps(obj, indent=indent, **dumps_kwargs)``) and write it atomically.

    The object is serialised *before* the file is touched, so an unserialisable value leaves the old file as is.
    """
    text = json.dumps(obj, indent=indent, **dumps_kwargs)
    return atomic_write_text(path, text + "\n")
