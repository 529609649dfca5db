"""The store's exceptions."""

from __future__ import annotations

import numbers

from featurestore.statuses import FAILURE_STATUSES


class FeatureStoreError(Exception):
    """Base class of the store's own errors."""


class StoreError(FeatureStoreError):
    """The store cannot be used as asked: wrong layout version, busy, unreadable, mismatched."""


class StoreBusyError(StoreError):
    """Another writer holds the store's lock."""


class StoreLookupError(StoreError, ValueError):
    """A request names a catalog, feature set or scored version that the store does not hold,
    or leaves open a choice among several: the request's error (exit code 2), not the
    store's."""


class UnheldLabelWarning(UserWarning):
    """A query asked for a label, a film or a composer that no track holds (a misspelt genre,
    say): its empty answer is not a finding."""


def check_counts(**counts: int | None) -> None:
    """Raise ``ValueError`` for a count that is not a whole number, or is below one (``top``,
    ``n_workers``, ``batch_size`` ...): slicing with ``top=-2`` would quietly mean "all but
    two", and ``top=2.5`` fail deep inside pandas."""
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} {value!r}: must be a whole number")
        if value < 1:
            raise ValueError(f"{name} {value}: must be at least 1")


class TrackFailure(FeatureStoreError):
    """One track cannot be built; ``status`` is a key of
    :data:`~featurestore.statuses.FAILURE_STATUSES`."""

    def __init__(self, status: str, reason: str):
        if status not in FAILURE_STATUSES:
            raise ValueError(f"unknown track status {status!r}")
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason
