"""`adaptive-decoder compare RUN_A RUN_B`: run B's trained head minus run A's on the same test prompts, normalized
per task as the bar is, with the bar's 95% CI (adaptive_decoder.experiment.compare). Prints the table; --out also
writes the comparison as JSON. Runs that do not pair (other prompts, seeds, evaluation or reward settings,
normalization) are refused in one line naming what differs."""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> None:
    from ..experiment.compare import DEFAULT_METHOD, compare_markdown, compare_runs
    from ..storage import atomic_write_bytes, jsonable

    ap = argparse.ArgumentParser(prog="adaptive-decoder compare", description=__doc__)
    ap.add_argument("run_a", help="the experiment run_dir compared against (its normalization is used)")
    ap.add_argument("run_b", help="the experiment run_dir whose head is compared (e.g. one run with --reuse_from RUN_A)")
    ap.add_argument("--method", default=DEFAULT_METHOD,
                    help=f"the method compared, the same name in both runs (default: {DEFAULT_METHOD}, the sequence head)")
    ap.add_argument("--n_boot", type=int, default=None, help="bootstrap resamples (default: run A's n_bootstrap)")
    ap.add_argument("--out", help="also write the comparison as JSON to this file")
    args = ap.parse_args(argv)
    try:
        cmp = compare_runs(args.run_a, args.run_b, method=args.method, n_boot=args.n_boot)
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"adaptive-decoder compare: error: {e}\n")
    if args.out:
        atomic_write_bytes(args.out, json.dumps(jsonable(cmp), indent=1).encode())
    print(compare_markdown(cmp), end="")
