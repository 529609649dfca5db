"""Exit codes of the ``featurestore`` command, and which failure gives which.

One definition for the command line, its ``--help`` and Python callers (``BuildReport.exit_code``
and ``ScoreReport.exit_code`` are members of :class:`ExitCode`; :func:`exit_code_for` maps an
exception as the command does).
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    """What the command's exit status means; ``meaning`` is the phrase ``--help`` shows."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    OK = 0, "ok"
    ERROR = 1, "unexpected error"
    USAGE = 2, "bad command line or request"
    CATALOG = 3, "invalid catalog (nothing changed)"
    TRACKS_FAILED = 4, "built, but some tracks failed (each recorded with its reason)"
    STORE = 5, ("store unusable (busy, other layout version, permission denied, no space, "
                "missing bucket)")
    INTERRUPTED = 130, "interrupted (committed work is kept)"


def describe() -> str:
    """Every exit code with its meaning, one line for ``--help``."""
    return "exit codes: " + "; ".join(f"{code.value} {code.meaning}" for code in ExitCode)


#: OSErrors by which storage refuses a write, beside permission denied and not found.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "quota exceeded",
                  errno.EROFS: "read-only file system"}


def storage_refusal(exc: BaseException) -> str | None:
    """Why the store's storage refused us (denied, full, read-only, or missing, as a bucket
    is), with the path when known; ``None`` for any other error."""
    if not isinstance(exc, OSError) or not (
            isinstance(exc, (PermissionError, FileNotFoundError))
            or exc.errno in STORAGE_ERRNOS):
        return None
    kind = ("permission denied" if isinstance(exc, PermissionError)
            else STORAGE_ERRNOS.get(exc.errno))
    text = exc.strerror or str(exc)
    reason = kind if kind and kind.lower() in text.lower() else (
        f"{kind}: {text}" if kind else text)
    return f"{reason} ({exc.filename})" if exc.filename else reason


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code the command gives for ``exc``: an invalid catalog, an unusable store
    (the store's own errors and storage refusals), a bad request (``ValueError``, and a name
    the store does not hold), an
    interruption, or an unexpected error."""
    from catalogs.reader import CatalogError  # pandas: only once something failed
    from featurestore.errors import StoreError, StoreLookupError

    if isinstance(exc, CatalogError):
        return ExitCode.CATALOG
    if isinstance(exc, StoreLookupError):
        return ExitCode.USAGE
    if isinstance(exc, StoreError) or storage_refusal(exc) is not None:
        return ExitCode.STORE
    if isinstance(exc, ValueError):
        return ExitCode.USAGE
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.ERROR
