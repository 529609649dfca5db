"""Exceptions and the per-track statuses the store records."""

from __future__ import annotations

#: Status of a track whose tiles are stored and served.
OK = "ok"
#: In the catalog, not yet built (a build was interrupted, or never run for this feature set).
PENDING = "pending"
#: Was in the catalog, is no longer: its tiles are not served.
REMOVED = "removed"
#: A second catalog row naming a file an earlier row names.
DUPLICATE = "duplicate"

#: Failure statuses: the track is recorded with the reason, the rest of the library builds.
FAILURE_STATUSES: dict[str, str] = {
    "missing": "the audio file does not exist",
    "empty": "the audio file has zero bytes",
    "not_audio": "the file is not audio any decoder here reads",
    "corrupt": "the audio is truncated or damaged",
    "invalid_samples": "the audio holds NaN or infinite samples",
    "silent": "the audio holds no signal (digital silence or a constant)",
    "too_short": "the audio is shorter than one tile",
    DUPLICATE: "an earlier row of the catalog lists the same file",
    "error": "an unexpected error (retried on the next build)",
}


class FeatureStoreError(Exception):
    """Base class of the store's own errors."""


class StoreError(FeatureStoreError):
    """The store cannot be used as asked: wrong layout version, busy, unreadable, mismatched."""


class StoreBusyError(StoreError):
    """Another writer holds the store's lock."""


class TrackFailure(FeatureStoreError):
    """One track cannot be built; ``status`` is a key of :data:`FAILURE_STATUSES`."""

    def __init__(self, status: str, reason: str):
        if status not in FAILURE_STATUSES:
            raise ValueError(f"unknown track status {status!r}")
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason
