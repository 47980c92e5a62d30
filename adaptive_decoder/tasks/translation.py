"""Translation (WMT22 pairs): corpus BLEU and chrF (sacrebleu) plus per-sample chrF.

Source records: {"src_lang", "tgt_lang", "source", "reference"} (the built-in `tasks/data/translation.en-de.jsonl`;
`dataset: wmt22.en-de` (or de-en, en-zh, zh-en) names the WMT22 general test set, see tasks.io.PUBLIC_DATASETS), or
an HF dataset whose rows are {"translation": {lang: text}} (then give src_lang= and tgt_lang=).
Scored text: the first non-empty line of the completion (filter `first_line`: chat models often add notes after
the translation). Reward: per-sample chrF / 100 (in [0, 1]; empty -> 0), the spec {"chrf": {}}.
Task metrics: corpus BLEU and chrF (0-100) over all samples, each sample paired with its prompt's reference.
"""

from __future__ import annotations

from .base import Task, require

LANGS = {"en": "English", "de": "German", "zh": "Chinese", "fr": "French", "es": "Spanish", "cs": "Czech",
         "ja": "Japanese", "ru": "Russian", "uk": "Ukrainian"}
TEMPLATE = "Translate the following {src} text into {tgt}. Reply with the translation only.\n\n{source}"


class Translation(Task):
    name = "translation"
    expected = '{"src_lang": "en", "tgt_lang": "de", "source": str, "reference": str} (WMT22 jsonl)'
    builtin = "translation.en-de.jsonl"
    default_reward = {"chrf": {}}
    # max_source_words: keep only segments of at most that many source words. WMT22 mixes one-word headlines with
    # 100-word paragraphs; a small model with a 48-token budget can only be scored fairly on the short ones.
    options = {"src_lang": None, "tgt_lang": None, "template": TEMPLATE, "max_source_words": None}

    def to_examples(self, record: dict, index: int) -> list[dict]:
        if "translation" in record and isinstance(record["translation"], dict):
            src, tgt = self.opts["src_lang"], self.opts["tgt_lang"]
            if not src or not tgt:
                raise ValueError("rows of the form {'translation': {...}} need the task options src_lang= and tgt_lang=")
            pair = record["translation"]
            record = {"src_lang": src, "tgt_lang": tgt, "source": require(pair, src), "reference": require(pair, tgt)}
        for k in ("src_lang", "tgt_lang", "source", "reference"):
            require(record, k)
        src, tgt = record["src_lang"], record["tgt_lang"]
        limit = self.opts["max_source_words"]
        if limit is not None and len(record["source"].split()) > int(limit):
            return []
        prompt = self.opts["template"].format(src=LANGS.get(src, src), tgt=LANGS.get(tgt, tgt), source=record["source"].strip())
        return [{"id": str(index), "prompt": prompt, "source": record["source"], "reference": record["reference"],
                 "src_lang": src, "tgt_lang": tgt}]

    def postprocess(self, text: str) -> str:
        return first_line(text)

    def stop_predicate(self):
        return first_line_complete

    def summarize(self, units: list[dict]) -> dict:
        out = super().summarize(units)
        out.update(corpus_scores([(self.postprocess(s["text"]), u["example"]["reference"], u["example"]["tgt_lang"])
                                  for u in units for s in u["samples"]]))
        return out


def first_line(text: str) -> str:
    for line in (text or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def first_line_complete(text: str) -> bool:
    """True once `first_line(text)` is final: a line break follows the first non-space character. Every break that
    `str.splitlines` splits at (U+2028 included) is whitespace to `str.strip`, so after `lstrip` the first line
    is the non-empty one `first_line` returns, and text appended after its break cannot change it."""
    s = (text or "").lstrip()
    return bool(s) and len(s.splitlines(keepends=True)[0]) > len(s.splitlines()[0])


# the characters `str.splitlines` breaks at: the predicate can only turn True at a token holding one of them (a
# sampling backend may stop rows at those tokens and check the predicate there: integrations.vllm.stops)
first_line_complete.stop_chars = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def corpus_scores(triples: list[tuple[str, str, str]]) -> dict:
    """Corpus BLEU / chrF (0-100) of (hypothesis, reference, target language) triples; BLEU uses sacrebleu's "zh"
    tokenizer when every target is Chinese, "13a" otherwise."""
    from sacrebleu.metrics import BLEU, CHRF

    if not triples:
        return {"corpus_bleu": None, "corpus_chrf": None}
    hyps = [h for h, _, _ in triples]
    refs = [[r for _, r, _ in triples]]
    tok = "zh" if all(t == "zh" for _, _, t in triples) else "13a"
    return {"corpus_bleu": BLEU(tokenize=tok).corpus_score(hyps, refs).score,
            "corpus_chrf": CHRF().corpus_score(hyps, refs).score}
