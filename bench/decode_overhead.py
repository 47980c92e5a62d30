"""Decode overhead of adaptive generation vs plain HF sampling: what the head costs per generated token.

Plain:    model.generate(do_sample=True, temperature=0.6, top_p=0.9, top_k=20).
Adaptive: token-level head, all three factors active, running every step (MLP, argmax selection, per-row
          processor), its output layer biased so that it picks the same (0.6, 0.9, 20): same sampling work as
          plain, so the difference is the cost of the mechanism. This is the ratio printed last.
Untrained: a randomly initialised head whose choices vary per row and step. Its speed depends on what it picks
          (e.g. top-k off makes the top-p sort see the whole vocabulary), so it is reported for information.
Same prompts, batch 16, exactly 128 new tokens per row (min_new_tokens pins the length so both sides do the
same work), runs interleaved (plain, adaptive, plain, ...) so machine-load drift hits both equally;
the median of --repeats runs is reported. Peak memory: CUDA max allocated on GPU; on CPU the peak resident set
size above the pre-run level, sampled every 2 ms by a thread (torch's CPU allocator has no peak counter).

    python bench/decode_overhead.py [--model smollm2] [--batch 16] [--new-tokens 128] [--repeats 5]

The last line is the throughput ratio adaptive/plain (1.0 = no overhead; target >= 0.98).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

import torch
import transformers

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, encode_prompts
from adaptive_decoder.modeling.models import load_base_model

PLAIN = {"temperature": 0.6, "top_p": 0.9, "top_k": 20}
PROMPTS = [
    "What is 17 + 25?", "Translate to German: The weather is nice today.", "Write a haiku about autumn.",
    "Name three prime numbers.", "Explain photosynthesis in one sentence.", "Give a synonym for happy.",
    "Write a short story about a dog and a lantern.", "What is the capital of France?",
    "List two uses of copper.", "Describe the sea in five words.", "Why is the sky blue?",
    "Suggest a name for a coffee shop run by cats.", "What is 9 times 8?", "Write a limerick about a cat.",
    "How do bees make honey?", "Summarise the plot of Cinderella in one sentence.",
]


class PeakRSS:
    """Peak resident set size (bytes) above the level at __enter__, sampled by a background thread."""

    def __init__(self, interval=0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    @staticmethod
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.base)


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base, out
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return dt, mem.peak, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args()

    model, tok = load_base_model(args.model, device=args.device)
    device = model.device
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]
    enc = encode_prompts(tok, prompts).to(device)
    torch.manual_seed(0)
    cfg = AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, base_model=args.model, level="token",
                                selection="argmax")
    untrained = AdaptiveDecodingModel(model, tok, AdaptiveDecoderHead(cfg))
    matched_head = AdaptiveDecoderHead(cfg)
    with torch.no_grad():  # pin the argmax to the plain run's values; the head still computes everything
        for f, v in PLAIN.items():
            out_layer = matched_head.outputs[f]
            out_layer.weight.mul_(1e-3)
            out_layer.bias.zero_()
            out_layer.bias[cfg.bins(f).index(v)] = 10.0
    adm = AdaptiveDecodingModel(model, tok, matched_head)
    n = args.new_tokens
    common = dict(max_new_tokens=n, min_new_tokens=n)

    def plain():
        return model.generate(**enc, do_sample=True, **PLAIN, **common)

    def adaptive():
        out = adm.generate(enc["input_ids"], enc["attention_mask"], **common)
        assert all(bool((out.values[f][out.step_mask] == v).all()) for f, v in PLAIN.items()), "matched head drifted"
        return out.sequences

    def adaptive_untrained():
        return untrained.generate(enc["input_ids"], enc["attention_mask"], **common).sequences

    fns = [("plain", plain), ("adaptive", adaptive), ("untrained", adaptive_untrained)]
    for _, fn in fns:  # warm-up (allocator, kernels)
        fn()
    res = {k: [] for k, _ in fns}
    mem = {k: 0 for k, _ in fns}
    for r in range(args.repeats):
        for name, fn in fns[r % 3:] + fns[: r % 3]:  # rotate the order so drift hits every method
            dt, peak, seqs = timed(fn, device)
            assert seqs.shape == (args.batch, enc["input_ids"].shape[1] + n), seqs.shape
            res[name].append(args.batch * n / dt)
            mem[name] = max(mem[name], peak)
            print(f"run {r} {name:9s} {res[name][-1]:8.1f} tokens/s", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = med["adaptive"] / med["plain"]
    cond = (f"{args.model}, batch {args.batch}, {n} new tokens, {args.repeats} interleaved repeats, device {device}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"conditions: {cond}")
    for k in res:
        print(f"{k:9s} median {med[k]:8.1f} tokens/s  (runs: {', '.join(f'{x:.1f}' for x in res[k])})  "
              f"peak memory +{mem[k] / 2**20:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"conditions": cond, "tokens_per_s": res, "median": med, "peak_bytes": mem, "ratio": ratio}, f, indent=1)
    print(f"untrained-head ratio (value-dependent, information only): {med['untrained'] / med['plain']:.4f}")
    print(f"throughput ratio adaptive/plain: {ratio:.4f}")


if __name__ == "__main__":
    main()
