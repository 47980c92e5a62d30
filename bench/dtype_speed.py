"""HF generate throughput of the base LM in float32 vs bfloat16 (is bfloat16 faster here, for exactly the same work?).

Plain `model.generate` (sampling T=0.6, top-p 0.9, top-k 20), the same prompts for both dtypes, batch --batch,
exactly --new_tokens new tokens per row (min_new_tokens pins the length, so both do the same work). Both models
are loaded first; runs are interleaved (fp32, bf16, fp32, ...) so machine-load drift hits both equally, after
one untimed warm-up each; the median of --repeats runs is reported. Also printed: what `dtype: auto` resolves
to here (adaptive_decoder.modeling.models.resolve_dtype: the CPU's native bf16 flags, nothing timed), so a run
shows whether that rule picked the faster dtype on this CPU. A third timing,
"bfloat16_strided_lm_head", runs the same bf16 model with `contiguous_lm_head_input`'s hook taken off: what torch's
CPU bf16 linear costs on the strided [B, 1, H] prefill view (one weight copy per row) that the hook avoids.

    python bench/dtype_speed.py [--model smollm2] [--batch 8] [--new_tokens 32] [--repeats 3] [--torch_threads 1]

The last line is the throughput ratio bfloat16/float32 (> 1: bf16 is faster).
"""

import argparse
import json
import platform
import statistics
import time

import torch

from adaptive_decoder.modeling.models import (_contiguous_bf16_input, cpu_bf16_flags, encode_prompts, load_base_model,
                                            resolve_dtype)

PROMPTS = ["What is 17 + 25?", "Translate to German: The weather is nice today.", "Write a haiku about autumn.",
           "Name three prime numbers.", "Explain photosynthesis in one sentence.", "Give a synonym for happy.",
           "Write a short story about a dog and a lantern.", "What is the capital of France?"]
SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 20}


class _strided_lm_head:
    """Temporarily take `contiguous_lm_head_input`'s pre-hook off the lm_head (any other pre-hook stays): generate
    as torch would without it."""

    def __init__(self, model):
        self.hooks = model.get_output_embeddings()._forward_pre_hooks

    def __enter__(self):
        self.saved = {k: h for k, h in self.hooks.items() if h is _contiguous_bf16_input}
        for k in self.saved:
            del self.hooks[k]

    def __exit__(self, *exc):
        self.hooks.update(self.saved)


def tokens_per_s(model, enc, new_tokens: int, seed: int, strided: bool = False) -> float:
    if strided:
        with _strided_lm_head(model):
            return tokens_per_s(model, enc, new_tokens, seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **SAMPLING)
    dt = time.perf_counter() - t0
    return (out.shape[0] * (out.shape[1] - enc["input_ids"].shape[1])) / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new_tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch_threads", type=int, default=None)
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    models = {name: load_base_model(args.model, dtype=name, device="cpu") for name in ("float32", "bfloat16")}
    tok = models["float32"][1]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    enc = encode_prompts(tok, prompts)
    for name, (m, _) in models.items():  # warm-up: kernel selection and allocator growth are not timed
        tokens_per_s(m, enc, 4, 0)
    variants = {"float32": (models["float32"][0], False), "bfloat16": (models["bfloat16"][0], False),
                "bfloat16_strided_lm_head": (models["bfloat16"][0], True)}
    runs = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (m, strided) in variants.items():
            runs[name].append(tokens_per_s(m, enc, args.new_tokens, r, strided))
    med = {name: statistics.median(v) for name, v in runs.items()}
    print(json.dumps({"model": args.model, "batch": args.batch, "new_tokens": args.new_tokens, "repeats": args.repeats,
                      "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": platform.processor()
                      or platform.machine(), "cpu_bf16_flags": cpu_bf16_flags(),
                      "auto_resolves_to": str(resolve_dtype("auto", "cpu")).removeprefix("torch."),
                      "tok_per_s_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
                      "tok_per_s_median": {k: round(v, 1) for k, v in med.items()}}, indent=1))
    print(f"bf16 with / without the contiguous lm_head input: {med['bfloat16'] / med['bfloat16_strided_lm_head']:.2f}")
    print(f"bf16/fp32 throughput ratio: {med['bfloat16'] / med['float32']:.2f}")


if __name__ == "__main__":
    main()
