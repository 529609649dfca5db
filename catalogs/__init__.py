"""Catalogs of tracks: reading and validation, genre vocabularies, and the demo library."""

from catalogs.genres import IMDB_GENRES, STUDY_GENRES, normalize_genre, normalize_genres
from catalogs.reader import Catalog, CatalogError, UnknownGenreWarning, read_catalog

__all__ = ["IMDB_GENRES", "STUDY_GENRES", "Catalog", "CatalogError", "UnknownGenreWarning",
           "normalize_genre", "normalize_genres", "read_catalog"]
