"""What warping and the seeded draw cost per row, without an engine: ms per decode step of each implementation at
SmolLM2's vocabulary (49,152), batch 1 / 16 / 64 / 128, one torch thread, float32 logits.

    python bench/warp_cost.py [--batches 1 16 64 128] [--rounds 5] [--out bench/warp_cost.md]

Rows (value sets as vLLM requests would send them):
  exact     `apply_sampling_params` (HF's warpers bit for bit: sorts the vocabulary for top-p)
  served    `modeling.warp.warp` (the served head's path: no vocabulary sort where top-k or the nucleus window decides)
  vllm-cpu  vLLM 0.32's CPU top-k/top-p as its source does it (div_, then a sort of the raw row when top-p is on,
            topk only when top-k alone), re-implemented here so that it runs without an engine
Draws: `crn.draw_tokens` (inverse CDF, one uniform per row) against a Gumbel-max draw with one seeded generator and
a vocabulary of float64 noise per row (the common-random-numbers alternative).

Implementations are timed in rotated order every round; the table gives medians over rounds and the ratio to
`exact`. Speed depends on the CPU: compare ratios from one run, never absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptive_decoder.integrations.vllm.crn import draw_tokens  # noqa: E402
from adaptive_decoder.modeling.sampling import apply_sampling_params  # noqa: E402
from adaptive_decoder.modeling.warp import warp  # noqa: E402

VOCAB = 49152
VALUE_SETS = {"T": (0.7, 1.0, 0), "T,k": (0.7, 1.0, 20), "T,p": (0.7, 0.9, 0), "T,k,p": (0.7, 0.9, 20)}


def vllm_cpu(logits, t, p, k):
    """vLLM 0.32 `Sampler` on CPU: logits.div_(T); `apply_top_k_top_p_pytorch` (top-k alone: topk; else a full sort)."""
    x = logits.clone().div_(t)
    if k and p >= 1.0:
        kth = x.topk(k, dim=-1).values[:, -1:]
        return x.masked_fill_(x < kth, -float("inf"))
    if not k and p >= 1.0:
        return x
    srt, idx = x.sort(dim=-1, descending=False)
    if k:
        kth = srt.gather(1, torch.full((x.shape[0], 1), x.shape[1] - k))
        srt.masked_fill_(srt < kth, -float("inf"))
    if p < 1.0:
        cum = srt.softmax(-1).cumsum(-1)
        mask = cum <= 1 - p
        mask[:, -1] = False
        srt.masked_fill_(mask, -float("inf"))
    return x.scatter_(-1, idx, srt)


def gumbel_draw(scores, seeds, steps):
    noise = []
    for s, t in zip(seeds, steps):
        g = torch.Generator().manual_seed(s * 1_000_003 + t)  # a generator per row, as a Gumbel-max draw needs
        noise.append(-torch.log(-torch.log(torch.rand(scores.shape[1], generator=g, dtype=torch.float64))))
    return (scores.double() + torch.stack(noise)).argmax(-1)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    lines = [f"warp_cost: vocab {VOCAB}, 1 thread, float32, median of {args.rounds} rounds (rotated order); "
             f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f} at start", "",
             "| batch | values | exact ms | served ms | vllm-cpu ms | served/exact | served/vllm-cpu |",
             "|---|---|---|---|---|---|---|"]
    for b in args.batches:
        logits = torch.randn(b, VOCAB) * 3
        for name, (t, p, k) in VALUE_SETS.items():
            impls = {"exact": lambda: apply_sampling_params(None, logits, t, p, k),
                     "served": lambda: warp(logits, t, p, k),
                     "vllm-cpu": lambda: vllm_cpu(logits, t, p, k)}
            times = {key: [] for key in impls}
            order = list(impls)
            for r in range(args.rounds):
                for key in order[r % 3:] + order[: r % 3]:
                    times[key].append(timed(impls[key]))
            med = {key: statistics.median(v) for key, v in times.items()}
            lines.append(f"| {b} | {name} | {med['exact']:.2f} | {med['served']:.2f} | {med['vllm-cpu']:.2f} | "
                         f"{med['served'] / med['exact']:.3f} | {med['served'] / med['vllm-cpu']:.3f} |")
        print(lines[-1], flush=True)
    lines += ["", "| batch | gumbel draw ms | inverse-CDF draw ms | ratio |", "|---|---|---|---|"]
    for b in args.batches:
        scores = apply_sampling_params(None, torch.randn(b, VOCAB) * 3, 0.7, 1.0, 0)
        seeds, steps = list(range(b)), [3] * b
        g, c = [], []
        for r in range(args.rounds):
            pair = [(g, lambda: gumbel_draw(scores, seeds, steps)), (c, lambda: draw_tokens(scores, seeds, steps))]
            for sink, fn in (pair if r % 2 == 0 else pair[::-1]):
                sink.append(timed(fn))
        lines.append(f"| {b} | {statistics.median(g):.2f} | {statistics.median(c):.2f} | "
                     f"{statistics.median(g) / statistics.median(c):.2f} |")
        print(lines[-1], flush=True)
    lines.append(f"\nload {os.getloadavg()[0]:.1f} at end")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
