"""`stop_when=` on the vLLM backend: rows end where HF `generate(stop_when=)` ends them, token for token.

HF checks the predicate on each row's decoded completion after every token and stops the row at the first length
where it holds (`modeling.generation._StopWhen`; a row that ended at an EOS is not checked again). The engine has
no tokenizer and cannot run a Python predicate per step, so this backend does two things:

1. Where the predicate names the characters it can only become true at (`predicate.stop_chars`, e.g. the line
   breaks of `tasks.translation.first_line_complete`), every vocabulary token whose text holds one of them is a
   stop token of the request (`stop_token_ids`): vLLM ends the row there instead of decoding to max_new_tokens.
   A predicate without `stop_chars` decodes to max_new_tokens (same samples, no time saved).
2. `stop_length` then cuts each completion at the first length where the predicate holds, exactly HF's rule.

Invariant (why this is exact): a row's tokens depend only on its prefix, spec and step (`per_request`), so a row
that vLLM stops later than HF has HF's completion as its prefix, and the cut recovers it. vLLM can stop a row
earlier only at a stop token where the predicate does not hold yet (a leading line break, before any text):
`needs_rerun` finds those rows, and the caller draws them again without the extra stop tokens (the same seeds give
the same prefix) and cuts that. A stop character split over two byte-level tokens is not a stop token: such a row
runs on to the next one (or max_new_tokens) and is cut back.
"""

from __future__ import annotations

from typing import Callable

_CACHE: dict = {}  # (tokenizer id, stop chars) -> (tokenizer, token ids); the tokenizer is kept so its id stays its own


def stop_token_ids(tokenizer, chars: str) -> list[int]:
    """Ids of the tokens whose decoded text holds any of `chars` (decoded one by one, as vLLM emits them)."""
    key = (id(tokenizer), chars)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not tokenizer:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        hit = _CACHE[key] = (tokenizer, [i for i, t in enumerate(texts) if any(c in t for c in chars)])
    return hit[1]


def stop_length(tokenizer, completion: list, predicate: Callable[[str], bool], eos_ids=()) -> int | None:
    """The completion length HF's stop would keep: the first t where predicate(decode(completion[:t])) holds,
    over the tokens before an EOS (HF does not check a row again once it produced one); None where it never holds."""
    n = len(completion)
    if n and completion[-1] in set(eos_ids):
        n -= 1
    texts = tokenizer.batch_decode([completion[:t] for t in range(1, n + 1)], skip_special_tokens=True)
    return next((t for t, text in enumerate(texts, 1) if predicate(text)), None)


def needs_rerun(completion: list, length: int | None, stops: set) -> bool:
    """True where vLLM ended the row at one of the extra stop tokens before the predicate held (see the module
    docstring): its tokens stop short of HF's."""
    return length is None and bool(completion) and completion[-1] in stops
