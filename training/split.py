"""Train / validation / test split by track, never by tile: a track's tiles (which recur under
several labels) all fall on one side. Optionally by group (``film``) so that no film has tracks on
two sides."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.config import TrainingError

SIDES = ("train", "val", "test")


def group_keys(tracks: pd.DataFrame, group_by: str) -> np.ndarray:
    """Each track's value of ``group_by`` as a string (a missing one is a group of its own)."""
    return tracks[group_by].astype("string").fillna("<missing>").to_numpy()


def track_keys(tracks: pd.DataFrame) -> np.ndarray:
    """Each track's ``catalog/track_id``, except that copies of one recording (the same
    ``content_hash``, in another catalog say) all take the first copy's: held out together, a
    model never learns a recording it is then tested or cross-fitted on."""
    own = (tracks["catalog"].astype(str) + "/" + tracks["track_id"].astype(str)).reset_index(
        drop=True)
    if "content_hash" not in tracks:
        return own.to_numpy()
    audio = tracks["content_hash"].astype("string").reset_index(drop=True)
    first = own.groupby(audio.fillna(own)).transform("first")
    return first.to_numpy()


def holdout_groups(tracks: pd.DataFrame, group_by: str | None) -> np.ndarray | None:
    """What cross-validation holds out together: the ``group_by`` values, else copies of one
    recording (:func:`track_keys`); ``None`` when every track stands alone."""
    if group_by:
        return group_keys(tracks, group_by)
    keys = track_keys(tracks)
    return keys if len(set(keys)) < len(keys) else None


def groups_among(groups: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The :func:`holdout_groups` of the tracks at ``rows``; ``None`` when each of them stands
    alone there (copies of a recording on the test side and in training leave the training
    side's tracks alone), so its folds are the ones by track."""
    if groups is None:
        return None
    chosen = groups[rows]
    return chosen if len(np.unique(chosen)) < len(chosen) else None


def _keeps_later_sides(carries: np.ndarray, side: np.ndarray, i: int,
                       later: tuple[str, ...]) -> bool:
    """Whether group ``i`` can be taken and still leave each class it carries a free group for
    every one of the ``later`` sides that has none of that class yet."""
    rest = side == ""
    rest[i] = False
    for c in np.flatnonzero(carries[i]):
        lacking = sum(not (carries[:, c] & (side == s)).any() for s in later)
        if carries[rest, c].sum() < lacking:
            return False
    return True


def split_tracks(tracks: pd.DataFrame, test_size: float = 0.1, val_size: float = 0.2,
                 seed: int = 0, group_by: str | None = None,
                 targets: np.ndarray | None = None) -> pd.Series:
    """``train``/``val``/``test`` per row of ``tracks`` (index kept).

    Groups (tracks, copies of one recording together, or the values of ``group_by``) are
    shuffled with ``seed``; whole groups go
    to test until ``test_size`` of the tiles are there, then to validation until ``val_size`` of
    the rest, the others to training. With ``targets`` (multi-hot per track), test and
    validation first take one group of each class, rarest first, where the class has groups
    enough to leave some to the sides after them, so small classes are seen on every side; and
    the last group that could give a class training tracks goes to training.
    """
    if group_by is not None and group_by not in tracks.columns:
        raise TrainingError(f"--group-by {group_by!r}: no such column (columns: "
                            f"{', '.join(map(str, tracks.columns))})")
    keys = group_keys(tracks, group_by) if group_by else track_keys(tracks)
    frame = pd.DataFrame({"key": keys, "tiles": tracks["n_tiles"].clip(lower=1).to_numpy()})
    weight = frame.groupby("key", sort=True)["tiles"].sum()
    order = np.random.default_rng(seed).permutation(len(weight))
    groups, tiles = weight.index.to_numpy()[order], weight.to_numpy()[order]
    quota = {"test": test_size * tiles.sum()}
    quota["val"] = val_size * (tiles.sum() - quota["test"])
    taken = {"test": 0.0, "val": 0.0}
    side = np.full(len(groups), "", dtype=object)
    carries = None
    if targets is not None and len(targets):
        carries = pd.DataFrame(targets > 0).groupby(keys).max().loc[groups].to_numpy()
        # test takes a group where it leaves every class of the group one for validation and
        # one for training, validation where it leaves one for training: a side that lacks a
        # class is refused by training, a test side without it only measures it less
        for name, later in (("test", ("val", "train")), ("val", ("train",))):
            if quota[name] <= 0:
                continue
            for c in np.argsort(carries.sum(0), kind="stable"):
                if (carries[:, c] & (side == name)).any():
                    continue
                free = np.flatnonzero(carries[:, c] & (side == ""))
                pick = next((g for g in free if _keeps_later_sides(carries, side, g, later)),
                            None)
                if pick is not None:
                    side[pick] = name
                    taken[name] += tiles[pick]
    for i in np.flatnonzero(side == ""):  # whole groups, test first, then validation
        # the last group that could still give one of its classes training tracks
        if carries is not None and not _keeps_later_sides(carries, side, i, ("train",)):
            side[i] = "train"
            continue
        for name in ("test", "val"):
            if taken[name] < quota[name]:
                taken[name] += tiles[i]
                side[i] = name
                break
        else:
            side[i] = "train"
    if "train" not in side or "val" not in side:
        raise TrainingError(f"too few {'groups' if group_by else 'tracks'} ({len(groups)}) "
                            "to split into train, validation and test")
    lookup = dict(zip(groups, side))
    return pd.Series([lookup[k] for k in keys], index=tracks.index, name="side")
