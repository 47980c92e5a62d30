"""`backend: vllm`: the sampling of the evaluation suite and of the collection runs in a vLLM engine; everything
else (prompts, scoring, head inputs, token log-probabilities) stays on the HF model.

`VLLMEngine(model, tokenizer)` exports the loaded HF model as a head-less servable directory
(`export.export_sampler`, a temporary directory) and starts one `vllm.LLM` on it, in this process (`inproc`),
shared by every method of a run. `VLLMDecodingModel` is an `AdaptiveDecodingModel` whose `generate` sends each
(prompt, sample) row to that engine as one greedy request carrying its own values and seed (`per_request`):
forced values (`force=`, every fixed-config method) or this object's head (saved once into the engine's
directory; token or sequence level, argmax or sampled bins). So policies, the harness and `collection.collect`
call it exactly as they call the HF model, and get the same `AdaptiveGenerateOutput` layout (left-padded prompts
+ right-padded completions in `sequences`, `step_mask`, `values`, `choices`, `head_inputs`).

Common random numbers: with `row_seeds=` (the library's scored sampling always passes them) row r's token and
head-bin draws come from row_seeds[r] and the step (`crn`), exactly as HF `generate(row_seeds=)` draws them.
Without, a row's seed is `crn.request_seed(base, prompt tokens, sample index)`, where `base` is drawn from torch's
global generator, which callers seed right before the call as they do for HF `generate`; head-sampled bins use
`head_seed` the same way on their own stream.

What the engine does not return is recomputed here with one teacher-forced HF pass over prompt + completion
(`compute_head_inputs`, as the collection's cache and `choices.served_choices` do): the hidden states the head
saw, and from them the head's choices (argmax, or the same seeded draw as the engine's). They equal the engine's
up to the float differences between vLLM's kernels and HF's, which can only matter where two bins' logits (or a
sampled bin's cumulative probability and its uniform) tie within them. `stop_when=` ends rows where HF ends them
(`stops`: the predicate's stop characters become stop tokens, then each row is cut at HF's length). Refused, with
the reason: extra logits processors (they need HF's generation loop).

Cost: a batch is one engine call (vLLM schedules its rows itself, up to `max_num_seqs` at a time). The rows of
a prompt forced to temperature 0 (greedy, T=0.0, a fitted method that chose it) are one request copied k times,
and so are those of a prompt a sequence-level argmax head sends to T=0 (it decides on the prompt alone: one HF
pass over the prompts gives its choice before sampling, and the returned choices from the same pass). The k rows
of a prompt share their prompt's KV blocks through vLLM's prefix cache (`VLLMEngine.generate`: the prompt is
prefilled once, then its whole `block_size` blocks are reused by the k requests).
"""

from __future__ import annotations

import contextlib
import copy
import gc
from collections import Counter
import os
import tempfile
from pathlib import Path

import torch

from ...modeling.generation import (AdaptiveDecodingModel, AdaptiveGenerateOutput, _check_row_seeds,
                                    _per_step_values, compute_head_inputs)
from ...modeling.models import model_max_length
from ...validation import positive_int
from .crn import request_seed, select_rows
from . import inproc
from .export import export_sampler
from .per_request import REQUEST_KEY
from .stops import needs_rerun, stop_length, stop_token_ids

# generate kwargs this backend honours; any other one is refused by name
_ALLOWED = {"max_new_tokens", "num_return_sequences", "eos_token_id", "pad_token_id"}
_KV_ENV = "VLLM_CPU_KVCACHE_SPACE"


class VLLMEngine:
    """One vLLM engine on a loaded HF model (its own dtype), for every method of a run. Close it (or use `with`)."""

    def __init__(self, model, tokenizer=None, *, max_model_len: int | None = None, max_num_seqs: int = 64,
                 kv_cache_gib: int | None = None, block_size: int | None = 32, prompts_per_call: int | None = None,
                 share_prefix: bool = True, in_process: bool = True):
        """`prompts_per_call`: how many prompts a caller that batches (the evaluation harness) hands to one
        `generate`; None: all of a job's. `block_size`: KV-cache block, the unit the prefix cache shares (None:
        vLLM's, 128 on the CPU: longer than most prompts here; the CPU backend wants multiples of 32).
        `share_prefix`: prefill each prompt that several requests of a call share once first (see `generate`).
        `in_process`: run the engine in this process (`inproc`: no engine-core and worker processes to spawn);
        False, or while another in-process engine of this process is open, vLLM's own processes.
        `kv_cache_gib`: this engine's KV cache in GiB; None: $VLLM_CPU_KVCACHE_SPACE where it is set, else 2."""
        # vLLM-CPU sizes its KV cache from VLLM_CPU_KVCACHE_SPACE, read with int() while the engine is built ("2.0"
        # would fail the start; unset, it reserves a fraction of the machine's memory). Set only while this engine
        # is built, so that each engine of a process gets its own size (an experiment builds one per collect stage,
        # then one for its eval stage)
        if kv_cache_gib is not None and (isinstance(kv_cache_gib, bool) or not float(kv_cache_gib).is_integer()
                                         or kv_cache_gib < 1):
            raise ValueError(f"kv_cache_gib must be a whole number of GiB >= 1 (vLLM-CPU reads an integer), "
                             f"got {kv_cache_gib!r}")
        kv_space = str(int(kv_cache_gib)) if kv_cache_gib is not None else os.environ.get(_KV_ENV) or "2"
        import vllm

        self._tmp = tempfile.TemporaryDirectory(prefix="adaptive-decoder-vllm-")
        root = Path(self._tmp.name)
        path = export_sampler(model, tokenizer, root / "model")
        self.heads_dir = root / "heads"
        self.heads_dir.mkdir()
        self._heads: dict[int, tuple] = {}
        self.prompts_per_call = None if prompts_per_call is None else positive_int("prompts_per_call", prompts_per_call)
        self.share_prefix = bool(share_prefix)
        self.max_model_len = int(max_model_len or model_max_length(model, tokenizer) or 4096)
        self.SamplingParams = vllm.SamplingParams
        self.in_process = bool(in_process) and inproc.live == 0
        # async scheduling off: the per-request step index is the length of the request's output list, which
        # must hold every earlier token when the step is sampled
        with inproc.environ(_KV_ENV, kv_space), inproc.in_process_engine() if self.in_process else contextlib.nullcontext():
            self.llm = vllm.LLM(model=str(path), skip_tokenizer_init=True, dtype=str(model.dtype).removeprefix("torch."),
                                enforce_eager=True, seed=0, max_model_len=self.max_model_len, max_num_seqs=max_num_seqs,
                                async_scheduling=False, **({"block_size": int(block_size)} if block_size else {}))
        inproc.live += self.in_process

    def head_path(self, head) -> str:
        """The directory the engine loads `head` from, written on first use (the head as it is then)."""
        entry = self._heads.get(id(head))
        if entry is None or entry[0] is not head:  # the object is kept, so its id is never reused meanwhile
            path = self.heads_dir / f"head-{len(self._heads)}"
            head.save_pretrained(path)
            entry = self._heads[id(head)] = (head, str(path))
        return entry[1]

    def generate(self, prompts: list, params: list) -> list:
        """One engine call. vLLM's prefix cache only serves blocks that an earlier step computed, and the k requests
        of a prompt are all scheduled in the same step; so with `share_prefix` a one-token greedy request per shared
        prompt runs first (no spec: it draws nothing from any row's noise), and the real requests then reuse its full
        blocks instead of prefilling the prompt k times."""
        counts = Counter(map(tuple, prompts))
        block = self.llm.llm_engine.vllm_config.cache_config.block_size
        shared = [list(p) for p, c in counts.items() if c > 1 and len(p) >= block]
        if self.share_prefix and shared:
            self.llm.generate([{"prompt_token_ids": p} for p in shared],
                              self.SamplingParams(temperature=0.0, max_tokens=1, detokenize=False), use_tqdm=False)
        return self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            inproc.live -= self.in_process
            gc.collect()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class VLLMDecodingModel(AdaptiveDecodingModel):
    """`AdaptiveDecodingModel` whose sampling runs in `engine` (see the module docstring); `model` is the HF model
    the engine was built from (prompt encoding, head inputs, scoring)."""

    backend = "vllm"

    def __init__(self, model, tokenizer=None, head=None, *, engine: VLLMEngine):
        super().__init__(model, tokenizer, head)
        self.engine = engine
        self._cpu_head = None

    def with_head(self, head):
        return VLLMDecodingModel(self.model, self.tokenizer, head, engine=self.engine)

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, *, force: dict | None = None, selection: str | None = None,
                 epsilon: float = 0.0, head_seed: int | None = None, return_head_inputs: bool = False,
                 logits_processor=None, stop_when=None, row_seeds=None, **kwargs) -> AdaptiveGenerateOutput:
        bad = sorted(set(kwargs) - _ALLOWED) + (["logits_processor"] if logits_processor else [])
        if bad:
            raise ValueError(f"backend 'vllm' does not support generate options {bad} (they need HF generate's loop); "
                             "use backend 'hf'")
        if kwargs.get("max_new_tokens") is None:
            raise ValueError("backend 'vllm' needs max_new_tokens")
        max_new = positive_int("max_new_tokens", kwargs["max_new_tokens"])
        k = positive_int("num_return_sequences", kwargs.get("num_return_sequences", 1))
        attention_mask, force = self._check_inputs(input_ids, attention_mask, force, k, "cpu")
        selection = selection or (self.head.config.selection if self.head is not None else "argmax")
        prompts = [input_ids[i][attention_mask[i].bool()].tolist() for i in range(input_ids.shape[0])]
        if row_seeds is not None:  # the HF path's rule: a row's token and head draws both come from its one seed
            row_seeds = _check_row_seeds(row_seeds, len(prompts) * k, head_seed)
        else:  # seeds from torch's global generator: callers seed it right before, as for HF generate
            base = int(torch.randint(0, 2**62, (1,)))
            if force is None and head_seed is None:
                head_seed = int(torch.randint(0, 2**62, (1,)))
            row_seeds = [request_seed(base, p, j) for p in prompts for j in range(k)]
        too_long = [i for i, p in enumerate(prompts) if len(p) + max_new > self.engine.max_model_len]
        if too_long:
            raise ValueError(f"prompts {too_long[:5]}: prompt + max_new_tokens={max_new} exceed the engine's "
                             f"max_model_len={self.engine.max_model_len}")
        eos = self._eos_ids(kwargs)
        # a sequence-level head decides on the prompt alone: one HF pass over the prompts gives its inputs (for the
        # returned choices too), and a prompt it sends greedy (argmax on T=0) is one forced greedy request
        h_seq = greedy = None
        if force is None and self.head.config.level == "sequence":
            h_seq = compute_head_inputs(self.model, input_ids, attention_mask, input_ids.shape[1], "sequence")
            greedy = self._greedy_prompts(h_seq) if selection == "argmax" else None
        specs, head_seeds = [], []
        for i, p in enumerate(prompts):
            for j in range(k):
                r = i * k + j
                spec = {"seed": row_seeds[r]}
                if force is not None:
                    spec["force"] = {name: int(v[r]) if name == "top_k" else float(v[r]) for name, v in force.items()}
                else:
                    head_seeds.append(row_seeds[r] if head_seed is None else request_seed(head_seed, p, j))
                    if greedy is not None and i in greedy:
                        spec["force"] = greedy[i]
                    else:
                        spec.update(head=self.engine.head_path(self.head), selection=selection,
                                    epsilon=float(epsilon), head_seed=head_seeds[-1])
                specs.append(spec)
        rows = [p for p in prompts for _ in range(k)]
        completion = self._draw(rows, specs, max_new, eos, stop_when)
        return self._assemble_vllm(input_ids, attention_mask, k, completion, force, selection, epsilon, head_seeds,
                                   return_head_inputs, kwargs, h_seq)

    def _greedy_prompts(self, h_seq) -> dict:
        """{prompt index: the head's values} for the prompts a sequence-level argmax head sends to temperature 0."""
        chosen = self.head.select(h_seq.to(next(self.head.parameters()).device), selection="argmax")
        vals = self.head.values(chosen, shape=(h_seq.shape[0],))
        cols = {name: v.tolist() for name, v in vals.items()}
        return {i: {name: int(c[i]) if name == "top_k" else float(c[i]) for name, c in cols.items()}
                for i, t in enumerate(cols["temperature"]) if t == 0.0}

    def _draw(self, rows: list, specs: list, max_new: int, eos: list, stop_when) -> list:
        """Each row's completion token ids: one engine call for every distinct request, greedy copies shared,
        rows cut where `stop_when` ends them (`stops`)."""
        stops = []
        if stop_when is not None:
            if self.tokenizer is None:
                raise ValueError("stop_when= reads the decoded completion: it needs VLLMDecodingModel(model, tokenizer)")
            chars = getattr(stop_when, "stop_chars", None)
            stops = [i for i in stop_token_ids(self.tokenizer, chars) if i not in eos] if chars else []
        completion = self._request(rows, specs, max_new, eos + stops)
        if stop_when is None:
            return completion
        lengths = [stop_length(self.tokenizer, c, stop_when, eos) for c in completion]
        again = [r for r, c in enumerate(completion) if needs_rerun(c, lengths[r], set(stops))]
        if again:  # stopped before HF would: the same seeds draw the same prefix, on to HF's stop
            for r, c in zip(again, self._request([rows[r] for r in again], [specs[r] for r in again], max_new, eos)):
                completion[r], lengths[r] = c, stop_length(self.tokenizer, c, stop_when, eos)
        return [c if n is None else c[:n] for c, n in zip(completion, lengths)]

    def _request(self, rows: list, specs: list, max_new: int, stop_ids: list) -> list:
        """The engine's completion of each (prompt, spec) row. Rows of one prompt forced to temperature 0 with the
        same values are one greedy request, copied: their tokens cannot depend on the seed (`crn`: a row with one
        finite score gets its argmax whatever its uniform)."""
        first: dict = {}  # (prompt, forced values) of a greedy row -> its request's index
        unique, where = [], []
        for p, spec in zip(rows, specs):
            key = None
            if spec.get("force", {}).get("temperature", 1.0) == 0.0:
                key = (tuple(p), tuple(sorted(spec["force"].items())))
            if key is None or key not in first:
                if key is not None:
                    first[key] = len(unique)
                unique.append((p, spec))
            where.append(len(unique) - 1 if key is None else first[key])
        # greedy over the point mass the served model returns: vLLM's sampler adds no randomness of its own
        params = [self.engine.SamplingParams(temperature=0.0, max_tokens=max_new, ignore_eos=True,
                                             stop_token_ids=stop_ids, detokenize=False,
                                             extra_args={REQUEST_KEY: spec}) for _, spec in unique]
        outs = self.engine.generate([p for p, _ in unique], params)
        return [list(outs[u].outputs[0].token_ids) for u in where]

    def _assemble_vllm(self, input_ids, attention_mask, k, completion, force, selection, epsilon, head_seeds,
                       keep_inputs, kwargs, h_seq=None) -> AdaptiveGenerateOutput:
        device = input_ids.device
        n, t = len(completion), max(len(c) for c in completion)
        pad = self._pad_id(kwargs)
        gen = torch.full((n, t), pad if pad is not None else 0, dtype=torch.long)
        for r, c in enumerate(completion):
            gen[r, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask = torch.arange(t)[None, :] < torch.tensor([len(c) for c in completion])[:, None]
        seqs = torch.cat([input_ids.cpu().repeat_interleave(k, 0), gen], 1).to(device)
        out = AdaptiveGenerateOutput(sequences=seqs, prompt_length=input_ids.shape[1], step_mask=mask.to(device),
                                     completion_ids=completion)
        if force is not None:
            vals = force
        else:
            level = self.head.config.level
            full_mask = torch.cat([attention_mask.repeat_interleave(k, 0), torch.ones_like(gen).to(device)], 1)
            h = (h_seq.repeat_interleave(k, 0) if h_seq is not None else
                 compute_head_inputs(self.model, seqs, full_mask, input_ids.shape[1], level, mask.to(device)))
            out.choices = self._choices(h, mask, selection, epsilon, head_seeds, level)
            if level == "token":
                out.level = "token"
            vals = self.head.values(out.choices, shape=tuple(mask.shape) if level == "token" else (n,))
            if keep_inputs:
                out.head_inputs = h.float().cpu()
        out.values = _per_step_values({key: v.to(device) for key, v in vals.items()}, out.step_mask)
        if self.tokenizer is not None:
            out.texts = self.tokenizer.batch_decode(completion, skip_special_tokens=True)
        return out

    def _choices(self, h, mask, selection, epsilon, head_seeds, level) -> dict:
        """The head's choices on the recomputed hidden states: what the engine decided (see the module docstring)."""
        if selection == "argmax":
            c = self.head.select(h.to(next(self.head.parameters()).device), selection="argmax")
            if level == "token":
                c = {f: x.cpu().masked_fill(~mask, -1) for f, x in c.items()}
            return c
        if self._cpu_head is None:  # the engine's heads draw on the CPU in float32 (per_request.RequestDecoder)
            self._cpu_head = copy.deepcopy(self.head).cpu().float().eval()
        if level == "sequence":
            return select_rows(self._cpu_head, h.cpu(), selection, epsilon, list(head_seeds), [0] * h.shape[0])
        # every (row, step) the engine decided, in one head call
        rows, steps = mask.nonzero(as_tuple=True)
        chosen = select_rows(self._cpu_head, h.cpu()[rows, steps], selection, epsilon,
                             [head_seeds[r] for r in rows.tolist()], steps.tolist())
        out = {}
        for f, c in chosen.items():
            out[f] = torch.full(tuple(mask.shape), -1, dtype=torch.long)
            out[f][rows, steps] = c
        return out
