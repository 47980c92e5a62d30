"""lm-evaluation-harness model `adaptive-decoder`: score a trained head on lm-eval tasks.

    python -m adaptive_decoder.integrations.lmeval run --model adaptive-decoder \\
        --model_args pretrained=smollm2,head=runs/x/head --tasks gsm8k --log_samples --output_path out
    # the same run on the base model, at the task's own settings:
    python -m adaptive_decoder.integrations.lmeval run --model hf --model_args pretrained=DIR --tasks gsm8k

lm-eval 0.4.13 has no entry-point group for models: a model exists for `--model NAME` only once the module
holding its `@register_model` has been imported. `python -m adaptive_decoder.integrations.lmeval ARGS` imports
this module (registering `adaptive-decoder`) and then runs lm-eval's own CLI on ARGS, so every lm-eval flag works
unchanged; from Python, `import adaptive_decoder.integrations.lmeval` before `lm_eval.simple_evaluate(model=
"adaptive-decoder", ...)` does the same.

Mechanism. `AdaptiveDecoderLM` is lm-eval's `HFLM` (the precedent is lm-eval's `hf_steered.SteeredModel`, an HFLM
subclass that changes generation) on the base model loaded by `load_base_model`; only `generate_until` differs:
  * requests are batched as HFLM batches them (grouped by their generation kwargs, longest first);
  * each batch decodes with `AdaptiveDecodingModel.generate(row_seeds=...)`, each row seeded by the library's
    per-prompt rule (`modeling.noise`): the j-th response to a doc (lm-eval repeats a request `repeats` times) draws
    from `row_seeds([prompt_seed(seed, task name, doc id)], j + 1)[j]`, its tokens and a `selection="sample"`
    head's bins alike. So a doc's samples do not depend on its batch, the batch size or the other docs (up to the
    last bits of left padding), and are the library's own samples of that prompt seed;
  * `max_gen_toks` bounds the completion, and `until` ends a row (through `stop_when=`) the first time its
    decoded completion contains a stop sequence; the text is then cut before the first one, as HFLM cuts it;
  * the task's sampling values (temperature, do_sample, top_p, ...) are dropped: the head chooses them. One
    warning per distinct set of dropped values names them;
  * the chat template is applied as the library applies it to every prompt it trains and evaluates on
    (`format_prompt`: the whole lm-eval context as one user turn plus the generation prompt, when the tokenizer has
    a template; `chat=true/false` forces it). With lm-eval's `--apply_chat_template` the context arrives
    templated already and is only tokenized, as HFLM tokenizes it.
Loglikelihood requests (multiple choice, perplexity) are HFLM's on the same base model: the head only chooses how
to sample, so it changes no log-probability, and those results equal `--model hf` on the same weights and dtype.

With `--log_samples`, each generated sample records what the head chose: lm-eval has no field through which a
model attaches data to a request, so the record becomes a third element of the request's `arguments` (written as
`arguments.gen_args_0.arg_2` in the samples file): `{"adaptive_decoder": [one record per response]}`, a record
being the level, the number of tokens and, per factor, the chosen value (sequence level) or each value's token
count (token level). Because of it, lm-eval's `--use_cache` never answers these generations from its cache (its
key is the whole `arguments`); that is intended here, since a task's `do_sample: false` no longer means the
completion is deterministic.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections import Counter
from pathlib import Path

import torch

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from ...modeling.generation import _REFUSED, AdaptiveDecodingModel
from ...modeling.head import AdaptiveDecoderHead
from ...modeling.models import format_prompt, has_chat_template, load_base_model
from ...modeling.noise import prompt_seed, row_seeds
from ...validation import positive_int

logger = logging.getLogger(__name__)

RECORD_KEY = "adaptive_decoder"
# HFLM options that act only while HFLM loads the model itself; load_base_model loads it here, so they would be
# dropped without a word (HFLM says only "many other model arguments may be ignored")
_LOADER_ONLY = ("revision", "subfolder", "tokenizer", "backend", "trust_remote_code", "parallelize", "tp_plan",
                "peft", "delta", "autogptq", "gptqmodel", "gguf_file", "max_memory_per_gpu", "max_cpu_memory",
                "offload_folder")
_CHAT = {"auto": None, "none": None, "true": True, "false": False}


def _chat_option(chat) -> bool | None:
    """`chat=` as lm-eval passes it (a bool, or a string it did not convert) -> None (auto) / True / False."""
    if chat is None or isinstance(chat, bool):
        return chat
    key = str(chat).strip().lower()
    if key not in _CHAT:
        raise ValueError(f"chat={chat!r} is not one of true, false, auto")
    return _CHAT[key]


def _exported_head(pretrained) -> AdaptiveDecoderHead | None:
    """The head of a directory written by `integrations.vllm.export` (None for any other model)."""
    cfg = Path(str(pretrained)).expanduser() / "config.json"
    if not cfg.is_file():
        return None
    try:
        entry = json.loads(cfg.read_text()).get("adaptive_decoder")
    except (json.JSONDecodeError, AttributeError):
        return None
    if entry is None:
        return None
    from ..vllm.export import load_served_head  # noqa: PLC0415  (no vLLM import: export needs none)

    return load_served_head(cfg.parent)


@register_model("adaptive-decoder")
class AdaptiveDecoderLM(HFLM):
    """HFLM whose `generate_until` decodes with an `AdaptiveDecoderHead` (see the module docstring)."""

    def __init__(self, pretrained: str = "smollm2", head: str | None = None, dtype: str = "float32",
                 chat=None, seed: int = 1234, max_gen_toks: int = 256, device: str | None = None, **kwargs):
        """`pretrained`: an embedded name ("smollm2", "gemma3"), a local HF directory (a directory written by
        `integrations.vllm.export` brings its own head) or a Hub id, loaded by `load_base_model` in `dtype`;
        `head`: a directory saved by `AdaptiveDecoderHead.save_pretrained`; `chat`: true / false / auto (default:
        the template when the tokenizer has one, as the library trains and evaluates); `seed`: see the module
        docstring; `max_gen_toks`: the completion budget of tasks that set none (HFLM's 256). Other keyword
        arguments are HFLM's (batch_size, max_length, ...)."""
        if not isinstance(pretrained, str):
            raise ValueError("adaptive-decoder loads its base model itself: give pretrained=<name or directory>")
        unsupported = sorted(k for k in _LOADER_ONLY if k in kwargs)
        if unsupported:
            raise ValueError(f"adaptive-decoder does not take {unsupported}: it loads the base model with "
                             "load_base_model (pretrained=<embedded name, HF directory or Hub id>, dtype=...)")
        # HFLM hands unknown keywords to from_pretrained, which is never called for a loaded model
        unknown = sorted(set(kwargs) - set(inspect.signature(HFLM.__init__).parameters))
        if unknown:
            raise ValueError(f"unknown adaptive-decoder model_args {unknown}; valid: pretrained, head, dtype, chat, "
                             "seed, max_gen_toks, device and HFLM's batch_size, max_length, ...")
        chat, max_gen_toks = _chat_option(chat), positive_int("max_gen_toks", max_gen_toks)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        exported = _exported_head(pretrained)
        if head is not None and exported is not None:
            raise ValueError(f"{pretrained} was exported with its own head: drop head={head} or give the base model "
                             "directory as pretrained=")
        if head is None and exported is None:
            raise ValueError("adaptive-decoder needs head=<directory saved by AdaptiveDecoderHead.save_pretrained> "
                             "in --model_args (or pretrained=<a directory written by integrations.vllm.export>)")
        # the head first: a missing or corrupt head fails before the base model is loaded
        loaded_head = AdaptiveDecoderHead.from_pretrained(head) if head is not None else exported
        model, tok = load_base_model(pretrained, dtype=dtype, device=device)
        # the library's own check: one line naming both hidden sizes when the head belongs to another LM
        self.adm = AdaptiveDecodingModel(model, tok, loaded_head)
        super().__init__(pretrained=model, tokenizer=tok, **kwargs)
        self.pretrained = pretrained  # what lm-eval records as the model name (HFLM keeps the object otherwise)
        self.head_path = str(head) if head is not None else str(pretrained)
        self.chat = chat
        self.seed = int(seed)
        self._max_gen_toks = max_gen_toks
        self._templated_by_lm_eval = False
        self._warned = set()

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        # lm-eval calls this only under --apply_chat_template: its contexts then arrive templated already
        self._templated_by_lm_eval = True
        return super().apply_chat_template(chat_history, add_generation_prompt)

    # ------------------------------------------------------------------------------------------------------
    def _warn_overridden(self, dropped: dict) -> None:
        key = tuple(sorted((k, repr(v)) for k, v in dropped.items()))
        if key and key not in self._warned:
            self._warned.add(key)
            logger.warning("adaptive-decoder: the task's sampling values %s are not applied: the head (%s) chooses "
                           "temperature / top-p / top-k itself", dict(sorted(dropped.items())), self.head_path)

    def _encode(self, contexts: list, max_ctx_len: int):
        """Input ids and mask for a batch, left padded and left truncated to `max_ctx_len` tokens."""
        tok = self.tokenizer
        use_chat = has_chat_template(tok) if self.chat is None else self.chat
        if self._templated_by_lm_eval or not use_chat:
            return self.tok_batch_encode(list(contexts), left_truncate_len=max_ctx_len, truncation=self.truncation)
        # the library's encoding of a templated prompt (encode_prompts): the template brings its own BOS
        ids = [tok(format_prompt(tok, c, True), add_special_tokens=False)["input_ids"][-max_ctx_len:] for c in contexts]
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        finally:
            tok.padding_side = side
        return enc["input_ids"], enc["attention_mask"]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list:
        res, records = [], []
        re_ords = Collator([(*r.args[:2], s) for r, s in zip(requests, self.request_seeds(requests), strict=True)],
                           sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
                           group_by="gen_kwargs", group_fn=lambda r: r[1])
        bs = self.batch_size if self.batch_size != "auto" else self._detect_batch_size()
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        pbar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="adaptive-decoder generate_until")
        for chunk in re_ords.get_batched(n=bs):
            contexts, all_kwargs, seeds = zip(*chunk, strict=True)
            kwargs = normalize_gen_kwargs(all_kwargs[0], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            self._warn_overridden({k: kwargs.pop(k) for k in list(kwargs) if k in _REFUSED})
            ids, mask = self._encode(contexts, self.max_length - max_gen_toks)
            stops = [s for s in until if s]
            out = self.adm.generate(ids.to(self.device), mask.to(self.device), max_new_tokens=max_gen_toks,
                                    pad_token_id=self.tokenizer.pad_token_id, row_seeds=list(seeds),
                                    stop_when=lambda text, stops=stops: any(s in text for s in stops), **kwargs)
            for row, (context, text) in enumerate(zip(contexts, out.texts, strict=True)):
                s = postprocess_generated_text(text, stop=until, think_end_token=None)
                res.append(s)
                records.append(self._record(out, row))
                self.cache_hook.add_partial("generate_until", (context, all_kwargs[0]), s)
                pbar.update(1)
        pbar.close()
        res, records = re_ords.get_original(res), re_ords.get_original(records)
        for req, rec in zip(requests, records, strict=True):
            # the same Instance appears once per repeat: its list follows the order of its responses
            extra = req.arguments[2] if len(req.arguments) > 2 else {RECORD_KEY: []}
            extra[RECORD_KEY].append(rec)
            req.arguments = (*req.arguments[:2], extra)
        return res

    def request_seeds(self, requests) -> list[int]:
        """One row seed per request (see the module docstring): its doc's prompt seed, keyed by lm-eval's task name
        and doc id (a request built without them, outside lm-eval's evaluator, by its context text), and the
        response index j of that request among the requests given. A doc's second request (`idx` > 0) draws another
        family of rows."""
        count: Counter = Counter()
        out = []
        for r in requests:
            doc = r.doc_id if r.doc_id is not None else r.args[0]
            key = (r.task_name, doc, r.idx)
            j = count[key]
            count[key] += 1
            label = f"request-{r.idx}" if r.idx else ""
            out.append(row_seeds([prompt_seed(self.seed, r.task_name, doc)], j + 1, label)[j])
        return out

    def _record(self, out, row: int) -> dict:
        """What the head chose for one completion: per factor it learns, its value (sequence level, one decision) or
        how many tokens each value produced (token level). Fixed factors are in the head's config."""
        steps = out.step_mask[row]
        rec = {"level": out.level, "tokens": int(steps.sum())}
        if out.level == "sequence":  # one decision: its values, looked up once for every factor
            chosen = self.adm.head.values({k: c[row:row + 1] for k, c in out.choices.items()}, shape=(1,))
        for f in self.adm.head.factors:
            if out.level == "sequence":
                rec[f] = _num(chosen[f].item())
            else:
                rec[f] = {str(_num(x)): n for x, n in sorted(Counter(out.values[f][row][steps].tolist()).items())}
        return rec


def _num(x):
    """A chosen value as the bin was written: 0.7, not 0.699999988079071 (float32 bins); a top-k stays an int."""
    return x if isinstance(x, int) else float(f"{x:.6g}")
