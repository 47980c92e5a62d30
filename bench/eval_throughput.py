"""Evaluation-suite throughput: units (method x task x prompt), samples and generated tokens per second.

Runs `adaptive_decoder.evaluation.harness.Evaluator` on the real base model (default SmolLM2-135M-Instruct) over small
built-in subsets (fresh output directory each repeat, so nothing is resumed), with the methods a user runs most:
greedy, a fixed-temperature grid, random and the per-task oracle (its dev split included). Reports the wall time,
the share of it spent inside the policies' generate calls (the rest is scoring: rewards, fluency forward passes,
diversity metrics; plus bookkeeping, fsync'ed unit log, aggregation with bootstrap CIs, plots), and the peak
memory above the level before the run. The model is loaded once, outside the timing.

    python bench/eval_throughput.py [--model smollm2] [--tasks gsm8k constrained_writing] [--prompts 4] [--json out.json]

The last line is the evaluation throughput in generated tokens per second.
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
from decode_overhead import timed  # noqa: E402

from adaptive_decoder.evaluation.config import EvalConfig  # noqa: E402
from adaptive_decoder.evaluation.harness import Evaluator  # noqa: E402
from adaptive_decoder.modeling.models import load_base_model  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", nargs="+", default=["gsm8k", "constrained_writing"])
    ap.add_argument("--prompts", type=int, default=4, help="test prompts per task")
    ap.add_argument("--dev-prompts", type=int, default=2, help="dev prompts per task (oracle)")
    ap.add_argument("--samples", type=int, default=2, help="samples per prompt")
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.0, 0.7])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--fluency", action=argparse.BooleanOptionalAction, default=True, help="score fluency with the LM")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = load_base_model(args.model)

    def run(out_dir):
        cfg = EvalConfig(model=args.model, tasks={t: {} for t in args.tasks}, num_prompts=args.prompts,
                         num_dev_prompts=args.dev_prompts,
                         methods=["greedy", "fixed", "random", "oracle"], temperatures=args.temperatures,
                         num_samples=args.samples, max_new_tokens=args.new_tokens, batch_size=8, fluency=args.fluency,
                         output_dir=out_dir, report_to="none", progress=False, n_bootstrap=1000, plots=True)
        return Evaluator(cfg, model, tok).run()

    walls, gens, mems, res = [], [], [], None
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as d:
            wall, peak, res = timed(lambda: run(d), model.device)
        units = [u for u in res["units"] if "reused_from" not in u.get("extra", {})]  # oracle units reuse fixed ones
        gen = sum(u["gen_seconds"] for u in units)
        walls.append(wall)
        gens.append(gen)
        mems.append(peak)
        print(f"run {r}: {wall:.1f} s wall, {gen:.1f} s in generate", file=sys.stderr)
    units = [u for u in res["units"] if "reused_from" not in u.get("extra", {})]
    samples = sum(len(u["samples"]) for u in units)
    tokens = sum(s["num_tokens"] for u in units for s in u["samples"] if not u.get("extra", {}).get("replicated"))
    tokens += sum(u["samples"][0]["num_tokens"] for u in units if u.get("extra", {}).get("replicated"))  # greedy: 1 row
    wall = statistics.median(walls)
    gen = statistics.median(gens)
    out = {"units": len(units), "samples": samples, "generated_tokens": tokens, "wall_s": walls, "generate_s": gens,
           "units_per_s": len(units) / wall, "samples_per_s": samples / wall, "tokens_per_s": tokens / wall,
           "generate_share": gen / wall, "peak_bytes": max(mems)}
    cond = (f"{args.model}, tasks {args.tasks}, {args.prompts} test + {args.dev_prompts} dev prompts per task, "
            f"{args.samples} samples, <= {args.new_tokens} new tokens, methods greedy + T={args.temperatures} + random + "
            f"oracle, fluency {'on' if args.fluency else 'off'}, torch {torch.__version__} ({torch.get_num_threads()} "
            f"threads), transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs")
    out["conditions"] = cond
    print(f"conditions: {cond}")
    print(f"{len(units)} units ({samples} samples, {tokens} generated tokens) in {wall:.1f} s: "
          f"{out['units_per_s']:.2f} units/s, {out['samples_per_s']:.2f} samples/s; {100 * out['generate_share']:.0f}% of "
          f"the wall time in generate; peak memory +{max(mems) / 2**20:.1f} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"eval throughput: {out['tokens_per_s']:.1f} generated tokens/s")


if __name__ == "__main__":
    main()
