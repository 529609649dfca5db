"""Batch scoring with trained models, rankings written back into the store, and evaluation.

``score(store, model)`` scores what is new or changed and commits it; ``scores`` and
``tile_scores`` read the committed rankings and tile scores; ``best_tracks`` and
``track_rankings`` answer the recommendation queries; ``evaluate`` measures a model on its
split; ``write_report`` writes the markdown report with its figures.
"""

from scoring.evaluate import Evaluation, evaluate
from scoring.rankings import best_tracks, track_rankings
from scoring.report import write_report
from scoring.score import ScoreReport, score
from scoring.score_tables import score_table, scores, tile_scores

__all__ = ["Evaluation", "ScoreReport", "best_tracks", "evaluate", "score", "score_table",
           "scores", "tile_scores", "track_rankings", "write_report"]
