"""The build status of each catalog track, as the manifest records it."""

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
