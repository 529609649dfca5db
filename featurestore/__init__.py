"""A distributed dataset-and-feature store for music audio.

>>> import featurestore
>>> report = featurestore.build("catalog.csv", "./store")       # doctest: +SKIP
>>> store = featurestore.open("./store")                        # doctest: +SKIP
>>> store.tracks()          # pandas DataFrame, one row per track   # doctest: +SKIP
>>> store.tiles()           # lazy xarray.DataArray of MFCC tiles   # doctest: +SKIP

``build``, ``open`` and the classes are imported on first use (see :mod:`featurestore.lazy`).
"""

from featurestore.errors import (StoreBusyError, StoreError, StoreLookupError, TrackFailure,
                                 UnheldLabelWarning)
from featurestore.lazy import export_lazily
from featurestore.spec import FeatureSpec, TileEncoding

__all__ = ["BuildReport", "FeatureSet", "FeatureSpec", "Store", "StoreBusyError", "StoreError",
           "StoreLookupError", "TileEncoding", "TrackFailure", "UnheldLabelWarning", "build",
           "open"]
__version__ = "0.1.0"

export_lazily(__name__, {"BuildReport": "featurestore.build", "build": "featurestore.build",
                         "FeatureSet": "featurestore.store", "Store": "featurestore.store",
                         "open": "featurestore.store"})
