"""fsspec URLs for stores and audio: local paths, ``file://``, ``memory://``, ``s3://``, ...

Local files are written to a temporary name and renamed, so a reader sees the old file or the new
one, never half; an object store's single PUT is atomic by itself.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_local(url: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def strip_file_scheme(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def normalize_url(url: str) -> str:
    """Absolute path for local stores (so a store is named the same from any working
    directory), the URL unchanged otherwise, never with a trailing slash."""
    url = str(url)
    if is_local(url):
        return os.path.abspath(os.path.expanduser(strip_file_scheme(url)))
    return url.rstrip("/")


def join(base: str, *parts: str) -> str:
    return posixpath.join(base, *parts)


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(fs, path)`` for ``url``; local filesystems create parent folders on write."""
    if is_local(url):
        return LocalFileSystem(auto_mkdir=True), normalize_url(url)
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` at ``path`` so that readers never see a partial file."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)
