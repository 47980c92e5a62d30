"""LPO collection throughput vs plain batched `generate` on the same prompts.

Plain:      model.generate(do_sample=True, temperature=0.7, num_return_sequences=N) on the prompts, batch by batch:
            the cheapest way to draw N samples per prompt, no head, no scoring, nothing written.
Collection: `adaptive_decoder.lpo.collection.collect` on the same prompts and batches: a sequence- or token-level head
            sampling its bins (epsilon-uniform exploration), the hidden states it saw kept, every sample scored
            (GSM8K answer + repetition: cheap rewards, so the number is about the machinery, not a scorer LM),
            shards + fp16 cache written with fsync and a manifest commit per batch.
Both sides generate at most --new-tokens per row and stop at EOS; throughput counts the tokens actually generated
(so the two sides need not produce equal lengths). Runs are interleaved (plain, collect, plain, ...) so load drift
hits both; medians of --repeats. Peak memory: resident set size above the level before the run (CPU) or CUDA max
allocated (GPU).

    python bench/collect_throughput.py [--model smollm2] [--prompts 8] [--samples 4] [--new-tokens 32] [--json out.json]

The last line is the throughput ratio collection/plain (tokens per second; 1.0 = no overhead).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_overhead import timed  # noqa: E402  (same timing / peak-memory helper as the decode benchmark)

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, encode_prompts  # noqa: E402
from adaptive_decoder.lpo.store import CollectionSettings, read_collection  # noqa: E402
from adaptive_decoder.lpo.collection import collect  # noqa: E402
from adaptive_decoder.modeling.head import model_hidden_size  # noqa: E402
from adaptive_decoder.modeling.models import load_base_model  # noqa: E402
from adaptive_decoder.rewards import build_reward  # noqa: E402
from adaptive_decoder.tasks import get_task  # noqa: E402

REWARD = {"gsm8k": {"weight": 1.0}, "repetition": {"weight": 0.2, "n": 2}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (num_return_sequences)")
    ap.add_argument("--prompts-per-batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--level", default="sequence", choices=["sequence", "token"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, tok = load_base_model(args.model, device=args.device)
    device = model.device
    examples = get_task("gsm8k").examples()[: args.prompts]  # the built-in arithmetic word problems
    prompts = [{**e, "id": f"arith/{e['id']}", "task": "arith"} for e in examples]
    cfg = AdaptiveDecoderConfig(hidden_size=model_hidden_size(model), base_model=args.model, level=args.level,
                                selection="sample")
    torch.manual_seed(0)
    adm = AdaptiveDecodingModel(model, tok, AdaptiveDecoderHead(cfg).to(device))
    rewards = {"arith": build_reward(REWARD)}
    n, b = args.samples, args.prompts_per_batch
    batches = [prompts[i:i + b] for i in range(0, len(prompts), b)]
    encs = [encode_prompts(tok, [p["prompt"] for p in batch]).to(device) for batch in batches]
    eos = tok.eos_token_id

    def plain():
        tokens = 0
        torch.manual_seed(0)
        for enc in encs:
            out = model.generate(**enc, do_sample=True, temperature=0.7, top_p=1.0, top_k=0, num_return_sequences=n,
                                 max_new_tokens=args.new_tokens)
            gen = out[:, enc["input_ids"].shape[1]:]
            for row in gen.tolist():  # tokens up to and including the first EOS
                tokens += row.index(eos) + 1 if eos in row else len(row)
        return tokens

    def collection():
        with tempfile.TemporaryDirectory() as root:
            settings = CollectionSettings(num_samples=n, max_new_tokens=args.new_tokens, epsilon=0.2,
                                          prompts_per_batch=b, cache_which="extremes", cache_budget_mb=256)
            collect(adm, prompts, rewards, root, settings, progress=False)
            _, records = read_collection(root)
            return sum(len(r["completion_ids"]) for r in records)

    fns = [("plain", plain), ("collect", collection)]
    for _, fn in fns:  # warm-up
        fn()
    tps = {k: [] for k, _ in fns}
    mem = {k: 0 for k, _ in fns}
    secs = {k: [] for k, _ in fns}
    for r in range(args.repeats):
        for name, fn in (fns if r % 2 == 0 else fns[::-1]):
            dt, peak, tokens = timed(fn, device)
            tps[name].append(tokens / dt)
            secs[name].append(dt)
            mem[name] = max(mem[name], peak)
            print(f"run {r} {name:8s} {tokens} tokens in {dt:.1f} s = {tokens / dt:.1f} tokens/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in tps.items()}
    ratio = med["collect"] / med["plain"]
    rows = len(prompts) * n
    cond = (f"{args.model}, {len(prompts)} prompts x {n} samples ({rows} rows, {b} prompts per generate call), "
            f"<= {args.new_tokens} new tokens, {args.level}-level head, {args.repeats} interleaved repeats, device {device}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"conditions: {cond}")
    for k in tps:
        print(f"{k:8s} median {med[k]:8.1f} tokens/s, {rows / statistics.median(secs[k]):6.2f} samples/s  "
              f"(runs: {', '.join(f'{x:.1f}' for x in tps[k])})  peak memory +{mem[k] / 2**20:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conditions": cond, "tokens_per_s": tps, "median": med, "seconds": secs, "peak_bytes": mem,
                       "samples": rows, "ratio": ratio}, f, indent=1)
    print(f"throughput ratio collect/plain: {ratio:.4f}")


if __name__ == "__main__":
    main()
