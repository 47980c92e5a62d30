"""The lead table of docs/results.md, generated from the runs' summary.json files (no number in it is typed by hand).

    python docs/make_results.py            # rewrite the block between the markers in docs/results.md
    python docs/make_results.py --check    # exit 1 if the block is not what the index renders (CI, before a commit)

docs/results/index.yaml lists the runs, in table order: `run` (a name), `config` (the experiment config it ran),
`command` (how it ran), `summary` (a copy of the run's summary.json, committed under docs/results/<run>/; a
summary.json is tens of kB) and optionally `note` (machine, load, caveats). A run enters the table by adding its
copy and one entry. The block between `<!-- results-table:start -->` and `<!-- results-table:end -->` is replaced
whole, so rendering twice changes nothing and the text around it is never touched.

What a cell shows (all from the summary's scale-free report: normalized rewards, tasks weighted equally, 95% paired
bootstrap CIs over prompts):
- headroom: the dev-picked per-task oracle minus the best single fixed temperature (dev-picked);
- the bar: the primary head's verdict, its difference to that temperature with its CI, and the failed condition;
- head vs the best label-free baseline: the best, by normalized reward, of the methods that see prompts only (the
  best fixed temperature, MeanShift, a sampler or joint config tuned once for the mix, HAG), and vs min-p tuned per
  task (a labeled reference); "—" where the run did not evaluate it;
- wall time: the sum of the recorded stage times (a resumed stage reports its whole compute time).
`row_of` is the one function that reads the summary schema.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

DOCS = Path(__file__).resolve().parent
START, END = "<!-- results-table:start -->", "<!-- results-table:end -->"
LABEL_FREE_ROLES = ("meanshift", "hag")  # besides the fixed grid and the `pooled` settings (tuned once for the mix)
COLUMNS = ("run", "model", "config", "seeds", "test prompts per task", "headroom: oracle − best fixed [95% CI]",
           "head", "bar: head − best fixed [95% CI]", "head − best label-free baseline [95% CI]",
           "head − min-p per task [95% CI]", "wall time (stages)")


def _iv(d: dict | None) -> tuple | None:
    """(mean, lo, hi) of a report interval {"mean", "lo", "hi"}."""
    return None if d is None else (d["mean"], d["lo"], d["hi"])


def row_of(summary: dict) -> dict:
    """The numbers of one run's row, read from its summary.json (the only place that knows the schema)."""
    sf, bar = summary["scale_free"], summary["bar"]
    if not bar.get("evaluated"):
        raise ValueError(f"its head {bar['method']!r} was not evaluated: the table compares a trained head")
    head, best = bar["method"], sf["best_fixed"]["name"]
    methods = summary["methods"]
    h2h = sf.get("head_to_head", {}).get(head, {})

    def vs_head(other):  # (name, (mean, lo, hi)) of head - other
        if other == best:
            return other, (bar["diff"], *bar["diff_ci"])
        return other, _iv(h2h.get(other, {}).get("difference", {}).get("overall"))

    label_free = [best] + [m for m, d in methods.items() if m != head and m in sf["normalized"]
                           and (d.get("role") in LABEL_FREE_ROLES or d.get("pooled"))]
    strongest = max(label_free, key=lambda m: sf["normalized"][m]["overall"]["mean"])
    min_p = [m for m, d in methods.items() if d.get("sampler") == "min_p" and not d.get("pooled")]
    oracle = sf["differences"].get("oracle", {}).get(best, {}).get("overall")
    failed = [] if bar.get("beats_best_fixed") else ["difference CI not above 0"]
    failed += [f"win rate vs {f} CI not above 50%" for f, w in bar.get("win_rates", {}).items()
               if not (w["mean"] > 0.5 and w["ci"][0] > 0.5)]
    tests = sorted({v["num_test"] for t, v in summary["tasks"].items() if t != "overall"})
    model = summary["model"] + "".join(f", {summary[k]}" for k in ("dtype", "backend") if k in summary)
    return {"model": model, "seeds": summary["seeds"], "num_test": tests, "headroom": _iv(oracle),
            "head": head, "head_normalized": _iv(sf["normalized"][head]["overall"]), "bar_met": bar["met"],
            "bar": (bar["diff"], *bar["diff_ci"]), "baseline": best, "bar_failed": failed,
            "vs_label_free": vs_head(strongest), "vs_min_p": vs_head(min_p[0]) if min_p else None,
            "wall_s": sum(summary.get("timings", {}).values())}


def _num(x: float) -> str:
    return f"{x:+.3f}".replace("-", "−")


def _ci(t: tuple | None) -> str:
    return "—" if t is None else f"{_num(t[0])} [{_num(t[1])}, {_num(t[2])}]"


def _wall(s: float) -> str:
    s = round(s)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


def render_row(entry: dict, row: dict) -> str:
    verdict = "**met**" if row["bar_met"] else "not met (" + "; ".join(row["bar_failed"]) + ")"
    name, diff = row["vs_label_free"]
    mp = row["vs_min_p"]
    m, lo, hi = row["head_normalized"]
    cells = [f"[{entry['run']}]({Path(entry['summary']).as_posix()})", row["model"], f"`{entry['config']}`",
             ", ".join(map(str, row["seeds"])), " / ".join(map(str, row["num_test"])), _ci(row["headroom"]),
             f"{row['head']} {m:.3f} [{lo:.3f}, {hi:.3f}]", f"{verdict}: {_ci(row['bar'])} vs {row['baseline']}",
             f"{_ci(diff)} vs {name}", "—" if mp is None else f"{_ci(mp[1])} vs {mp[0]}", _wall(row["wall_s"])]
    return "| " + " | ".join(cells) + " |"


def render_table(index_path: Path, page_dir: Path) -> str:
    """The block's content: the header, one row per index entry (its summary linked relative to `page_dir`) and
    each run's command."""
    entries = yaml.safe_load(index_path.read_text()) or []
    if not entries:
        raise ValueError(f"{index_path}: no runs listed; add an entry (run, config, command, summary) per run")
    rows = []
    for e in entries:
        missing = [k for k in ("run", "config", "command", "summary") if k not in e]
        if missing:
            raise ValueError(f"{index_path}: entry {e.get('run', e)!r} lacks {missing}")
        path = index_path.parent / e["summary"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: copy the run's summary.json there (entry {e['run']!r})")
        try:
            row = row_of(json.loads(path.read_text()))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path}: {err!r} (entry {e['run']!r})") from err
        rows.append(render_row({**e, "summary": os.path.relpath(path, page_dir)}, row))
    commands = "\n".join(f"- {e['run']}: `{e['command']}`" + (f"; {e['note']}" if e.get("note") else "")
                         for e in entries)
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    return (f"<!-- generated by `python docs/make_results.py` from {index_path.name}; edit the index, not this block "
            f"-->\n\n{header}\n" + "\n".join(rows) + f"\n\nCommands:\n\n{commands}\n")


def replace_block(text: str, block: str, where: str = "the page") -> str:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{where} needs exactly one {START} followed by one {END}")
    head, rest = text.split(START)
    return f"{head}{START}\n{block}{END}{rest.split(END, 1)[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=DOCS / "results" / "index.yaml")
    ap.add_argument("--page", type=Path, default=DOCS / "results.md")
    ap.add_argument("--check", action="store_true", help="exit 1 (page unchanged) if the block is stale")
    a = ap.parse_args(argv)
    text = a.page.read_text()
    new = replace_block(text, render_table(a.index, a.page.parent), str(a.page))
    if a.check:
        if new != text:
            print(f"{a.page}: the results table is stale; run python docs/make_results.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        a.page.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
