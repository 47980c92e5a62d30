"""Scored sampling: k samples per prompt, drawn in batches under one seeding rule, scored and appended to a resume
log by the caller's hooks (`engine.ScoredSampling`). Collection, evaluation and HAG search all run on it."""

from .engine import ScoredSampling

__all__ = ["ScoredSampling"]
