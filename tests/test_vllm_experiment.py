"""An experiment with `backend: vllm` end to end, in a module of its own: it opens and closes its own engines, and
must not share its process with another module's live in-process engine (tests/test_vllm_backend.py keeps one open
for the whole module; vLLM keeps one distributed state per process, see `integrations/vllm/inproc.py`).
"""

import json

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed here; `make test-vllm` builds its own venv")

from conftest import tiny_tokenizer  # noqa: E402
from test_vllm_backend import tiny_model  # noqa: E402


def test_experiment_backend_vllm(tmp_path):
    """An experiment with `backend: vllm` (float32): its collection and evaluation sample in the engine, its greedy
    units are the hf backend's, every stage records the backend, and a resume under hf is refused by name."""
    from adaptive_decoder.experiment.config import ExperimentConfig
    from adaptive_decoder.experiment.pipeline import run_experiment

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)

    def cfg(backend, run):
        return ExperimentConfig(
            model=str(model_dir), dtype="float32", torch_threads=1, run_dir=str(tmp_path / run), backend=backend,
            tasks={"gsm8k": {"reward": {"gsm8k": {"weight": 1.0}, "fluency": {"weight": 0.1}}}},
            num_train=2, num_dev=1, num_test=2, levels=["sequence"], max_new_tokens=6,
            head={"num_layers": 1, "temperature_bins": [0.0, 1.0]}, collect={"num_samples": 2, "prompts_per_batch": 2},
            lpo={"num_train_epochs": 1, "per_device_train_batch_size": 2, "plot": False},
            methods=["greedy", "fixed", "adaptive"], temperatures=[0.0, 1.0],
            eval={"num_samples": 2, "batch_size": 2}, n_bootstrap=20, report_to="none",
            progress=False, plots=False)

    def units(run, method):
        lines = (tmp_path / run / "seed-0" / "eval" / "units.jsonl").read_text().splitlines()
        return {(u["task"], u["prompt_id"], u["split"]): [s["text"] for s in u["samples"]]
                for u in map(json.loads, lines) if u["method"] == method}

    summary = run_experiment(cfg("vllm", "v"))
    run_experiment(cfg("hf", "h"))
    assert len(summary["stages_run"]) == 3
    assert units("v", "greedy") == units("h", "greedy") and len(units("v", "greedy")) == 2
    assert len(units("v", "adseq")) == 2
    seed = tmp_path / "v" / "seed-0"
    assert json.loads((seed / "collect-sequence" / "stage_done.json").read_text())["backend"] == "vllm"
    assert json.loads((seed / "collect-sequence" / "manifest.json").read_text())["settings"]["backend"] == "vllm"
    assert json.loads((seed / "eval" / "run_config.json").read_text())["backend"] == "vllm"
    with pytest.raises(ValueError, match=r"collect-sequence finished with different settings \(backend differ\)"):
        run_experiment(cfg("hf", "v"))
