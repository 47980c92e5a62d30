"""The evaluation report: results.md rows and the chosen-values summary and plot."""





from adaptive_decoder.methods.policies import FixedPolicy


def test_results_md_shows_greedy_and_its_grid_twin_as_one_row():
    """greedy decodes exactly like T=0.0: results.md has one row for the pair and no greedy-vs-T=0.0 comparison,
    in the raw, normalized, win-rate, per-task and paired-comparison tables."""
    from adaptive_decoder.evaluation.report import markdown_table
    from adaptive_decoder.evaluation.scalefree import scale_free_report
    from adaptive_decoder.methods.policies import GreedyPolicy

    methods = {"greedy": GreedyPolicy().describe(),
               "T=0.0": FixedPolicy(0.0).describe(), "T=1.0": FixedPolicy(1.0).describe(),
               "adseq": {"name": "adseq", "type": "AdaptivePolicy", "factors": ["temperature"]}}
    per_prompt = {"greedy": [0.5, 0.4, 0.9], "T=0.0": [0.5, 0.4, 0.9], "T=1.0": [0.2, 0.6, 0.1], "adseq": [0.5, 0.6, 0.8]}
    test = {"qa": {m: {str(i): r for i, r in enumerate(rs)} for m, rs in per_prompt.items()}}
    iv = {"mean": 0.5, "lo": 0.4, "hi": 0.6}
    comp = {"win": 0.5, "win_lo": 0.2, "win_hi": 0.8, "tie": 0.1, "loss": 0.4, "mean_diff": 0.0, "diff_lo": -0.1,
            "diff_hi": 0.1, "p_value": 1.0}
    results = {"config": {"model": "tiny", "num_samples": 2, "max_new_tokens": 8, "seed": 0, "n_bootstrap": 100},
               "wall_seconds": 1.0, "methods": methods,
               "tasks": {"qa": {"num_test": 3, "num_dev": 0, "source": "data/qa.jsonl", "reward": {"name": "exact"},
                                "methods": {m: {"reward": iv, "metrics": {}, "mean_new_tokens": 4.0} for m in methods}}},
               "comparisons": [{"task": "qa", "method": m, "baseline": f, **comp}
                               for m in ("greedy", "adseq") for f in ("T=0.0", "T=1.0")],
               "scale_free": scale_free_report(test, None, ["T=0.0", "T=1.0"], list(methods), n_boot=50)}
    md = markdown_table(results)
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert sum(r.startswith("| T=0.0 (= greedy) |") for r in rows) == 2  # raw table and the qa table
    # greedy appears only as a comparison with another temperature (the same as T=0.0's, which is not listed)
    assert {r.split(" | ")[1] for r in rows if r.startswith("| greedy |")} == {"T=1.0"}
    assert "| adseq | T=0.0 |" in md and "| adseq | T=1.0 |" in md  # the other comparisons stay
    assert "`greedy` decodes exactly like `T=0.0`" in md


def test_chosen_values_count_hag_fallbacks_apart_and_the_plot_axis_keeps_every_bin(tmp_path):
    from adaptive_decoder.evaluation.report import plot_chosen_params
    from adaptive_decoder.evaluation.report.plots import _value_axis
    from adaptive_decoder.evaluation.results import FALLBACK, chosen_values

    def unit(temperature, problems):
        vals = {"temperature": temperature, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}
        return {"samples": [{"values": vals}] * 2, "extra": {"parse_problems": problems}}

    # the second prompt's config text had no valid temperature: 1.0 is the default, not HAG's choice
    hag = chosen_values([unit(0.7, {}), unit(1.0, {"temperature": "missing"}), unit(1.0, {"top_p": "out_of_range"})])
    assert hag["temperature"] == {"0.7": 2, FALLBACK: 2, "1": 2} and hag["top_p"] == {"1": 4, FALLBACK: 2}
    results = {"methods": {"adseq": {"type": "AdaptivePolicy", "factors": ["temperature"],
                                     "bins": {"temperature": [0.0, 0.5, 1.0]}}, "hag": {"type": "HAGPolicy"}},
               "tasks": {"a": {"methods": {"adseq": {"chosen": {"temperature": {"0.5": 3}}}, "hag": {"chosen": hag}}},
                         "b": {"methods": {"adseq": {"chosen": {"temperature": {"1": 3}}}, "hag": {"chosen": hag}}}}}
    # bins nobody chose (0) stay on the axis; HAG's free value 0.7 joins it; the fallback comes last
    assert _value_axis(results, ["adseq", "hag"], "temperature") == ["0", "0.5", "0.7", "1", FALLBACK]
    assert plot_chosen_params(results, tmp_path / "chosen.png").read_bytes()[:4] == b"\x89PNG"
