"""Batch scoring with trained models, rankings written back into the store, and evaluation.

``score(store, model)`` scores what is new or changed and commits it; ``scores`` and
``tile_scores`` read the committed rankings and tile scores; ``best_tracks`` and
``track_rankings`` answer the recommendation queries, and ``ranking_quality`` says what such
an answer is worth on the tracks the model did not learn from (``label_answer``: both, from
one read); ``similar`` finds the tracks most like a track or a reference file by their
embeddings, which ``embeddings`` reads; ``evaluate`` measures a model on its split;
``write_report`` writes the markdown report with its figures. Each is imported on first use.
"""

from featurestore.lazy import export_lazily

__all__ = ["Evaluation", "RankingQuality", "ScoreReport", "best_tracks", "embeddings",
           "evaluate", "label_answer", "ranking_quality", "score", "score_table", "scores",
           "similar", "tile_scores", "track_rankings", "write_report"]

export_lazily(__name__, {
    "Evaluation": "scoring.evaluate", "evaluate": "scoring.evaluate",
    "embeddings": "scoring.embeddings", "similar": "scoring.similarity",
    "best_tracks": "scoring.rankings", "track_rankings": "scoring.rankings",
    "ranking_quality": "scoring.rankings", "label_answer": "scoring.rankings",
    "RankingQuality": "scoring.rankings",
    "write_report": "scoring.report", "ScoreReport": "scoring.score", "score": "scoring.score",
    "score_table": "scoring.score_tables", "scores": "scoring.score_tables",
    "tile_scores": "scoring.score_tables"})
