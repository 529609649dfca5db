"""The evaluation report: a markdown page, its PNG figures and the figures as JSON."""

from __future__ import annotations

import numpy as np

from catalogs.plots import pyplot, save_figure
from featurestore.urls import atomic_write, filesystem, join
from scoring.aggregate import POOLED
from scoring.evaluate import Evaluation, format_figure
from training.metrics import top_k, unmeasurable_label_ap

FIGURES = ("per_class_f1.png", "score_distributions.png", "cooccurrence.png")


def per_class_figure(ev: Evaluation) -> bytes:
    """Track-level precision, recall and F1 per class (top-k labels as predictions)."""
    plt = pyplot()
    rows = ev.track["per_class"]["classes"]
    x = np.arange(len(ev.classes))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(x) + 2), 4))
    for i, metric in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (i - 1) * 0.27, [rows[c][metric] for c in ev.classes], 0.27, label=metric)
    ax.set_xticks(x, ev.classes, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"{ev.model}: per-class scores, top {ev.k} labels as predictions "
                 f"({ev.split}, tracks)")
    ax.legend()
    return save_figure(fig)


def score_distribution_figure(ev: Evaluation) -> bytes:
    """Per class, the track scores of tracks that carry it against those that do not."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(ev.classes) + 2), 4))
    data, positions, colors = [], [], []
    for i, _ in enumerate(ev.classes):
        positive = ev.truth[:, i] > 0
        for j, part in enumerate((ev.scores[positive, i], ev.scores[~positive, i])):
            data.append(part if len(part) else np.array([np.nan]))
            positions.append(3 * i + j)
            colors.append("tab:green" if j == 0 else "tab:gray")
    boxes = ax.boxplot(data, positions=positions, widths=0.8, patch_artist=True,
                       showfliers=False)
    for patch, color in zip(boxes["boxes"], colors):
        patch.set_facecolor(color)
    ax.set_xticks([3 * i + 0.5 for i in range(len(ev.classes))], ev.classes, rotation=45,
                  ha="right")
    ax.set_ylabel("track score")
    ax.set_title("scores of tracks with the label (green) and without (gray)")
    return save_figure(fig)


def cooccurrence_figure(ev: Evaluation) -> bytes:
    """Label co-occurrence in the truth, in the top-k predictions, and truth against
    predictions (tracks)."""
    plt = pyplot()
    truth = (ev.truth > 0).astype(np.int64)
    predicted = top_k(ev.scores, ev.k).astype(np.int64)
    panels = [("truth", truth.T @ truth), (f"top-{ev.k} predictions", predicted.T @ predicted),
              ("truth (rows) x predicted (columns)", truth.T @ predicted)]
    fig, axes = plt.subplots(1, 3, figsize=(6 + 1.2 * len(ev.classes), 0.4 * len(ev.classes) + 3))
    for ax, (title, matrix) in zip(axes, panels):
        ax.imshow(matrix, cmap="viridis")
        ax.set_xticks(range(len(ev.classes)), ev.classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ev.classes)), ev.classes, fontsize=7)
        ax.set_title(title, fontsize=9)
    return save_figure(fig)


_CROSS_FITTED = (" The tracks of this split that the model was fitted on are scored, at track "
                 "level, by their cross-fitted scores (from the model fitted without them); "
                 "their tile scores are the model's own.")


def _how_tracks_are_scored(aggregate: str) -> str:
    if aggregate == POOLED:
        return ("The model scores each track from all its tiles at once; a tile's scores "
                "are the model's on that tile alone.")
    return f"A track's scores are the {aggregate} of its tiles' scores."


def _mean_precision(ranked: dict, tracks: str) -> str:
    """The report's words for the mean label average precision over ``tracks``, or why
    there is none."""
    if ranked["mean"] is None:
        return f"; {unmeasurable_label_ap(tracks)}"
    return (f"; over the labels, mean average precision **{ranked['mean']:.3f}**, against "
            f"{ranked['chance']:.3f} for random orders")


def markdown(ev: Evaluation) -> str:
    """The report page."""
    lines = [f"# Evaluation of `{ev.model}` (version {ev.version})", "",
             f"Split: **{ev.split}**, {ev.track['samples']} tracks and {ev.tile['samples']} "
             f"tiles with at least one of the model's {len(ev.classes)} labels. "
             f"{_how_tracks_are_scored(ev.aggregate)}{_CROSS_FITTED if ev.cross_fitted else ''}"
             " The per-class table takes each "
             f"sample's top {ev.k} labels as its predictions.", "",
             "| level | LRAP | coverage error | best possible | label ranking loss | "
             "micro F1 | macro F1 |", "|---|---|---|---|---|---|---|"]
    for level in ("track", "tile"):
        m = getattr(ev, level)
        lines.append(f"| {level} | {m['lrap']:.3f} | {m['coverage_error']:.2f} | "
                     f"{m['coverage_lower_bound']:.2f} | {m['label_ranking_loss']:.3f} | "
                     f"{m['per_class']['micro']['f1']:.3f} | "
                     f"{m['per_class']['macro']['f1']:.3f} |")
    lines += ["", f"## Per class (tracks, top {ev.k})", "",
              "Precision, recall and F1 take each track's top labels as its predictions. "
              "Average precision ranks the tracks by the label's score, as `rankings --label` "
              "does: 1 puts every track that has the label first; chance is the share of "
              "tracks that have it (a random order's average precision)"
              + _mean_precision(ev.track["label_precision"], ev.split_tracks) + ".", "",
              "| label | precision | recall | F1 | support | average precision | chance |",
              "|---|---|---|---|---|---|---|"]
    for c in ev.classes:
        r, ranked = ev.track["per_class"]["classes"][c], ev.track["label_precision"]["classes"][c]
        lines.append(f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | "
                     f"{r['support']} | {format_figure(ranked['average_precision'])} | "
                     f"{format_figure(ranked['chance'])} |")
    lines += similarity_section(ev)
    lines += ["", "![per-class precision, recall and F1](per_class_f1.png)", "",
              "![score distributions](score_distributions.png)", "",
              "![label co-occurrence](cooccurrence.png)", ""]
    return "\n".join(lines)


def similarity_section(ev: Evaluation) -> list[str]:
    """The neighbour figures of the summary and the JSON as a table: the model's embeddings
    against cosine search on the standardized feature statistics (none when not measured)."""
    if ev.similarity is None:
        return []
    ours, base = ev.similarity["embedding"], ev.similarity["statistics"]
    return ["", f"## Similar tracks ({ours['k']} nearest)", "",
            f"The {ours['k']} nearest of the {ours['library']} current tracks of the library "
            f"for each of the {ours['queries']} {ev.split} tracks, by cosine similarity: the "
            "share of them from the query's own film (same-film precision) and the mean "
            "Jaccard overlap of their labels with the query's.", "",
            "| search | same-film precision | label overlap (Jaccard) |", "|---|---|---|",
            f"| model embeddings | {format_figure(ours['same_film_precision'])} | "
            f"{format_figure(ours['label_jaccard'])} |",
            f"| feature statistics (baseline) | {format_figure(base['same_film_precision'])} | "
            f"{format_figure(base['label_jaccard'])} |"]


def write_report(ev: Evaluation, url: str, storage_options: dict | None = None) -> str:
    """Write ``report.md``, ``metrics.json`` and the figures into the folder ``url`` (a local
    path or fsspec URL); returns the report's path."""
    fs, root = filesystem(url, storage_options)
    atomic_write(fs, join(root, "metrics.json"), ev.to_json().encode())
    for name, draw in zip(FIGURES, (per_class_figure, score_distribution_figure,
                                    cooccurrence_figure)):
        atomic_write(fs, join(root, name), draw(ev))
    atomic_write(fs, join(root, "report.md"), markdown(ev).encode())
    return join(url, "report.md")
