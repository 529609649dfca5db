"""Figures of the catalog statistics, written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os

import pandas as pd

from catalogs.labels import DEFAULT_LABELS, label_lists
from catalogs.statistics import cooccurrence, membership, year_by_label


def save_figure(fig, path: str | None = None):
    """Lay out, write as PNG to ``path`` (returned) or, without one, return the PNG bytes;
    then close the figure."""
    import io

    plt = pyplot()
    fig.tight_layout()
    target = path or io.BytesIO()
    fig.savefig(target, format="png", dpi=100)
    plt.close(fig)
    return path if path else target.getvalue()


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: never needs a display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def membership_chart(frame: pd.DataFrame, path: str, labels: str = DEFAULT_LABELS) -> str:
    """Horizontal bars: tracks and tiles per label."""
    plt = pyplot()
    table = membership(frame, labels).iloc[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * len(table) + 1.5), sharey=True)
    axes[0].barh(table.index, table["tracks"], color="tab:blue")
    axes[0].set_xlabel("tracks")
    axes[1].barh(table.index, table["tiles"], color="tab:orange")
    axes[1].set_xlabel("tiles")
    fig.suptitle(f"class membership by {labels}")
    return save_figure(fig, path)


def bigram_heatmap(frame: pd.DataFrame, path: str, labels: str = DEFAULT_LABELS) -> str:
    """Heatmap of tracks per label pair (diagonal: tracks per label), with counts."""
    plt = pyplot()
    table = cooccurrence(frame, labels)
    n = len(table)
    fig, ax = plt.subplots(figsize=(0.5 * n + 3, 0.5 * n + 2))
    image = ax.imshow(table.to_numpy(), cmap="viridis")
    ax.set_xticks(range(n), table.columns, rotation=90)
    ax.set_yticks(range(n), table.index)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(table.iat[i, j]), ha="center", va="center", fontsize=7,
                    color="white")
    fig.colorbar(image, ax=ax, label="tracks")
    ax.set_title(f"{labels} co-occurrence")
    return save_figure(fig, path)


def year_distribution(frame: pd.DataFrame, path: str, labels: str = DEFAULT_LABELS) -> str:
    """Box plot of release years per label, newest mean first."""
    plt = pyplot()
    order = list(year_by_label(frame, labels).index)
    long = pd.DataFrame({"label": label_lists(frame, labels),
                         "year": frame["year"].astype("Float64")}).explode("label")
    long = long.dropna(subset=["label", "year"])
    data = [long.loc[long["label"] == name, "year"].astype(float).to_numpy() for name in order]
    fig, ax = plt.subplots(figsize=(0.6 * len(order) + 3, 4.5))
    if order:
        ax.boxplot(data, tick_labels=order)
    ax.tick_params(axis="x", rotation=60)
    ax.set_ylabel("release year")
    ax.set_title(f"release year by {labels}")
    return save_figure(fig, path)


def write_plots(frame: pd.DataFrame, directory: str, labels: str = DEFAULT_LABELS) -> list[str]:
    """Write the three figures into ``directory``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    return [membership_chart(frame, os.path.join(directory, "membership.png"), labels),
            bigram_heatmap(frame, os.path.join(directory, "bigrams.png"), labels),
            year_distribution(frame, os.path.join(directory, "years.png"), labels)]
