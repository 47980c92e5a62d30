"""What `stop_when_scored` saves: a task scored on its first line, evaluated with and without the stop.

For each temperature, one FixedPolicy batch (--prompts prompts x --samples samples, the task's own max_new_tokens)
runs twice with the same seed: decoding to the budget, and stopping each row at its task's `stop_predicate`.
Runs are interleaved (free, stopped, free, ...) after one untimed warm-up, so load drift hits both alike. Every
scored text (`task.postprocess`) must be the same in both runs, else the script fails. Reported per temperature:
the batch's decode steps and the wall time of each run; the last line is the overall time ratio.

    python bench/stop_when_scored.py --model gemma3 --task copy_text_fewshot \
        --task_path ../shared/data/translation/wmt22.en-de.jsonl [--prompts 8] [--samples 4] [--torch_threads 1]
"""

import argparse
import json
import time

import torch

from adaptive_decoder.methods.policies import FixedPolicy
from adaptive_decoder.modeling.generation import AdaptiveDecodingModel
from adaptive_decoder.modeling.models import load_base_model
from adaptive_decoder.tasks import get_task


def timed(policy, adm, prompts, samples, max_new_tokens, stop):
    t0 = time.perf_counter()
    outs = policy.generate(adm, prompts, num_samples=samples, max_new_tokens=max_new_tokens, seed=0,
                           **({"stop_when": stop} if stop else {}))
    return time.perf_counter() - t0, outs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--task", default="copy_text")
    ap.add_argument("--task_path", default=None, help="the task's data file (its `path` option)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.4, 0.8, 1.2])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--torch_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    task = get_task(args.task, **({"path": args.task_path} if args.task_path else {}))
    stop = task.stop_predicate()
    if stop is None:
        raise SystemExit(f"task {args.task!r} scores its whole completion: there is nothing to stop early")
    model, tok = load_base_model(args.model, dtype=args.dtype)
    adm = AdaptiveDecodingModel(model, tok)
    prompts = [e["prompt"] for e in task.split(args.prompts, 0, 0)[0]]
    max_new = task.max_new_tokens or 64
    rows, total = [], {"free": 0.0, "stopped": 0.0}
    for t in args.temperatures:
        policy = FixedPolicy(t)
        timed(policy, adm, prompts[:2], 1, 4, None)  # warm-up
        secs = {"free": [], "stopped": []}
        for _ in range(args.repeats):
            for name, s in (("free", None), ("stopped", stop)):
                dt, outs = timed(policy, adm, prompts, args.samples, max_new, s)
                secs[name].append(dt)
                texts = [task.postprocess(x) for o in outs for x in o.texts]
                steps = max(len(c) for o in outs for c in o.completion_ids)
                if name == "free":
                    ref, free_steps = texts, steps
                elif texts != ref:
                    raise SystemExit(f"T={t}: a scored text differs with the stop: the stop is not exact here")
        row = {"temperature": t, "decode_steps_free": free_steps, "decode_steps_stopped": steps,
               **{f"seconds_{k}": round(min(v), 2) for k, v in secs.items()}}
        rows.append(row)
        for k in total:
            total[k] += min(secs[k])
        print(json.dumps(row))
    print(json.dumps({"model": args.model, "dtype": args.dtype, "task": args.task, "prompts": len(prompts),
                      "samples": args.samples, "max_new_tokens": max_new, "torch_threads": args.torch_threads}))
    print(f"stopped / free wall time: {total['stopped'] / total['free']:.3f} (scored texts identical)")


if __name__ == "__main__":
    main()
