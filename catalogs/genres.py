"""IMDB's genre vocabulary and the normalization of genre names found in catalogs.

Catalogs spell genres every which way (``sci-fi``, ``Science Fiction``, ``SciFi``); a tagger
must see one name per genre. Names outside IMDB's list are kept as given, because studios keep
vocabularies of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

#: IMDB's genre names, spelled as IMDB spells them.
IMDB_GENRES: tuple[str, ...] = (
    "Action", "Adult", "Adventure", "Animation", "Biography", "Comedy", "Crime",
    "Documentary", "Drama", "Family", "Fantasy", "Film-Noir", "Game-Show", "History",
    "Horror", "Music", "Musical", "Mystery", "News", "Reality-TV", "Romance", "Sci-Fi",
    "Short", "Sport", "Talk-Show", "Thriller", "War", "Western",
)

#: The ten classes the reference study trains on, after dropping the rarest.
STUDY_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Comedy", "Crime", "Drama", "Fantasy", "Musical", "Romance",
    "Sci-Fi", "Thriller",
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES: dict[str, str] = {_key(g): g for g in IMDB_GENRES}
_ALIASES.update({
    "sciencefiction": "Sci-Fi",
    "scifi": "Sci-Fi",
    "sf": "Sci-Fi",
    "noir": "Film-Noir",
    "filmnoir": "Film-Noir",
    "biopic": "Biography",
    "bio": "Biography",
    "animated": "Animation",
    "documentaries": "Documentary",
    "romantic": "Romance",
    "sports": "Sport",
    "realitytv": "Reality-TV",
    "gameshow": "Game-Show",
    "talkshow": "Talk-Show",
})

# Separators users put between genres in one string cell.
_SPLIT = re.compile(r"[|,;/]")


def normalize_genre(name: str) -> tuple[str, bool]:
    """Return ``(name, known)``: IMDB's spelling when the name is an IMDB genre or an alias of
    one, else the name stripped of surrounding white space and ``known=False``."""
    canonical = _ALIASES.get(_key(name))
    if canonical is not None:
        return canonical, True
    return name.strip(), False


def _missing(value: object) -> bool:
    """None, NaN or pd.NA (a scalar that pandas calls missing)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def split_labels(value: object) -> list[str]:
    """Turn one catalog cell into a list of label strings.

    Accepts a list, tuple or array of names, a string separated by ``|``, ``,``, ``;`` or ``/``,
    or a missing value (empty list). Empty names are dropped and duplicates kept once, in order.
    """
    if isinstance(value, str):
        items: Iterable[object] = _SPLIT.split(value)
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = value
    elif _missing(value):
        return []
    else:
        items = [value]
    out: list[str] = []
    for item in items:
        if _missing(item):
            continue
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def normalize_genres(value: object) -> tuple[list[str], list[str]]:
    """Parse and normalize one catalog cell of genres.

    Returns ``(genres, unknown)``: the normalized names in order without duplicates, and the
    names that are not IMDB genres (kept in ``genres`` as given).
    """
    genres: list[str] = []
    unknown: list[str] = []
    for raw in split_labels(value):
        name, known = normalize_genre(raw)
        if name not in genres:
            genres.append(name)
        if not known and name not in unknown:
            unknown.append(name)
    return genres, unknown
