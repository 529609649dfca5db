"""A distributed dataset-and-feature store for music audio.

>>> import featurestore
>>> report = featurestore.build("catalog.csv", "./store")       # doctest: +SKIP
>>> store = featurestore.open("./store")                        # doctest: +SKIP
>>> store.tracks()          # pandas DataFrame, one row per track   # doctest: +SKIP
>>> store.tiles()           # lazy xarray.DataArray of MFCC tiles   # doctest: +SKIP
"""

from featurestore.build import BuildReport, build
from featurestore.errors import StoreBusyError, StoreError, TrackFailure
from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.store import FeatureSet, Store, open

__all__ = ["BuildReport", "FeatureSet", "FeatureSpec", "Store", "StoreBusyError", "StoreError",
           "TileEncoding", "TrackFailure", "build", "open"]
__version__ = "0.1.0"
