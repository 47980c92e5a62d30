"""Run every benchmark (each in its own process, small settings) and print one table.

    python bench/run_all.py [--model smollm2] [--only decode collect eval lpo] [--json bench_results.json]

Benchmarks (each script documents its own method; run them alone for bigger settings):
  decode   bench/decode_overhead.py      adaptive generation (token-level head, every step) vs plain HF sampling
  lpo      bench/lpo_train_speed.py      one LPO epoch from the hidden-state cache vs recomputing head inputs
  collect  bench/collect_throughput.py   LPO sample collection vs plain batched generate(num_return_sequences)
  eval     bench/eval_throughput.py      evaluation suite (greedy, fixed grid, random, oracle) end to end
Peak memory: each benchmark's own figure (resident set above the level before its timed part, or CUDA max
allocated) where it reports one, and the child process's maximum resident set size (os.wait4 rusage: model
weights included) for all. Timings on a shared machine drift: each script interleaves what it compares.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def run_child(cmd: list, log: Path, threads: int) -> dict:
    """Run a benchmark; returns rc, wall seconds, child max RSS (bytes) and its stdout."""
    # OMP_NUM_THREADS also pins the scripts without a --threads flag (torch reads it at start-up)
    env = {**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HERE.parent)
        _, status, rusage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": time.time() - t0, "max_rss_bytes": rusage.ru_maxrss * 1024,
            "output": log.read_text()}


def bench_specs(args, tmp: Path) -> dict:
    py, m = sys.executable, args.model
    t = str(args.threads)
    return {
        "decode": ([py, str(HERE / "decode_overhead.py"), "--model", m, "--batch", "8", "--new-tokens", "24",
                    "--repeats", "3", "--json", str(tmp / "decode.json")], tmp / "decode.json"),
        "lpo": ([py, str(HERE / "lpo_train_speed.py"), "--model", m, "--level", "token", "--pairs", "16",
                 "--prompts", "4", "--samples", "4", "--max-new-tokens", "24", "--repeats", "3", "--threads", t], None),
        "collect": ([py, str(HERE / "collect_throughput.py"), "--model", m, "--prompts", "4", "--samples", "4",
                     "--new-tokens", "24", "--repeats", "2", "--threads", t, "--json", str(tmp / "collect.json")],
                    tmp / "collect.json"),
        "eval": ([py, str(HERE / "eval_throughput.py"), "--model", m, "--prompts", "2", "--dev-prompts", "1",
                  "--samples", "2", "--new-tokens", "24", "--threads", t, "--json", str(tmp / "eval.json")],
                 tmp / "eval.json"),
    }


def summarize(name: str, data: dict) -> tuple[str, str]:
    """(headline metric, details) of one benchmark's JSON."""
    mib = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    if name == "decode":
        med = data["median"]
        return (f"adaptive/plain throughput {data['ratio']:.3f}",
                f"plain {med['plain']:.1f} tok/s, adaptive {med['adaptive']:.1f} tok/s; peak +"
                f"{mib(data['peak_bytes']['plain'])} / +{mib(data['peak_bytes']['adaptive'])}")
    if name == "lpo":
        c = sorted(data["cache_epoch_s"])[len(data["cache_epoch_s"]) // 2]
        r = sorted(data["recompute_epoch_s"])[len(data["recompute_epoch_s"]) // 2]
        return (f"cache {r / c:.0f}x faster than recompute",
                f"epoch of {data['pairs']} pairs ({data['level']} level): cache {1000 * c:.1f} ms, recompute {1000 * r:.0f} ms")
    if name == "collect":
        med = data["median"]
        return (f"collect/plain throughput {data['ratio']:.3f}",
                f"plain {med['plain']:.1f} tok/s, collect {med['collect']:.1f} tok/s; peak +{mib(data['peak_bytes']['plain'])}"
                f" / +{mib(data['peak_bytes']['collect'])}")
    if name == "eval":
        return (f"{data['tokens_per_s']:.1f} generated tok/s",
                f"{data['units']} units, {data['samples_per_s']:.2f} samples/s, {100 * data['generate_share']:.0f}% of "
                f"wall in generate; peak +{mib(data['peak_bytes'])}")
    raise ValueError(name)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--only", nargs="+", choices=["decode", "lpo", "collect", "eval"], default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per benchmark (1 on a shared machine)")
    ap.add_argument("--json", default=None, help="write every measurement to this JSON file")
    args = ap.parse_args(argv)
    rows, everything = [], {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        specs = bench_specs(args, tmp)
        for name in args.only or list(specs):
            cmd, json_path = specs[name]
            print(f"[run_all] {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            res = run_child(cmd, tmp / f"{name}.log", args.threads)
            data = None
            if res["rc"] == 0:
                data = json.loads(json_path.read_text()) if json_path else _last_json_line(res["output"])
            if data is None:
                tail = "\n".join(res["output"].splitlines()[-15:])
                print(f"[run_all] {name} FAILED (exit {res['rc']}):\n{tail}", file=sys.stderr)
                rows.append((name, "FAILED", f"exit {res['rc']}", res["wall_s"], res["max_rss_bytes"]))
                everything[name] = {"failed": True, "rc": res["rc"], "output_tail": tail}
                continue
            headline, details = summarize(name, data)
            conditions = next((ln[len("conditions: "):] for ln in res["output"].splitlines()
                               if ln.startswith("conditions: ")), None)
            rows.append((name, headline, details, res["wall_s"], res["max_rss_bytes"]))
            everything[name] = {"data": data, "wall_s": res["wall_s"], "max_rss_bytes": res["max_rss_bytes"],
                                "conditions": conditions, "command": cmd[1:]}
    lines = ["| benchmark | result | details | wall s | process max RSS |", "|---|---|---|---|---|"]
    for name, head, det, wall, rss in rows:
        lines.append(f"| {name} | {head} | {det} | {wall:.0f} | {rss / 2**20:.0f} MiB |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))
    return 0 if all(r[1] != "FAILED" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
