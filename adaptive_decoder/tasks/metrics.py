"""Diversity across the k samples of one prompt: self-BLEU and distinct-n (corpus-level over the k samples)."""

from __future__ import annotations

from adaptive_decoder.rewards import _ngrams


def distinct_n_across(texts: list[str], n: int) -> float | None:
    """Unique n-grams / all n-grams pooled over all samples (lower-cased whitespace words). None if no n-gram."""
    grams = [g for t in texts for g in _ngrams(t, n)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(texts: list[str]) -> float | None:
    """Mean sentence BLEU (0-100, sacrebleu, exponential smoothing) of each sample against the other k-1 as references.

    Higher = the samples are more alike (less diverse). None for fewer than two samples. Empty samples take
    part as hypotheses (BLEU 0) but are not used as references (an empty reference would match nothing anyway).
    """
    if len(texts) < 2:
        return None
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    scores = []
    for i, hyp in enumerate(texts):
        refs = [t for j, t in enumerate(texts) if j != i and t.strip()]
        if not hyp.strip() or not refs:
            scores.append(0.0)
            continue
        scores.append(bleu.sentence_score(hyp, refs).score)
    return sum(scores) / len(scores)


def diversity(texts: list[str]) -> dict:
    return {"self_bleu": self_bleu(texts), "distinct_1": distinct_n_across(texts, 1),
            "distinct_2": distinct_n_across(texts, 2)}
