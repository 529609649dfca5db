"""fsspec URLs for stores and audio: local paths, ``file://``, ``memory://``, ``s3://``, ...

Local files are written to a temporary name and renamed, so a reader sees the old file or the new
one, never half; an object store's single PUT is atomic by itself.
"""

from __future__ import annotations

import difflib
import functools
import inspect
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


#: Protocols whose filesystem keeps keyword arguments it does not take without using them
#: (they reach only fsspec's base class), so a misspelt option would change nothing, silently.
KEEPS_UNKNOWN_OPTIONS = ("s3", "s3a")
#: Options fsspec's base class takes for every filesystem (listings and instance caches).
_BASE_OPTIONS = ("use_listings_cache", "listings_expiry_time", "max_paths",
                 "skip_instance_cache")


@functools.lru_cache
def _option_names(cls: type) -> frozenset[str]:
    """The keyword arguments ``cls`` (a filesystem class) names in its constructors."""
    names = set(_BASE_OPTIONS)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(p.name for p in inspect.signature(vars(klass)["__init__"])
                         .parameters.values()
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return frozenset(names - {"self"})


def check_storage_options(url: str, storage_options: dict | None) -> None:
    """Refuse top-level ``storage_options`` keys that ``url``'s filesystem would keep unused
    (for the protocols of :data:`KEEPS_UNKNOWN_OPTIONS`), naming the closest it takes: a
    misspelt ``endpoint_url`` would otherwise send the requests elsewhere without a word."""
    protocol = fsspec.core.split_protocol(url)[0]
    if not storage_options or protocol not in KEEPS_UNKNOWN_OPTIONS:
        return
    cls = fsspec.get_filesystem_class(protocol)
    known = _option_names(cls)
    for key in storage_options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"storage option {key!r} is not one that {cls.__name__} takes, "
                             f"for {url}{hint}")


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(fs, path)`` for ``url``; local filesystems create parent folders on write. Options
    that the filesystem would keep unused are refused (:func:`check_storage_options`)."""
    if is_local(url):
        return LocalFileSystem(auto_mkdir=True), normalize_url(url)
    check_storage_options(url, storage_options)
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
