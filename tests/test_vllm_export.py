"""The servable directory for vLLM (`adaptive_decoder.integrations.vllm.export`): layout and refusals; the same
directory in plain transformers (`hf_auto`: with its head, or refused without the package); and
`choices.served_choices`, which recovers a served request's choices with one HF pass.

Needs no vLLM: runs in the main suite and in `make test-vllm`.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead
from adaptive_decoder.integrations.vllm.export import (CONFIG_KEY, HEAD_SUBDIR, export_servable, load_exported,
                                                       load_served_head, main)
from conftest import tiny_llama, tiny_tokenizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "model"
    model = tiny_llama(vocab_size=259, hidden_size=32)
    model.generation_config.temperature = 0.7  # a sampling default vLLM would apply to every request
    model.generation_config.top_p = 0.9
    model.generation_config.do_sample = True
    model.save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def save_head(path, hidden=32, level="token", seed=0):
    torch.manual_seed(seed)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=hidden, num_layers=2, intermediate_size=8, level=level))
    head.save_pretrained(path)
    return head


def test_export_layout_and_round_trip(base_dir, tmp_path):
    head = save_head(tmp_path / "head", level="sequence")
    out = export_servable(base_dir, tmp_path / "head", tmp_path / "served")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["AdaptiveDecoderLlamaForCausalLM"]
    assert cfg[CONFIG_KEY]["level"] == "sequence" and cfg[CONFIG_KEY]["head_dir"] == HEAD_SUBDIR
    assert cfg[CONFIG_KEY]["head_config"]["temperature_bins"] == head.config.temperature_bins
    assert (out / "model.safetensors").is_symlink()
    assert (out / "model.safetensors").resolve() == (base_dir / "model.safetensors").resolve()
    assert (out / "tokenizer.json").is_file() and not (out / "tokenizer.json").is_symlink()
    gen = json.loads((out / "generation_config.json").read_text())
    assert not {"temperature", "top_p", "do_sample"} & set(gen) and gen["eos_token_id"] == 1
    served = load_served_head(out)
    assert served.config == head.config
    for k, v in head.state_dict().items():
        assert torch.equal(served.state_dict()[k], v)


def test_export_copy_and_cli(base_dir, tmp_path, capsys):
    save_head(tmp_path / "head")
    main(["--base", str(base_dir), "--head", str(tmp_path / "head"), "--out", str(tmp_path / "served"), "--copy"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "served")
    assert not (tmp_path / "served" / "model.safetensors").is_symlink()


def test_bad_head_dir_is_refused_by_name(base_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="directory not found: .*nohead"):
        export_servable(base_dir, tmp_path / "nohead", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        export_servable(base_dir, tmp_path / "empty", tmp_path / "out")
    save_head(tmp_path / "wide", hidden=64)
    with pytest.raises(ValueError, match="hidden size 64 but the base model has 32"):
        export_servable(base_dir, tmp_path / "wide", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written left behind


def test_non_empty_out_and_missing_base_are_refused(base_dir, tmp_path):
    save_head(tmp_path / "head")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export_servable(base_dir, tmp_path / "head", tmp_path / "busy")
    with pytest.raises(FileNotFoundError, match="base model directory not found"):
        export_servable(tmp_path / "nobase", tmp_path / "head", tmp_path / "out")


def test_served_head_replaced_or_corrupted_after_export_fails_at_load(base_dir, tmp_path):
    save_head(tmp_path / "head")
    out = export_servable(base_dir, tmp_path / "head", tmp_path / "served")
    save_head(tmp_path / "other", seed=1)  # same config, other weights
    for name in ("config.json", "model.safetensors"):
        (out / HEAD_SUBDIR / name).write_bytes((tmp_path / "other" / name).read_bytes())
    with pytest.raises(ValueError, match="weights digest differs"):
        load_served_head(out)
    (out / HEAD_SUBDIR / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="weights do not match the digest"):
        load_served_head(out)
    for p in (out / HEAD_SUBDIR).iterdir():
        p.unlink()
    (out / HEAD_SUBDIR).rmdir()
    with pytest.raises(FileNotFoundError, match="head directory not found"):
        load_served_head(out)
    with pytest.raises(ValueError, match="no valid 'adaptive_decoder' entry"):
        load_served_head(base_dir)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_served_choices_are_the_choices_generate_made(level):
    from adaptive_decoder import AdaptiveDecodingModel
    from adaptive_decoder.integrations.vllm.choices import served_choices

    model = tiny_llama(vocab_size=128, hidden_size=32)
    torch.manual_seed(0)
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, num_layers=1, level=level))
    with torch.no_grad():
        for lin in head.outputs.values():
            lin.weight.mul_(40)  # choices that vary with the hidden state
    prompt = [5, 9, 17, 33, 8]
    torch.manual_seed(1)
    out = AdaptiveDecodingModel(model, None, head).generate(torch.tensor([prompt]), max_new_tokens=12, eos_token_id=None)
    got = served_choices(model, head, prompt, out.completion_ids[0])
    steps = len(out.completion_ids[0])
    for f in head.factors:
        expected = out.choices[f][0] if level == "sequence" else out.choices[f][0, :steps]
        assert torch.equal(got["choices"][f], expected)
    if level == "token":
        assert any(len(set(out.choices[f][0].tolist())) > 1 for f in head.factors)  # they did vary


def test_transformers_loads_the_export_with_its_head(base_dir, tmp_path, caplog):
    """With adaptive_decoder imported, AutoModelForCausalLM gives the base model's class plus the head: forward is
    the base's, generate is `load_exported`'s for the same seed, the caller's sampling values warn once."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    head = save_head(tmp_path / "head", seed=3)
    with torch.no_grad():  # a head whose choices vary: T in {0.2 .. 1.2}, so generate depends on it
        head.outputs["temperature"].weight.mul_(50)
    head.save_pretrained(tmp_path / "head")
    out = export_servable(base_dir, tmp_path / "head", tmp_path / "served")
    assert json.loads((out / "config.json").read_text())["model_type"] == "adaptive_decoder_llama"
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert isinstance(model, LlamaForCausalLM) and type(model).__name__ == "AdaptiveDecoderLlamaForCausalLM"
    assert set(model.state_dict()) == set(base.state_dict())  # the head is not a weight of the base model
    for k, v in head.state_dict().items():
        assert torch.equal(model.adaptive_decoder_head.state_dict()[k], v)
    ids = torch.tensor([[5, 9, 17, 33], [8, 8, 40, 2]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits)
    torch.manual_seed(7)
    with caplog.at_level("WARNING"):
        ours = model.generate(ids, max_new_tokens=8, do_sample=False, temperature=0.0)
        model.generate(ids, max_new_tokens=2, do_sample=False, temperature=0.0)
    adm = load_exported(out)
    torch.manual_seed(7)
    assert torch.equal(ours, adm.generate(ids, max_new_tokens=8).sequences)
    torch.manual_seed(7)
    assert not torch.equal(ours, base.generate(ids, max_new_tokens=8, do_sample=False))
    warned = [r.message for r in caplog.records if "are not applied" in r.message]
    assert warned == ["AdaptiveDecoderLlamaForCausalLM: sampling values {'do_sample': False, 'temperature': 0.0} are "
                      "not applied: the adaptive-decoder head chooses temperature / top-p / top-k itself"]
    with pytest.raises(ValueError, match=r"returns the sequences: pass generate options as keywords, without "):
        model.generate(ids, max_new_tokens=2, return_dict_in_generate=True)
    with pytest.raises(ValueError, match=r"^AdaptiveDecoderLlamaForCausalLM has no head: load it with from_pretrained"):
        AutoModelForCausalLM.from_config(model.config).generate(ids, max_new_tokens=2)
    model.save_pretrained(tmp_path / "copy")  # the copy carries its head too
    copy = AutoModelForCausalLM.from_pretrained(tmp_path / "copy")
    assert torch.equal(copy.adaptive_decoder_head.outputs["temperature"].weight, head.outputs["temperature"].weight)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma3"])
def test_every_served_architecture_has_its_model_type(tmp_path, arch):
    import transformers as tf

    config_cls, model_cls = {"qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM), "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM),
                             "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM)}[arch]
    cfg = config_cls(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=16)
    model_cls(cfg).save_pretrained(tmp_path / "base")
    save_head(tmp_path / "head")
    out = export_servable(tmp_path / "base", tmp_path / "head", tmp_path / "served")
    loaded = tf.AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(loaded, model_cls) and type(loaded).__name__ == f"AdaptiveDecoder{model_cls.__name__}"
    assert loaded.config.model_type == f"adaptive_decoder_{cfg.model_type}" and loaded.adaptive_decoder_head is not None


def test_without_the_package_transformers_refuses_the_export(base_dir, tmp_path):
    """Plain transformers (adaptive_decoder never imported) must not load the base and drop the head."""
    save_head(tmp_path / "head")
    out = export_servable(base_dir, tmp_path / "head", tmp_path / "served")
    code = ("import sys\nfrom transformers import AutoModelForCausalLM\n"
            f"try:\n    AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
            "except ValueError as e:\n    print(str(e).splitlines()[0])\n"
            "print('adaptive_decoder' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.splitlines() == ["The checkpoint you are trying to load has model type `adaptive_decoder_llama` "
                                       "but Transformers does not recognize this architecture. This could be because "
                                       "of an issue with the checkpoint, or because your version of Transformers is "
                                       "out of date.", "False"]
    # `import adaptive_decoder` alone is enough to register the type
    code = ("import adaptive_decoder\nfrom transformers import AutoConfig\n"
            f"print(type(AutoConfig.from_pretrained({str(out)!r})).__name__)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and res.stdout.split() == ["AdaptiveDecoderLlamaConfig"], res.stderr[-2000:]


def test_an_export_of_an_earlier_version_loads_with_a_re_export_hint(base_dir, tmp_path, caplog):
    save_head(tmp_path / "head")
    out = export_servable(base_dir, tmp_path / "head", tmp_path / "served")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))  # as earlier exports wrote it
    with caplog.at_level("WARNING"):
        adm = load_exported(out)
    assert type(adm.model).__name__ == "LlamaForCausalLM" and adm.head is not None
    (msg,) = [r.message for r in caplog.records if "re-export" in r.message]
    assert msg == (f"{out} has model_type 'llama': transformers alone loads it without its head; re-export it with "
                   f"`adaptive-decoder export --base BASE --head {out / HEAD_SUBDIR} --out NEW_DIR`")
