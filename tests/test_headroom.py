"""eval/headroom.py on a tiny random Llama: fixed configurations only, per-task reward vs temperature, and the
dev-picked oracle minus the best single temperature (normalized) with its paired CI."""

import importlib.util
import json
from pathlib import Path

from adaptive_decoder.evaluation.headroom import headroom_markdown
from test_eval_suite import save_tiny

REPO = Path(__file__).resolve().parents[1]


def test_headroom_command_on_tiny_model(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    spec = importlib.util.spec_from_file_location("headroom_cli", REPO / "eval" / "headroom.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    rep = mod.main(["--config", str(REPO / "configs" / "eval" / "headroom_control.yaml"), "--model", str(model),
                    "--output_dir", str(out), "--num_prompts", "3", "--num_dev_prompts", "2", "--num_samples", "2",
                    "--max_new_tokens", "4", "--n_bootstrap", "100", "--progress", "false",
                    "--methods", "greedy", "random"])  # methods are replaced by greedy + fixed + oracle
    printed = capsys.readouterr().out
    assert "HEADROOM: oracle - best single fixed" in printed
    assert set(rep["tasks"]) == {"control_qa", "control_numbers"}
    for t in rep["tasks"].values():
        assert list(t["temperatures"]) == ["T=0.0,k=10", "T=0.4,k=10", "T=0.8,k=10", "T=1.2,k=10"]
        assert t["oracle_choice"] in t["temperatures"]
    g = rep["gain"]
    assert g["lo"] <= g["mean"] <= g["hi"]
    # the oracle picks per task among the grid on dev, so on dev it can never lose to the best single setting;
    # the reported gain is on test, the normalized difference of the suite's scale-free report
    res = json.loads((out / "results.json").read_text())
    assert g == res["scale_free"]["differences"]["oracle"][rep["best_single"]]["overall"]
    assert set(res["methods"]) == {"greedy", "T=0.0,k=10", "T=0.4,k=10", "T=0.8,k=10", "T=1.2,k=10", "oracle"}
    assert (out / "headroom.md").read_text() == headroom_markdown(json.loads((out / "headroom.json").read_text()))
