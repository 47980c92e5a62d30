"""The evaluation suite on `backend: hf` vs `backend: vllm` (issue 16, item 4; issue 35, item 4): one config, the
wall time of each, side by side in one run.

    make bench-vllm-suite            # configs/eval/vllm_backend.yaml
    make bench-vllm-natural-copy     # a slice of the natural copy mix: configs/eval/vllm_natural_copy.yaml
    # = .venv-vllm/bin/python bench/vllm_suite.py [--config CONFIG] [--root ROOT] [--head JSON]
    #       [--variant NAME=BACKEND[:VLLM_OPTIONS_JSON] ...] [run_suite options, e.g. --dtype float32]
    #   with the environment of `make test-vllm`

Writes the config's untrained SmolLM2 heads (the head_paths; a name containing "tok" is token level, the others
sequence level; seeded, argmax; `--head` adds head settings, e.g. the experiment's bins) under ROOT/heads, then runs
`eval/run_suite.py --config CONFIG --backend B [--vllm_options O] --output_dir ROOT/NAME` for every variant, in
order, each in a fresh process and a fresh output directory (an existing one is refused: a resumed run would time
nothing). All run in this venv (same torch, transformers and OpenMP), so only the sampling backend differs; a GGUF model is
converted into the user cache first (`warm_gguf_cache`), so every run loads it from there. A vllm
figure includes the engine start and the HF passes that recompute head choices; all include loading the model
and scoring. `gen_s` is the generate time summed over the units a run computed (reused units excluded): the
sampling alone, without model load, engine start and scoring.

Prints the conditions and one JSON line per variant (wall seconds, generate seconds, load average before and
after), then, for each variant after the first, how many units have the same sample texts as the first variant's:
greedy units, and all units (with row seeds both backends draw the same tokens wherever their float32 warped
scores agree, so a difference is a bf16/kernel difference in the model's logits reaching a token: say how many).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def write_heads(paths: list, hidden: int = 576, settings: dict | None = None):
    from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead

    for i, p in enumerate(paths):
        if Path(p).exists():
            continue
        level = "token" if "tok" in Path(p).name else "sequence"
        torch.manual_seed(i)
        cfg = AdaptiveDecoderConfig(**{"hidden_size": hidden, "base_model": "smollm2", "level": level,
                                       "selection": "argmax", **(settings or {})})
        AdaptiveDecoderHead(cfg).save_pretrained(p)


def warm_gguf_cache(cfg: dict, passthrough: list) -> None:
    """Convert the config's GGUF model into the user cache (`modeling.gguf_cache`) before any timed run, so that
    neither backend pays the one-time conversion (~16 s of SmolLM2 on the 2-core machine) for being run first."""
    from adaptive_decoder.modeling.models import EMBEDDED, load_base_model

    name = passthrough[passthrough.index("--model") + 1] if "--model" in passthrough else cfg["model"]
    dtype = passthrough[passthrough.index("--dtype") + 1] if "--dtype" in passthrough else cfg.get("dtype", "float32")
    if name in EMBEDDED or str(name).endswith(".gguf"):
        load_base_model(name, dtype=dtype)


def variant(spec: str) -> tuple:
    """NAME=BACKEND[:VLLM_OPTIONS_JSON] -> (name, backend, options or None)."""
    name, _, rest = spec.partition("=")
    backend, _, opts = (rest or name).partition(":")
    return name, backend, (json.loads(opts) if opts else None)


def sampled_seconds(res: dict) -> float:
    return sum(u.get("gen_seconds", 0.0) for u in res["units"] if "reused_from" not in u.get("extra", {}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs/eval/vllm_backend.yaml"))
    ap.add_argument("--root", default=None, help="default: the parent of the config's output_dir")
    ap.add_argument("--head", default="{}", help="head settings (JSON) for the untrained heads")
    ap.add_argument("--variant", action="append", default=None, help="NAME=BACKEND[:VLLM_OPTIONS_JSON]; default hf, vllm")
    args, passthrough = ap.parse_known_args()  # any other --OPTION VALUE goes to every run_suite call
    cfg = yaml.safe_load(Path(args.config).read_text())
    write_heads(cfg["head_paths"], settings=json.loads(args.head))
    warm_gguf_cache(cfg, passthrough)
    root = Path(args.root or Path(cfg["output_dir"]).parent)
    variants = [variant(v) for v in (args.variant or ["hf", "vllm"])]
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(), "torch": torch.__version__,
                      "python": sys.version.split()[0], "config": args.config, "variants": variants,
                      "run_suite_options": passthrough,
                      "start_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}))
    for name, _, _ in variants:
        if (root / name).exists():
            raise SystemExit(f"{root / name} exists; remove it (a resumed run would time nothing)")
    units, rewards = {}, {}
    for name, backend, opts in variants:
        out = root / name
        load0, t0 = os.getloadavg(), time.time()
        subprocess.run([sys.executable, str(REPO / "eval/run_suite.py"), "--config", args.config, "--backend", backend,
                        *(["--vllm_options", json.dumps(opts)] if opts else []), *passthrough, "--output_dir", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        res = json.loads((out / "results.json").read_text())
        units[name] = {(u["method"], u["task"], u["split"], u["prompt_id"]): [s["text"] for s in u["samples"]]
                       for u in res["units"]}
        rewards[name] = {(u["method"], u["task"], u["split"], u["prompt_id"]): u["reward"] for u in res["units"]
                         if "reused_from" not in u.get("extra", {})}
        print(json.dumps({"variant": name, "backend": backend, "vllm_options": opts, "wall_s": round(wall, 1),
                          "gen_s": round(sampled_seconds(res), 1), "units": len(res["units"]),
                          "load_before": [round(x, 2) for x in load0],
                          "load_after": [round(x, 2) for x in os.getloadavg()]}), flush=True)
    ref = units[variants[0][0]]
    greedy = [k for k in ref if k[0] == "greedy"]
    for name, _, _ in variants[1:]:
        print(json.dumps({"variant": name, "against": variants[0][0],
                          "greedy_units_same_text": sum(ref[k] == units[name].get(k) for k in greedy),
                          "greedy_units": len(greedy),
                          "units_same_text": sum(ref[k] == units[name].get(k) for k in ref), "units": len(ref),
                          "reward_diff": paired_reward_diff(rewards[variants[0][0]], rewards[name])}))


def paired_reward_diff(ref: dict, other: dict, n_boot: int = 5000) -> dict:
    """Per task: the mean over computed units of (other's unit reward - ref's) and its 95% paired bootstrap
    interval (seeded). The test for sampled rows where the backends' float kernels differ (bf16): equal in
    distribution shows as an interval around 0."""
    import numpy as np

    rng, out = np.random.default_rng(0), {}
    for task in sorted({k[1] for k in ref}):
        d = np.array([other[k] - ref[k] for k in ref if k[1] == task and k in other])
        boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
        out[task] = {"units": len(d), "mean": round(float(d.mean()), 4),
                     "ci95": [round(float(x), 4) for x in np.percentile(boots, [2.5, 97.5])]}
    return out


if __name__ == "__main__":
    main()
