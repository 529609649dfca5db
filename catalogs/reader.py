"""Reading and validating track catalogs (CSV, Parquet, JSON Lines; local or any fsspec URL).

A catalog is one row per track. ``path`` is required; ``track_id``, ``title``, ``film``,
``composer``, ``year`` and ``genres`` are known optional columns; every other column is kept as
metadata. Validation happens in full before any work is done, so a bad catalog changes nothing.
"""

from __future__ import annotations

import csv
import datetime
import io
import posixpath
import re
import warnings
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pandas as pd

from catalogs.genres import normalize_genres

#: Columns the store knows the meaning of; any other column is free metadata.
KNOWN_COLUMNS: tuple[str, ...] = ("track_id", "path", "title", "film", "composer", "year", "genres")
TEXT_COLUMNS: tuple[str, ...] = ("title", "film", "composer")
#: Release years a catalog may hold: recordings of old music carry the composition's year
#: (Machaut 1360, Bach 1727), so anything from 1000 to a few years ahead (announced releases).
YEAR_RANGE: tuple[int, int] = (1000, datetime.date.today().year + 5)

_FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
}


class CatalogError(ValueError):
    """A catalog that cannot be used, with the file and, where known, the row and column."""

    def __init__(self, message: str, *, source: str, row: int | None = None,
                 column: str | None = None):
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {message}")
        self.source, self.row, self.column = source, row, column


class UnknownGenreWarning(UserWarning):
    """Genre names outside IMDB's vocabulary were found (and kept as given)."""


@dataclass
class Catalog:
    """A validated catalog: its name, where it came from, and one row per track.

    ``frame`` has a string ``track_id`` (unique), ``path`` resolved to an absolute path or URL,
    ``genres`` as lists of normalized names, ``year`` as nullable integers, and every other column
    of the source as given.
    """

    name: str
    source: str
    frame: pd.DataFrame
    unknown_genres: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)


def catalog_name(source: str) -> str:
    """Default catalog name: the file's stem (``/data/score-library.csv`` -> ``score-library``)."""
    base = posixpath.basename(str(source).rstrip("/"))
    for suffix in sorted(_FORMATS, key=len, reverse=True):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return base


def _row_label(fmt: str, index: int) -> int:
    # Users count rows as they see them: a CSV's header is line 1, so data row 0 is line 2.
    return index + 2 if fmt in ("csv", "tsv") else index + 1


def _text_of(data: bytes, source: str) -> str:
    """A text catalog's bytes as text: UTF-8, with or without the byte-order mark that
    Excel writes; anything else is refused at the line that is not UTF-8, rather than read
    with a guessed encoding that would garble titles."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[:exc.start]
        line = (before.count(b"\n") if b"\n" in data else before.count(b"\r")) + 1
        raise CatalogError(f"line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the catalog as UTF-8 (in Excel: CSV UTF-8)",
                           source=source) from None


def _separator(text: str) -> str:
    """The field separator of a ``.csv`` file: the first of ``,``, ``;`` (what spreadsheets
    write in many locales) and tab whose header has a ``path`` column; ``,`` when none has
    (the error then names the columns). ``|`` separates the genres within a cell."""
    header = text.splitlines()[0] if text else ""  # \n, \r\n or Excel for Mac's \r
    for sep in (",", ";", "\t"):
        if "path" in (name.strip() for name in next(csv.reader([header], delimiter=sep))):
            return sep
    return ","


def _read_table(source: str, fmt: str, storage_options: dict | None) -> pd.DataFrame:
    with fsspec.open(source, "rb", **(storage_options or {})) as f:
        if fmt in ("csv", "tsv"):
            text = _text_of(f.read(), source)
            sep = _separator(text) if fmt == "csv" else "\t"
            return _read_csv(text, sep, source)
        if fmt == "parquet":
            return pd.read_parquet(f)
        return pd.read_json(f, lines=True, dtype=False)


def _read_csv(text: str, sep: str, source: str) -> pd.DataFrame:
    """A CSV's rows, every row as wide as the header and every column named once (pandas
    would shift a row with an extra field into an index, or rename a repeated column)."""
    header = [name.strip() for name in next(csv.reader([text.splitlines()[0] if text else ""],
                                                       delimiter=sep))]
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise CatalogError(f"column(s) {', '.join(map(repr, repeated))} appear more than once "
                           "in the header", source=source, row=1)
    try:
        # blank lines kept (and then skipped as rows with no value): row numbers stay the file's
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                            na_values=[""], skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found is None:
            raise
        expected, line, saw = map(int, found.groups())
        raise _too_wide(source, line, saw, expected, sep) from None
    if not isinstance(frame.index, pd.RangeIndex):  # the first row had more fields
        lines = text.splitlines()
        width = len(next(csv.reader([lines[1] if len(lines) > 1 else ""], delimiter=sep)))
        raise _too_wide(source, 2, width, len(header), sep)
    return frame


def _too_wide(source: str, line: int, fields: int, expected: int, sep: str) -> CatalogError:
    example = f"Drama{sep}Crime".replace("\t", "<tab>")
    return CatalogError(f"{fields} fields where the header has {expected}; quote a value that "
                        f"holds the separator, as in \"{example}\"", source=source, row=line)


def _resolve_path(path: str, base_dir: str, base_protocol: str) -> str:
    if "://" in path or path.startswith("/"):
        return path
    if base_protocol in ("file", "local"):
        return posixpath.normpath(posixpath.join(base_dir, path))
    return f"{base_protocol}://" + posixpath.normpath(posixpath.join(base_dir, path))


def _parse_year(value: object, source: str, row: int) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise CatalogError(f"year {text!r} is not a number", source=source, row=row,
                           column="year") from None
    if not np.isfinite(number) or number != int(number):
        raise CatalogError(f"year {text!r} is not a whole year", source=source, row=row,
                           column="year")
    year = int(number)
    lo, hi = YEAR_RANGE
    if not lo <= year <= hi:
        raise CatalogError(f"year {year} cannot be a release year (years from {lo} to {hi} "
                           "are accepted)", source=source, row=row, column="year")
    return year


def _text(value: object) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def read_catalog(source: str, name: str | None = None, *,
                 storage_options: dict | None = None, warn: bool = True) -> Catalog:
    """Read and validate a catalog file.

    Parameters
    ----------
    source : str
        Local path or fsspec URL of a ``.csv``, ``.tsv``, ``.parquet`` or ``.jsonl`` file.
        Text is UTF-8 (a byte-order mark is allowed); a ``.csv`` may be separated by ``,``,
        ``;`` or tabs. Rows with no value at all are skipped.
    name : str, optional
        The catalog's name in the store; defaults to the file's stem.
    storage_options : dict, optional
        Passed to fsspec for the catalog file (and kept for its relative audio paths).
    warn : bool
        Emit one :class:`UnknownGenreWarning` listing genre names outside IMDB's list.

    Raises
    ------
    CatalogError
        The file is unreadable, not UTF-8 text or empty, has no ``path`` column, a row has
        no path, an unparsable or out-of-range year, or a ``track_id`` repeats. The message
        names the file, row and column.
    """
    source = str(source)
    lower = source.lower()
    fmt = next((f for suffix, f in _FORMATS.items() if lower.endswith(suffix)), None)
    if fmt is None:
        raise CatalogError("unknown catalog format; use .csv, .tsv, .parquet or .jsonl",
                           source=source)
    try:
        raw = _read_table(source, fmt, storage_options)
    except FileNotFoundError:
        raise CatalogError("file not found", source=source) from None
    except CatalogError:
        raise
    except Exception as exc:  # parse errors from pandas/pyarrow come in many types
        raise CatalogError(f"cannot read the file ({type(exc).__name__}: {exc})",
                           source=source) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.columns.duplicated().any():
        dup = raw.columns[raw.columns.duplicated()][0]
        raise CatalogError("column appears twice", source=source, column=dup)
    # Rows with no value at all (a spreadsheet's trailing ",,,,") are not tracks. The rest
    # keep their position in the file, which errors name.
    raw = raw.reset_index(drop=True)
    raw = raw[raw.notna().any(axis=1)]
    rows = [_row_label(fmt, i) for i in raw.index]
    if len(raw) == 0:
        raise CatalogError("the catalog has no rows", source=source)
    if "path" not in raw.columns:
        raise CatalogError(f"no 'path' column (columns are: {', '.join(raw.columns)})",
                           source=source, column="path")

    fs, fs_path = fsspec.core.url_to_fs(source, **(storage_options or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    base_dir = posixpath.dirname(fs_path if protocol not in ("file", "local")
                                 else posixpath.abspath(fs_path))

    paths: list[str] = []
    for i, value in enumerate(raw["path"].tolist()):
        text = _text(value)
        if text is None:
            raise CatalogError("empty path", source=source, row=rows[i], column="path")
        paths.append(_resolve_path(text, base_dir, protocol))

    if "track_id" in raw.columns:
        ids = []
        for i, value in enumerate(raw["track_id"].tolist()):
            text = _text(value)
            if text is None:
                raise CatalogError("empty track_id", source=source, row=rows[i],
                                   column="track_id")
            if isinstance(value, float) and value == int(value):
                text = str(int(value))  # JSON/Parquet numbers: 42.0 and 42 name one track
            ids.append(text)
        id_column = "track_id"
    else:
        ids = [str(p) for p in raw["path"].tolist()]
        id_column = "path"
    first_seen: dict[str, int] = {}
    for i, tid in enumerate(ids):
        if tid in first_seen:
            hint = "" if id_column == "track_id" else " (no track_id column: give each row one)"
            raise CatalogError(
                f"duplicate {id_column} {tid!r}, first at row {rows[first_seen[tid]]}{hint}",
                source=source, row=rows[i], column=id_column)
        first_seen[tid] = i

    frame = pd.DataFrame({"track_id": pd.array(ids, dtype="string"),
                          "path": pd.array(paths, dtype="string")})
    for col in TEXT_COLUMNS:
        values = raw[col].tolist() if col in raw.columns else [None] * len(raw)
        frame[col] = pd.array([_text(v) for v in values], dtype="string")
    years = ([_parse_year(v, source, row) for row, v in zip(rows, raw["year"])]
             if "year" in raw.columns else [None] * len(raw))
    frame["year"] = pd.array(years, dtype="Int64")
    unknown: list[str] = []
    genres: list[list[str]] = []
    cells = raw["genres"].tolist() if "genres" in raw.columns else [None] * len(raw)
    for cell in cells:
        names, odd = normalize_genres(cell)
        genres.append(names)
        unknown.extend(n for n in odd if n not in unknown)
    frame["genres"] = genres
    for col in raw.columns:
        if col not in KNOWN_COLUMNS:
            frame[col] = raw[col].to_numpy()

    if unknown and warn:
        warnings.warn(f"{source}: genre names outside IMDB's list kept as given: "
                      f"{', '.join(sorted(unknown))}", UnknownGenreWarning, stacklevel=2)
    return Catalog(name=name or catalog_name(source), source=source, frame=frame,
                   unknown_genres=sorted(unknown))
