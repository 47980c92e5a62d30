"""LPO training speed: one epoch from the hidden-state cache vs one epoch that recomputes the head inputs.

Builds a small collection on the real base model (default SmolLM2-135M-Instruct; arithmetic prompts, N samples per
prompt drawn by a fresh head, fluency + repetition reward, EVERY sample cached), takes the same preference pairs
(all pairs per prompt, first --pairs of them) two ways:
  cache:      PairDataset reading the fp16 cache (the LM is not touched);
  recompute:  PairDataset(use_cache=False, model=LM): one teacher-forced forward pass per sample per epoch;
and times one training epoch of the head on each (the trainer's inner loop: DataLoader + collate_pairs + LPO loss
with a reference head + AdamW step). The cache epoch is repeated --repeats times (median); recompute once per
repeat, interleaved, so machine-load drift hits both. Collection time is not part of either number.

    nice -n 10 python bench/lpo_train_speed.py [--model smollm2] [--level token|sequence] [--pairs 32]

The last line is the ratio recompute/cache epoch time (target >= 50).
"""

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time

import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from adaptive_decoder.lpo.store import CollectionSettings
from adaptive_decoder.lpo.collection import collect
from adaptive_decoder.tasks.recipe import load_task_prompts
from adaptive_decoder.modeling.head import model_hidden_size
from adaptive_decoder.lpo.losses import collate_pairs, compute_loss
from adaptive_decoder.modeling.models import load_base_model
from adaptive_decoder.lpo.pairs import PairDataset
from adaptive_decoder.rewards import build_reward

REWARD = {"fluency": {"weight": 1.0}, "repetition": {"weight": 0.5, "n": 2}}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def epoch(head, ref, data, batch_size, opt) -> float:
    """One pass over `data`; returns seconds. Everything that depends on where inputs come from is inside."""
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate_pairs,
                                         generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    for batch in loader:
        loss, _ = compute_loss(head, batch, beta=0.1, ref_head=ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--level", default="token", choices=["token", "sequence"])
    ap.add_argument("--pairs", type=int, default=32, help="preference pairs per epoch")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4, help="samples per prompt (all pairs: n(n-1)/2 per prompt)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok = load_base_model(args.model)
    cfg = AdaptiveDecoderConfig(hidden_size=model_hidden_size(model), base_model=args.model, level=args.level,
                                factors=["temperature"], temperature_bins=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5],
                                selection="sample")
    head = AdaptiveDecoderHead(cfg)
    adm = AdaptiveDecodingModel(model, tok, head)
    prompts = load_task_prompts("arith", {"task": "arithmetic", "num_prompts": args.prompts, "data_seed": 0, "reward": REWARD})
    with tempfile.TemporaryDirectory() as root:
        log(f"collecting {args.prompts} prompts x {args.samples} samples into {root}")
        t0 = time.perf_counter()
        settings = CollectionSettings(num_samples=args.samples, max_new_tokens=args.max_new_tokens, epsilon=0.5,
                                      prompts_per_batch=4, cache_which="all", cache_budget_mb=1024)
        collect(adm, prompts, {"arith": build_reward(REWARD, model, tok)}, root, settings, progress=False)
        t_collect = time.perf_counter() - t0
        cached = PairDataset(root, mode="all_pairs", head_config=cfg)
        recomputed = PairDataset(root, mode="all_pairs", head_config=cfg, use_cache=False, model=model)
    log(f"collected in {t_collect:.1f}s; {len(cached)} pairs")
    n = min(args.pairs, len(cached))
    if n < args.pairs:
        print(f"note: only {n} pairs formed (ties skipped); raise --prompts/--samples for more", file=sys.stderr)
    idx = list(range(n))
    data_c, data_r = torch.utils.data.Subset(cached, idx), torch.utils.data.Subset(recomputed, idx)
    # the two paths must feed the head the same tensors (fp16 cache vs fp16-cast recompute)
    diff = max((data_c[i]["chosen_inputs"].float() - data_r[i]["chosen_inputs"].float()).abs().max().item() for i in idx)
    steps = sum(x["chosen_inputs"].shape[0] + x["rejected_inputs"].shape[0] for x in (data_c[i] for i in idx)) \
        if args.level == "token" else 2 * n

    train_head = AdaptiveDecoderHead(AdaptiveDecoderConfig(**{**cfg.to_dict(), "selection": "argmax"}))
    ref = copy.deepcopy(train_head).requires_grad_(False)
    opt = torch.optim.AdamW(train_head.parameters(), lr=1e-3)
    epoch(train_head, ref, data_c, args.batch_size, opt)  # warm-up (allocator, first-call overheads)
    t_cache, t_recompute = [], []
    for i in range(args.repeats):
        t_recompute.append(epoch(train_head, ref, data_r, args.batch_size, opt))
        t_cache.append(epoch(train_head, ref, data_c, args.batch_size, opt))
        log(f"repeat {i + 1}/{args.repeats}: recompute {t_recompute[-1]:.2f}s, cache {t_cache[-1] * 1000:.1f}ms")
    cache_s, recompute_s = statistics.median(t_cache), statistics.median(t_recompute)
    info = {"model": args.model, "level": args.level, "pairs": n, "head_decisions_per_epoch": steps,
            "samples_per_epoch_recomputed": 2 * n, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
            "threads": args.threads, "repeats": args.repeats, "collection_s": round(t_collect, 1),
            "max_abs_diff_cache_vs_recompute": diff, "cache_epoch_s": t_cache, "recompute_epoch_s": t_recompute,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    print(json.dumps(info))
    print(f"cache epoch:     {cache_s * 1000:.1f} ms (median of {args.repeats})")
    print(f"recompute epoch: {recompute_s * 1000:.1f} ms (median of {args.repeats})")
    print(f"speedup cache vs recompute: {recompute_s / cache_s:.1f}x")


if __name__ == "__main__":
    main()
