"""The evaluation suite on `backend: hf` vs `backend: vllm` (issue 16, item 4): one config, the wall time of each.

    make bench-vllm-suite
    # = .venv-vllm/bin/python bench/vllm_suite.py [--config configs/eval/vllm_backend.yaml] [--root runs/bench_vllm_suite]
    #   with the environment of `make test-vllm`

Writes the config's two untrained SmolLM2 heads (ADseq, ADtok; seeded, argmax) under ROOT/heads, then runs
`eval/run_suite.py --config CONFIG --backend B --output_dir ROOT/B` for B = hf, then vllm, each in a fresh process
and a fresh output directory (an existing one is refused: a resumed run would time nothing). Both run in this venv
(same torch, transformers and OpenMP), so only the sampling backend differs. The vllm figure includes the engine
start and the HF passes that recompute head choices; both include loading the model and scoring.

Prints the conditions and one JSON line per backend (wall seconds, load average before and after), and last how
many greedy units have the same texts on both backends (float kernels differ, so a few may not).
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


def write_heads(paths: list, hidden: int = 576):
    from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead

    for i, p in enumerate(paths):
        if Path(p).exists():
            continue
        level = "token" if Path(p).name == "adtok" else "sequence"
        torch.manual_seed(i)
        cfg = AdaptiveDecoderConfig(hidden_size=hidden, base_model="smollm2", level=level, selection="argmax")
        AdaptiveDecoderHead(cfg).save_pretrained(p)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs/eval/vllm_backend.yaml"))
    ap.add_argument("--root", default="runs/bench_vllm_suite")
    args = ap.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    write_heads(cfg["head_paths"])
    root = Path(args.root)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "torch": torch.__version__, "python": sys.version.split()[0], "config": args.config,
                      "start_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}))
    units = {}
    for backend in ("hf", "vllm"):
        out = root / backend
        if out.exists():
            raise SystemExit(f"{out} exists; remove it (a resumed run would time nothing)")
        load0, t0 = os.getloadavg(), time.time()
        subprocess.run([sys.executable, str(REPO / "eval/run_suite.py"), "--config", args.config, "--backend", backend,
                        "--output_dir", str(out)], check=True, stdout=subprocess.DEVNULL)
        wall = time.time() - t0
        res = json.loads((out / "results.json").read_text())
        units[backend] = {(u["method"], u["task"], u["prompt_id"]): [s["text"] for s in u["samples"]]
                          for u in res["units"]}
        print(json.dumps({"backend": backend, "wall_s": round(wall, 1), "units": len(res["units"]),
                          "load_before": [round(x, 2) for x in load0],
                          "load_after": [round(x, 2) for x in os.getloadavg()]}))
    greedy = [k for k in units["hf"] if k[0] == "greedy"]
    same = sum(units["hf"][k] == units["vllm"].get(k) for k in greedy)
    print(json.dumps({"greedy_units_same_text": same, "greedy_units": len(greedy)}))


if __name__ == "__main__":
    main()
