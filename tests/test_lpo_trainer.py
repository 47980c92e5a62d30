"""LPOTrainer / train_lpo recipe in one process: config errors, outputs, learning, resume, collections, cache path.

Multi-process launches (torchrun / accelerate launch, DDP and DeepSpeed) are in test_multiprocess.py.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from adaptive_decoder import AdaptiveDecoderHead
from adaptive_decoder.lpo.data import SyntheticPairs, build_head_and_dataset
from adaptive_decoder.lpo.report import plot_training_curves
from adaptive_decoder.lpo.trainer import LPOConfig, LPOTrainer, checkpoints

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "training"))
import train_lpo  # noqa: E402

torch.set_num_threads(1)

TINY = yaml.safe_load((ROOT / "configs" / "lpo" / "train_tiny.yaml").read_text())


def config(tmp_path, **kw) -> LPOConfig:
    opts = {**TINY, "output_dir": str(tmp_path / "run"), **kw}
    return LPOConfig(**opts)


def train(cfg, callbacks=None):
    head, data = build_head_and_dataset(cfg)
    trainer = LPOTrainer(cfg, head, data, callbacks=callbacks)
    return trainer, trainer.train()


def head_state(path):
    return AdaptiveDecoderHead.from_pretrained(path).state_dict()


# --------------------------------------------------------------------------------------------------- config
def test_recipe_rejects_unknown_yaml_key_and_cli_flag(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "x"), "learning_rte": 0.1}))
    with pytest.raises(ValueError, match="learning_rte"):
        train_lpo.main(["--config", str(bad)])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "x")}))
    with pytest.raises(ValueError, match="betta"):
        train_lpo.main(["--config", str(good), "--betta", "0.3"])


@pytest.mark.parametrize("kw, match", [
    ({"loss_type": "dpo"}, "loss_type"),
    ({"reference": "uniform"}, "reference"),
    ({"token_aggregation": "max"}, "token_aggregation"),
    ({"beta": 0.0}, "beta"),
    ({"collection_dir": "/somewhere"}, "exactly one data source"),
    ({"synthetic_pairs": 0}, "exactly one data source"),
    ({"head": {"num_layer": 2}}, "num_layer"),
    ({"report_to": "tensorboard"}, "report_to"),
    ({"output_dir": None}, "output_dir"),
])
def test_bad_config_values_raise_clear_errors(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kw)


def test_cli_overrides_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp_path / "r"), "num_train_epochs": 1}))
    summary = train_lpo.main(["--config", str(cfg_file), "--beta", "0.25", "--max_steps", "3"])
    assert summary["step"] == 3
    state = torch.load(checkpoints(tmp_path / "r")[-1] / "training_args.bin", weights_only=False)
    assert state.beta == 0.25 and state.synthetic_pairs == TINY["synthetic_pairs"]


# --------------------------------------------------------------------------------------------------- a run
@pytest.mark.parametrize("level", ["sequence", "token"])
def test_training_run_writes_outputs_and_learns_the_task_preferences(tmp_path, level):
    cfg = config(tmp_path, head={**TINY["head"], "level": level}, num_train_epochs=4)
    trainer, summary = train(cfg)
    out = Path(cfg.output_dir)
    steps = 4 * 64 // 8
    assert summary["step"] == steps and summary["ranks_agree"] and summary["num_processes"] == 1
    head = AdaptiveDecoderHead.from_pretrained(out / "head")
    assert head.config.level == level and head.config.selection == "argmax"
    for k, v in head.state_dict().items():
        assert torch.equal(v, trainer.head.state_dict()[k].cpu()), k
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in rows if "final" not in r]
    assert [r["step"] for r in logs] == list(range(2, steps + 1, 2))
    for key in ("loss", "rewards/margins", "rewards/accuracies", "entropy", "learning_rate",
                "bins/temperature/0.0", "bins/top_p/0.9"):
        assert key in logs[0], key
    assert sum(logs[-1][f"bins/temperature/{v}"] for v in (0.0, 0.5, 1.0)) == pytest.approx(1.0)
    assert logs[-1]["loss"] < logs[0]["loss"] and logs[-1]["rewards/accuracies"] > 0.9
    assert rows[-1]["final"] is True
    assert (out / "training_curves.png").stat().st_size > 1000 and (out / "bin_histograms.png").exists()
    assert json.loads((out / "config.json").read_text())["beta"] == cfg.beta  # read by sweep reports
    # the synthetic "low" task prefers the lowest bins, "high" the highest: the trained head must have learned it
    hist = json.loads((out / "bin_histograms.json").read_text())["tasks"]
    assert hist["low"]["temperature"][0] == sum(hist["low"]["temperature"])
    assert hist["high"]["temperature"][-1] == sum(hist["high"]["temperature"])
    assert hist["high"]["top_p"][-1] == sum(hist["high"]["top_p"])
    full = json.loads((out / "bin_histograms.json").read_text())
    assert full["expected"]["low"]["temperature"] < 0.2 < 0.8 < full["expected"]["high"]["temperature"]
    assert sum(full["mean_probs"]["all"]["top_p"]) == pytest.approx(1.0, abs=1e-3)
    assert len(checkpoints(out)) == cfg.save_total_limit  # rotation
    assert (out / "reference_head" / "model.safetensors").exists()


def test_reference_none_and_nll_train_and_differ(tmp_path):
    _, s1 = train(config(tmp_path / "a", reference="none", max_steps=4))
    _, s2 = train(config(tmp_path / "b", loss_type="nll", max_steps=4))
    assert s1["step"] == s2["step"] == 4
    assert not (tmp_path / "a" / "run" / "reference_head").exists()
    a, b = head_state(tmp_path / "a" / "run" / "head"), head_state(tmp_path / "b" / "run" / "head")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_matches_a_larger_batch(tmp_path):
    # 2 x 8 accumulated == 16 in one batch: same data order, same mean loss, same updates (float tolerance)
    _, _ = train(config(tmp_path / "acc", per_device_train_batch_size=8, gradient_accumulation_steps=2, max_grad_norm=0))
    _, _ = train(config(tmp_path / "big", per_device_train_batch_size=16, max_grad_norm=0))
    a, b = head_state(tmp_path / "acc" / "run" / "head"), head_state(tmp_path / "big" / "run" / "head")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


# --------------------------------------------------------------------------------------------------- resume
class Crash(RuntimeError):
    pass


def test_crash_and_resume_reaches_the_same_final_head_as_an_uninterrupted_run(tmp_path):
    # dropout > 0 so that the restored RNG state matters too; cosine schedule so that the restored scheduler matters
    kw = dict(head={**TINY["head"], "dropout": 0.2}, lr_scheduler_type="cosine", save_steps=3, num_train_epochs=3)
    _, full = train(config(tmp_path / "full", **kw))

    def crash(trainer, step, logs):
        if step == 7:
            raise Crash(f"simulated crash at step {step}")

    cfg = config(tmp_path / "crash", **kw)
    with pytest.raises(Crash):
        train(cfg, callbacks=[crash])
    ckpts = sorted(p.name for p in Path(cfg.output_dir).iterdir() if "checkpoint" in p.name or "staging" in p.name)
    assert ckpts == ["checkpoint-3", "checkpoint-6"]  # no half-written temp dir either
    # a fresh start into a run directory with checkpoints is refused
    with pytest.raises(ValueError, match="--resume"):
        train(cfg)
    _, resumed = train(replace(cfg, resume=True))
    assert resumed["step"] == full["step"] == 24
    assert resumed["pairs_seen_this_session"] == (24 - 6) * 8
    a, b = head_state(tmp_path / "full" / "run" / "head"), head_state(Path(cfg.output_dir) / "head")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "final" not in r]
    assert steps == sorted(set(steps)) == list(range(2, 25, 2))  # nothing logged twice after the resume
    full_rows = [json.loads(x) for x in (tmp_path / "full" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-2]["loss"] == pytest.approx(full_rows[-2]["loss"], abs=1e-6)


def test_resume_under_another_batch_size_is_refused(tmp_path):
    # the checkpoint's step places the resumed batches only under the launch setup that wrote it
    cfg = config(tmp_path, max_steps=4, save_steps=2)
    train(cfg)
    with pytest.raises(ValueError, match="same launch setup"):
        train(replace(cfg, resume=True, max_steps=8, per_device_train_batch_size=16))


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    _, s = train(config(tmp_path, resume=True, max_steps=2))
    assert s["step"] == 2


def test_crash_before_the_first_checkpoint_logs_each_step_once_after_resume(tmp_path):
    """A kill between a logging step and the first checkpoint (a Slurm time-limit signal can come at any moment):
    the resumed run starts fresh and must not keep the killed attempt's metrics rows beside its own."""
    def crash(trainer, step, logs):
        if step == 3:
            raise Crash("killed after the first logged steps, before the first checkpoint")

    cfg = config(tmp_path, save_steps=4, logging_steps=1, max_steps=6, resume=True)
    with pytest.raises(Crash):
        train(cfg, callbacks=[crash])
    assert not checkpoints(cfg.output_dir)
    train(cfg)
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "final" not in r] == [1, 2, 3, 4, 5, 6]


def test_resume_over_a_half_written_reference_head_rewrites_it(tmp_path):
    # a run killed (or a rank that looked) while the reference head was being saved: weights but no config.json
    ref = tmp_path / "run" / "reference_head"
    ref.mkdir(parents=True)
    (ref / "model.safetensors").write_bytes(b"partial")
    trainer, s = train(config(tmp_path, resume=True, max_steps=2))
    assert s["step"] == 2
    saved = AdaptiveDecoderHead.from_pretrained(ref).state_dict()
    assert all(torch.equal(saved[k], v.cpu()) for k, v in trainer.ref_head.state_dict().items())
    assert not (tmp_path / "run" / "reference_head.tmp").exists()


# --------------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    from test_collection import make_adm, prompts, run

    out = tmp_path_factory.mktemp("collection")
    adm = make_adm("sequence")
    run(adm, out, prompts(8), cache_budget_mb=0.0)  # nothing cached: forces the recompute path
    cached = tmp_path_factory.mktemp("collection_cached")
    run(adm, cached, prompts(8))
    return adm, out, cached


def test_trains_from_a_cached_collection_without_loading_the_lm(tmp_path, collection, monkeypatch):
    adm, _, cached = collection
    import adaptive_decoder.modeling.models as models

    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: pytest.fail("the LM must not be loaded"))
    cfg = config(tmp_path, synthetic_pairs=0, collection_dir=str(cached), head={"num_layers": 2, "intermediate_size": 8},
                 max_steps=3, per_device_train_batch_size=4)
    head, data = build_head_and_dataset(cfg)
    assert head.config.temperature_bins == adm.head.config.temperature_bins and len(data) > 0
    assert data.stats["samples_recomputed"] == 0
    summary = LPOTrainer(cfg, head, data).train()
    assert summary["step"] == 3 and (Path(cfg.output_dir) / "head" / "model.safetensors").exists()
    assert set(summary["bin_histograms"]["tasks"]) == {"arith", "all"}


def test_uncached_collection_needs_base_model_and_names_it(tmp_path, collection):
    from adaptive_decoder.lpo.pairs import ModelNeededError

    _, uncached, _ = collection
    cfg = config(tmp_path, synthetic_pairs=0, collection_dir=str(uncached), head={})
    with pytest.raises(ModelNeededError, match="base_model"):
        build_head_and_dataset(cfg)


def test_base_model_is_loaded_only_to_recompute_uncached_samples(tmp_path, collection, monkeypatch):
    adm, uncached, _ = collection
    import adaptive_decoder.modeling.models as models

    loaded = []
    monkeypatch.setattr(models, "load_base_model", lambda name, dtype: loaded.append((name, dtype)) or (adm.model, None))
    cfg = config(tmp_path, synthetic_pairs=0, collection_dir=str(uncached), head={}, base_model="the-collection-lm")
    _, data = build_head_and_dataset(cfg)
    assert loaded == [("the-collection-lm", "float32")]
    assert data.stats["samples_recomputed"] == data.stats["samples_in_pairs"] > 0
    # any other problem with the collection is reported as it is, without loading the LM
    with pytest.raises(ValueError, match=r"tasks \['nope'\] have no samples"):
        build_head_and_dataset(replace(cfg, tasks=["nope"]))
    assert len(loaded) == 1


def test_the_lm_reloads_with_the_loading_options_the_collection_recorded(tmp_path, collection, monkeypatch):
    """A collection loaded with e.g. another attention kernel or a revision records them in its manifest; LPO
    recomputes head inputs with the LM loaded the same way (and the identity check then passes)."""
    import copy
    import json
    import shutil

    import adaptive_decoder.modeling.models as models
    from adaptive_decoder.modeling.loading import LOAD_IDENTITY_ATTR

    adm, uncached, _ = collection
    src = tmp_path / "collection"
    shutil.copytree(uncached, src)
    manifest = json.loads((src / "manifest.json").read_text())
    load = {"attn_implementation": "eager", "revision": "0123abc"}
    manifest["base_model"]["load"] = load
    (src / "manifest.json").write_text(json.dumps(manifest))
    calls = []

    def fake_load(name, dtype, **options):
        calls.append(options)
        model = copy.deepcopy(adm.model)
        setattr(model, LOAD_IDENTITY_ATTR, options)
        return model, None

    monkeypatch.setattr(models, "load_base_model", fake_load)
    cfg = config(tmp_path, synthetic_pairs=0, collection_dir=str(src), head={}, base_model="org/the-collection-lm")
    _, data = build_head_and_dataset(cfg)
    assert calls == [load] and data.stats["samples_recomputed"] > 0


def test_head_path_must_fit_the_collection(tmp_path, collection):
    adm, _, cached = collection
    other = AdaptiveDecoderHead(replace(adm.head.config, temperature_bins=[0.0, 1.0]))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="temperature_bins"):
        build_head_and_dataset(config(tmp_path, synthetic_pairs=0, collection_dir=str(cached), head={},
                                      head_path=str(tmp_path / "other")))
    # a head config that contradicts the collection's bins is refused too (by PairDataset)
    with pytest.raises(ValueError, match="temperature_bins"):
        build_head_and_dataset(config(tmp_path, synthetic_pairs=0, collection_dir=str(cached)))
    adm.head.save_pretrained(tmp_path / "same")
    head, _ = build_head_and_dataset(config(tmp_path, synthetic_pairs=0, collection_dir=str(cached), head={},
                                            head_path=str(tmp_path / "same")))
    for k, v in adm.head.state_dict().items():
        assert torch.equal(head.state_dict()[k], v)


def test_cache_and_recompute_paths_train_to_the_same_head(tmp_path, collection):
    from adaptive_decoder.lpo.pairs import PairDataset

    adm, _, cached = collection
    heads = []
    for name, kw in (("cache", {}), ("recompute", {"use_cache": False, "model": adm.model})):
        cfg = config(tmp_path / name, synthetic_pairs=0, collection_dir=str(cached), max_steps=4,
                     per_device_train_batch_size=4, head={"num_layers": 2, "intermediate_size": 8})
        head, _ = build_head_and_dataset(cfg)
        data = PairDataset(cached, head_config=head.config, **kw)
        assert data.stats["samples_recomputed"] == (0 if name == "cache" else data.stats["samples_in_pairs"])
        LPOTrainer(cfg, head, data).train()
        heads.append(head_state(Path(cfg.output_dir) / "head"))
    for k in heads[0]:
        assert torch.allclose(heads[0][k], heads[1][k], atol=1e-4), k


# --------------------------------------------------------------------------------------------------- wandb
def test_wandb_offline_run_is_written(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = config(tmp_path, report_to="wandb", max_steps=2, logging_steps=1)
    train(cfg)
    runs = list((Path(cfg.output_dir) / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


def test_plot_training_curves_reads_metrics_jsonl(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps({"step": s, "loss": 1 / s, "rewards/accuracies": 0.5, "rewards/margins": s,
                                       "entropy": 1.0}) for s in range(1, 5)) + "\n" + json.dumps({"final": True}) + "\n")
    assert plot_training_curves(p, tmp_path / "c.png").stat().st_size > 1000
    assert plot_training_curves([], tmp_path / "none.png") is None


def test_synthetic_pairs_follow_the_contract():
    from adaptive_decoder import AdaptiveDecoderConfig

    cfg = AdaptiveDecoderConfig(hidden_size=8, level="token", factors=["temperature"])
    ex = SyntheticPairs(4, cfg)[1]
    assert ex["task"] == "high" and ex["chosen_inputs"].dtype == torch.float16
    t = ex["chosen_inputs"].shape[0]
    assert ex["chosen_choices"]["temperature"].tolist() == [5] * t
    assert (ex["rejected_choices"]["temperature"] != 5).all()


def test_default_initial_head_is_the_collecting_head(tmp_path, collection, caplog):
    # same head config + same init seed as the collection: LPO's reference is then the sampling policy
    adm, _, cached = collection
    import logging

    with caplog.at_level(logging.INFO, logger="adaptive_decoder.lpo.data"):
        head, _ = build_head_and_dataset(config(tmp_path, synthetic_pairs=0, collection_dir=str(cached), head={}))
    for k, v in adm.head.state_dict().items():
        assert torch.equal(head.state_dict()[k], v), k
    assert "is the collecting head" in caplog.text


def test_empty_pair_set_is_refused(tmp_path):
    cfg = config(tmp_path)
    head, _ = build_head_and_dataset(cfg)
    with pytest.raises(ValueError, match="no preference pairs"):
        LPOTrainer(cfg, head, [])


def test_head_options_as_text_from_the_command_line(tmp_path):
    """`wandb agent` passes `--head={'level': 'token', ...}`: text parsed as YAML/JSON; anything but a mapping fails."""
    kw = dict(output_dir=str(tmp_path), synthetic_pairs=4)
    assert LPOConfig(head="{'level': 'token', 'temperature_bins': [0.0, 0.5]}", **kw).head == \
        {"level": "token", "temperature_bins": [0.0, 0.5]}
    assert LPOConfig(head={"level": "sequence"}, **kw).head == {"level": "sequence"}
    assert LPOConfig(head=None, **kw).head == {}
    for bad in ("[1, 2]", "level", "", "{level: [unclosed"):
        with pytest.raises(ValueError, match="head must be a mapping"):
            LPOConfig(head=bad, **kw)


@pytest.mark.parametrize("loss_type", ["joint", "latent"])
def test_joint_and_latent_losses_train_from_a_cached_collection_without_the_lm(tmp_path, collection, monkeypatch, loss_type):
    _, _, cached = collection
    import adaptive_decoder.modeling.models as models

    monkeypatch.setattr(models, "load_base_model", lambda *a, **k: pytest.fail("the token log-probs are stored"))
    cfg = config(tmp_path, synthetic_pairs=0, collection_dir=str(cached), head={"num_layers": 2, "intermediate_size": 8},
                 max_steps=2, per_device_train_batch_size=4, loss_type=loss_type)
    head, data = build_head_and_dataset(cfg)
    assert data.response_logps and "chosen_token_logps" in data[0]
    trainer = LPOTrainer(cfg, head, data)
    assert trainer.ref_head is not None
    assert trainer.train()["step"] == 2


def test_response_losses_refuse_synthetic_pairs(tmp_path):
    with pytest.raises(ValueError, match="synthetic pairs have none"):
        config(tmp_path, loss_type="latent")
