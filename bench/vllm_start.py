"""Where the fixed cost of a `backend: vllm` suite start goes: the phases of one start, per engine mode, side by side.

    .venv-vllm/bin/python bench/vllm_start.py [--variants spawned in_process+cache in_process+cache] [--out FILE]
    #   with the environment of `make test-vllm`

Each variant runs in a fresh process, in order, what `eval/run_suite.py` does before and after its sampling with
the natural copy config (SmolLM2, dtype auto): imports, the HF model load (the embedded GGUF, dequantized),
`VLLMEngine` (its head-less export, then `vllm.LLM`), a small check workload, and `close`. Variants:
`spawned` is `VLLMEngine(in_process=False)` (vLLM's engine-core and worker processes), `in_process` the default
(`integrations.vllm.inproc`); `+cache` loads the GGUF through the conversion cache (`modeling.gguf_cache`) in a
directory fresh for this invocation, so its first variant converts and stores and a later one reads the entry
(without `+cache` the cache is off: every load converts). Every output line of the child (its own markers, vLLM's
log lines from every process it starts) is stamped when it arrives, and the engine start is split at vLLM's log
lines: the first line of the engine-core process, the first of the worker, "Starting to load model", "init
engine ... took".

The check workload: 8 prompts greedy, 40 tokens, with the top-2 log-probabilities of every step, and the same 8
prompts x 8 copies (64 requests, the natural copy's max_num_seqs). After the variants, the script says whether
each run's tokens and log-probabilities are those of the first run, bit for bit (neither the in-process engine
nor the cached model may move any token).
Prints one JSON line per variant (phase seconds, load average before and after), then one per later run against the
first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Copy this line exactly: The quick brown fox jumps over the lazy dog.",
           "Write one sentence that uses all of these words: dog, frisbee, catch, throw.",
           "Repeat the first line of this text: Meeting moved to Thursday at 3pm. Bring the slides.",
           "Write a short sentence about a river, a bridge and a boat.",
           "Copy: I'm sorry for your loss.",
           "Write a sentence with the words mountain, snow and climb.",
           "Copy the following text: All models are wrong, but some are useful.",
           "Write a sentence using: kitchen, knife, cut, vegetable."]
# (phase name, marker that ends it); a phase starts where the previous one ended
CHILD_PHASES = ["imports", "hf_load", "export", "engine", "check", "close"]
ENGINE_MARKS = [("engine_core_process", "(EngineCore pid="), ("worker_process", "(Worker pid="),
                ("to_model_load", "Starting to load model"), ("weights_kv_cache_init", "init engine (profile")]


def child(variant: str, out: str) -> None:
    t0 = time.time()

    def mark(name):
        print(f"@@ {name} {time.time() - t0:.3f}", flush=True)

    import torch
    import vllm  # noqa: F401

    import adaptive_decoder.integrations.vllm.backend as backend
    from adaptive_decoder.modeling.models import load_base_model

    mark("imports")
    model, tok = load_base_model("smollm2", dtype="auto")
    mark("hf_load")
    export = backend.export_sampler

    def timed_export(*a, **kw):
        path = export(*a, **kw)
        mark("export")
        return path

    backend.export_sampler = timed_export
    engine = backend.VLLMEngine(model, tok, max_num_seqs=64, in_process=variant.startswith("in_process"))
    mark("engine")
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    params = engine.SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, logprobs=2)
    first = engine.generate(ids, [params] * len(ids))
    many = engine.generate(ids * 8, [engine.SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)] * 64)
    mark("check")
    engine.close()
    mark("close")
    Path(out).write_text(json.dumps({
        "tokens": [list(o.outputs[0].token_ids) for o in first + many],
        "logprobs": [[{str(k): v.logprob for k, v in step.items()} for step in o.outputs[0].logprobs] for o in first],
        "torch_threads": torch.get_num_threads(), "dtype": str(model.dtype)}))


def run_variant(variant: str, out: Path, cache: Path) -> dict:
    """Run the child, stamping every line on arrival; the phase seconds from its markers and vLLM's log lines."""
    from adaptive_decoder.modeling.gguf_cache import ENV

    load0, t0 = os.getloadavg(), time.time()
    env = {**os.environ, ENV: str(cache) if variant.endswith("+cache") else ""}
    proc = subprocess.Popen([sys.executable, __file__, "--child", variant, "--out", str(out)], text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    lines = [(time.time() - t0, line.rstrip()) for line in proc.stdout]
    if proc.wait():
        sys.stderr.write("\n".join(text for _, text in lines[-40:]) + "\n")
        raise SystemExit(f"variant {variant} failed")
    marks = {text.split()[1]: at for at, text in lines if text.startswith("@@ ")}
    phases, prev = {}, 0.0
    for name in CHILD_PHASES:
        phases[name], prev = round(marks[name] - prev, 2), marks[name]
    engine, prev = {}, marks["export"]
    for name, needle in ENGINE_MARKS:
        at = next((t for t, text in lines if needle in text and t >= prev), None)
        if at is not None:
            engine[name], prev = round(at - prev, 2), at
    engine["to_engine_ready"] = round(marks["engine"] - prev, 2)
    return {"variant": variant, "wall_s": round(lines[-1][0], 2), "phases": phases, "engine_split": engine,
            "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in os.getloadavg()]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["spawned", "in_process+cache", "in_process+cache"],
                    choices=["spawned", "in_process", "spawned+cache", "in_process+cache"])
    ap.add_argument("--out", default=None, help="also write the JSON lines here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.out)
    import platform

    import torch

    head = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "start_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    rows, results = [head], {}
    print(json.dumps(head), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="vllm_start_"))
    for i, v in enumerate(args.variants):
        out = tmp / f"{i}.json"
        rows.append({"run": i, **run_variant(v, out, tmp / "cache")})
        results[i] = json.loads(out.read_text())
        print(json.dumps(rows[-1]), flush=True)
    shutil.rmtree(tmp)
    ref = results[0]
    for i in range(1, len(results)):
        rows.append({"run": i, "against_run": 0, "tokens_identical": results[i]["tokens"] == ref["tokens"],
                     "logprobs_identical": results[i]["logprobs"] == ref["logprobs"],
                     "torch_threads": [ref["torch_threads"], results[i]["torch_threads"]]})
        print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in rows) + "\n")


if __name__ == "__main__":
    main()
