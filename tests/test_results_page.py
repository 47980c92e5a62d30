"""docs/make_results.py: the lead table of docs/results.md is rendered from summary.json files listed in an index;
a row's numbers are the summary's, rendering twice changes nothing, and --check fails on a stale block."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("make_results", REPO / "docs" / "make_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


mr = _load()


def _iv(mean, lo, hi):
    return {"mean": mean, "lo": lo, "hi": hi}


def _summary(with_min_p=True):
    """The part of summary.json the table reads: a control-like run where MeanShift (0.80) is the strongest
    label-free baseline, ahead of the best fixed temperature T=0.4 (0.70), and the win rate vs T=1.2 misses."""
    methods = {"T=0.0": {"role": "fixed"}, "T=0.4": {"role": "fixed"}, "T=1.2": {"role": "fixed"},
               "oracle": {"role": "oracle"}, "adseq": {"role": "adaptive"}, "meanshift-adseq": {"role": "meanshift"},
               "min_p_mix": {"role": "sampler", "sampler": "min_p", "pooled": True}}
    if with_min_p:
        methods["min_p"] = {"role": "sampler", "sampler": "min_p"}
    normalized = {"adseq": 0.917, "T=0.4": 0.7, "meanshift-adseq": 0.8, "min_p_mix": 0.75, "min_p": 0.944,
                  "oracle": 1.0, "T=0.0": 0.5, "T=1.2": 0.6}
    h2h = {"meanshift-adseq": {"difference": {"overall": _iv(0.117, 0.05, 0.2)}},
           "min_p_mix": {"difference": {"overall": _iv(0.167, 0.1, 0.23)}},
           "min_p": {"difference": {"overall": _iv(-0.027, -0.08, 0.021)}}}
    return {
        "model": "smollm2", "seeds": [0, 1, 2], "methods": methods,
        "tasks": {"control_qa": {"num_test": 16}, "control_numbers": {"num_test": 16}, "overall": {"num_test": 32}},
        "timings": {"load_model": 4.5, "seed-0/collect-sequence": 1000.0, "seed-0/eval": 2800.5},
        "bar": {"method": "adseq", "evaluated": True, "baseline": "T=0.4", "diff": 0.217, "diff_ci": [0.15, 0.29],
                "beats_best_fixed": True, "met": False,
                "win_rates": {"T=0.0": {"mean": 0.7, "ci": [0.6, 0.8]}, "T=0.4": {"mean": 0.8, "ci": [0.7, 0.9]},
                              "T=1.2": {"mean": 0.55, "ci": [0.42, 0.67]}}},
        "scale_free": {"best_fixed": {"name": "T=0.4"},
                       "normalized": {m: {"overall": _iv(v, v - 0.05, v + 0.05)} for m, v in normalized.items()},
                       "differences": {"oracle": {"T=0.4": {"overall": _iv(0.3, 0.2, 0.4)}}},
                       "head_to_head": {"adseq": h2h if with_min_p else {k: h2h[k] for k in h2h if k != "min_p"}}},
    }


def test_row_reads_headroom_bar_and_the_strongest_label_free_baseline():
    row = mr.row_of(_summary())
    assert row["headroom"] == (0.3, 0.2, 0.4)
    assert row["bar"] == (0.217, 0.15, 0.29) and row["bar_met"] is False
    assert row["bar_failed"] == ["win rate vs T=1.2 CI not above 50%"]
    # MeanShift 0.80 > min_p_mix 0.75 > T=0.4 0.70; the per-task min-p is labeled, so it is not a candidate
    assert row["vs_label_free"] == ("meanshift-adseq", (0.117, 0.05, 0.2))
    assert row["vs_min_p"] == ("min_p", (-0.027, -0.08, 0.021))
    assert row["num_test"] == [16] and row["wall_s"] == 3805.0
    assert row["model"] == "smollm2"  # a summary from before the dtype and backend were recorded
    assert mr.row_of({**_summary(), "dtype": "float32", "backend": "vllm"})["model"] == "smollm2, float32, vllm"


def test_the_best_fixed_temperature_is_compared_through_the_bar_when_it_is_the_strongest():
    s = _summary(with_min_p=False)
    s["scale_free"]["normalized"]["meanshift-adseq"]["overall"]["mean"] = 0.6
    s["scale_free"]["normalized"]["min_p_mix"]["overall"]["mean"] = 0.65
    row = mr.row_of(s)
    assert row["vs_label_free"] == ("T=0.4", (0.217, 0.15, 0.29)) and row["vs_min_p"] is None


def _site(tmp_path, summary):
    (tmp_path / "results" / "r1").mkdir(parents=True)
    (tmp_path / "results" / "r1" / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "results" / "index.yaml").write_text(yaml.safe_dump(
        [{"run": "r1", "config": "configs/experiments/control.yaml", "command": "make demo",
          "summary": "r1/summary.json", "note": "one seed"}]))
    page = tmp_path / "results.md"
    page.write_text(f"# Results\n\nbefore\n\n{mr.START}\nold\n{mr.END}\n\nafter\n")
    return ["--index", str(tmp_path / "results" / "index.yaml"), "--page", str(page)], page


def test_generator_renders_the_row_is_idempotent_and_check_fails_when_stale(tmp_path):
    argv, page = _site(tmp_path, _summary())
    assert mr.main(argv + ["--check"]) == 1 and "old" in page.read_text()  # --check never writes
    assert mr.main(argv) == 0
    text = page.read_text()
    row = ("| [r1](results/r1/summary.json) | smollm2 | `configs/experiments/control.yaml` | 0, 1, 2 | 16 "
           "| +0.300 [+0.200, +0.400] | adseq 0.917 [0.867, 0.967] "
           "| not met (win rate vs T=1.2 CI not above 50%): +0.217 [+0.150, +0.290] vs T=0.4 "
           "| +0.117 [+0.050, +0.200] vs meanshift-adseq | −0.027 [−0.080, +0.021] vs min_p | 1 h 03 min |")
    assert row in text.splitlines()
    assert text.startswith("# Results\n\nbefore\n\n") and text.endswith(f"{mr.END}\n\nafter\n")
    assert "- r1: `make demo`; one seed" in text and "old" not in text
    assert mr.main(argv + ["--check"]) == 0
    assert mr.main(argv) == 0 and page.read_text() == text


def test_generator_names_what_is_missing(tmp_path):
    argv, page = _site(tmp_path, _summary())
    (tmp_path / "results" / "r1" / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="copy the run's summary.json there"):
        mr.main(argv)
    (tmp_path / "results" / "r1" / "summary.json").write_text(json.dumps({**_summary(), "bar": {"method": "adseq",
                                                                                            "evaluated": False}}))
    with pytest.raises(ValueError, match="r1/summary.json.*'adseq' was not evaluated.*entry 'r1'"):
        mr.main(argv)
    page.write_text("no markers\n")
    (tmp_path / "results" / "r1" / "summary.json").write_text(json.dumps(_summary()))
    with pytest.raises(ValueError, match="needs exactly one <!-- results-table:start -->"):
        mr.main(argv)


def test_the_committed_results_page_is_up_to_date():
    """docs/results.md's block is what docs/results/index.yaml renders (rerun docs/make_results.py after a run)."""
    assert mr.main(["--check"]) == 0
