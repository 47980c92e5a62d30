"""`modeling.gguf_cache`: a GGUF is converted once, then loaded from its cached safetensors directory; the entry
key changes with the file, the dtype and the converter; an incomplete entry is never read; the location follows
ADAPTIVE_DECODER_CACHE. The unit tests store a tiny model; the slow one goes through `load_base_model` on SmolLM2."""

import json
import logging
import os

import pytest
import torch

from adaptive_decoder.modeling import gguf_cache
from conftest import tiny_llama, tiny_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def gguf_file(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return p


def test_store_then_lookup_returns_the_same_model(cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = tiny_llama(vocab_size=259), tiny_tokenizer()
    assert gguf_cache.lookup("k1") is None
    entry = gguf_cache.store("k1", model, tok, "tiny")
    assert entry == cache / "gguf" / "k1" and gguf_cache.lookup("k1") == entry
    assert json.loads((entry / gguf_cache.COMPLETE).read_text())["key"] == "k1"
    back = AutoModelForCausalLM.from_pretrained(entry)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert AutoTokenizer.from_pretrained(entry)("héllo")["input_ids"] == tok("héllo")["input_ids"]
    assert [p.name for p in (cache / "gguf").iterdir()] == ["k1"]  # no temporary directory left beside it


def test_key_changes_with_file_bytes_dtype_and_format(gguf_file, monkeypatch):
    key = gguf_cache.fingerprint(gguf_file, torch.float32)
    assert gguf_cache.fingerprint(gguf_file, "float32") == key  # a dtype or its name: the same key
    assert gguf_cache.fingerprint(gguf_file, torch.bfloat16) != key
    data = bytearray(gguf_file.read_bytes())
    data[100] ^= 1
    gguf_file.write_bytes(bytes(data))
    changed = gguf_cache.fingerprint(gguf_file, torch.float32)
    assert changed != key
    monkeypatch.setattr(gguf_cache, "FORMAT", gguf_cache.FORMAT + 1)
    assert gguf_cache.fingerprint(gguf_file, torch.float32) != changed


def test_an_incomplete_entry_is_a_miss_and_is_replaced(cache):
    torn = cache / "gguf" / "k2"
    torn.mkdir(parents=True)
    (torn / "config.json").write_text("{}")  # a half-written entry: weights, no completion record
    assert gguf_cache.lookup("k2") is None
    (torn / gguf_cache.COMPLETE).write_text(json.dumps({"key": "another"}))  # a record for another key
    assert gguf_cache.lookup("k2") is None
    (cache / "gguf" / ".k3-leftover").mkdir()  # a store's temporary directory, left by a crash
    assert gguf_cache.lookup("k3") is None
    entry = gguf_cache.store("k2", tiny_llama(vocab_size=259), tiny_tokenizer(), "tiny")
    assert gguf_cache.lookup("k2") == entry and (entry / "model.safetensors").is_file()


def test_a_failed_store_leaves_nothing_that_looks_complete(cache, monkeypatch, caplog):
    tok = tiny_tokenizer()

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tok, "save_pretrained", full_disk)  # fails after the weights are written
    with caplog.at_level(logging.WARNING, logger=gguf_cache.__name__):
        assert gguf_cache.store("k4", tiny_llama(vocab_size=259), tok, "tiny") is None
    assert "could not write the GGUF conversion cache" in caplog.text and gguf_cache.ENV in caplog.text
    assert gguf_cache.lookup("k4") is None and list((cache / "gguf").iterdir()) == []


def test_location_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "mine"))
    assert gguf_cache.cache_root() == tmp_path / "mine"
    monkeypatch.setenv(gguf_cache.ENV, "")  # set and empty: off
    assert gguf_cache.cache_root() is None
    assert gguf_cache.store("k5", tiny_llama(vocab_size=259), tiny_tokenizer(), "tiny") is None
    assert gguf_cache.lookup("k5") is None
    monkeypatch.delenv(gguf_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache.cache_root() == tmp_path / "xdg" / "adaptive-decoder"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert gguf_cache.cache_root() == tmp_path / "home" / ".cache" / "adaptive-decoder"


@pytest.mark.slow
def test_load_base_model_reads_the_cache_and_gets_the_same_model(cache, monkeypatch):
    """The first load converts the GGUF and stores it; the second parses no GGUF and returns the same weights,
    config, tokenizer and chat template."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from adaptive_decoder.modeling.models import load_base_model

    try:
        m1, t1 = load_base_model("smollm2", dtype=torch.float32)
    except ImportError as e:
        pytest.skip(str(e))
    assert len(os.listdir(cache / "gguf")) == 1

    def no_gguf(*a, **kw):
        raise AssertionError("the GGUF was parsed again")

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
    m2, t2 = load_base_model("smollm2", dtype=torch.float32)
    assert m2.config._name_or_path == m1.config._name_or_path  # the embedded model's identity, not the cache path
    assert m1.state_dict().keys() == m2.state_dict().keys()
    assert all(torch.equal(a, m2.state_dict()[k]) for k, a in m1.state_dict().items())
    assert m2.lm_head.weight.data_ptr() == m2.model.embed_tokens.weight.data_ptr()  # still tied
    c1, c2 = m1.config.to_dict(), m2.config.to_dict()
    assert {k: v for k, v in c1.items() if k != "architectures"} == {k: v for k, v in c2.items() if k != "architectures"}
    texts = ["Copy: I'm sorry for your loss.", " ünïcödé\ttabs\n🙂", "<|im_start|>user"]
    assert [t1(x)["input_ids"] for x in texts] == [t2(x)["input_ids"] for x in texts]
    chat = [{"role": "user", "content": "hello"}]
    assert t1.apply_chat_template(chat, tokenize=False) == t2.apply_chat_template(chat, tokenize=False)
    assert (t1.pad_token_id, t1.eos_token_id, t1.padding_side, len(t1)) == (t2.pad_token_id, t2.eos_token_id,
                                                                            t2.padding_side, len(t2))


def test_the_test_suite_turns_the_cache_off_even_where_it_is_exported(monkeypatch):
    """tests/conftest.py sets the cache off over an exported ADAPTIVE_DECODER_CACHE: test_models.py loads a tiny
    model in place of SmolLM2's GGUF, which would otherwise be stored under SmolLM2's key in the user's cache."""
    import runpy
    from pathlib import Path

    monkeypatch.setenv(gguf_cache.ENV, "/home/someone/.cache/shared-models")
    runpy.run_path(str(Path(__file__).with_name("conftest.py")))
    assert gguf_cache.cache_root() is None


@pytest.mark.parametrize("package", ["transformers", "gguf"])
def test_key_changes_with_the_converters_versions(gguf_file, monkeypatch, package):
    """transformers and gguf-py do the conversion (gguf-py dequantizes): another installed version of either is a
    miss. gguf-py has no __version__ attribute, so its version is the installed distribution's."""
    import importlib.metadata

    key = gguf_cache.fingerprint(gguf_file, torch.float32)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0.1" if name == package else real(name))
    assert gguf_cache.fingerprint(gguf_file, torch.float32) != key


def test_a_full_disk_while_the_weights_are_written_is_a_warning(cache, caplog):
    """safetensors reports a failed write as its own SafetensorError, not an OSError: the store still warns and
    returns None (the run goes on with the model it loaded), and leaves nothing behind. The full disk is a file-size
    limit of 1 MiB under the 3 MB of weights (the config files before them fit)."""
    resource = pytest.importorskip("resource")
    import signal

    model, tok = tiny_llama(vocab_size=259, hidden_size=256), tiny_tokenizer()
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limits[1]))
        with caplog.at_level(logging.WARNING, logger=gguf_cache.__name__):
            entry = gguf_cache.store("k6", model, tok, "tiny")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert entry is None and "could not write the GGUF conversion cache" in caplog.text and "File too large" in caplog.text
    assert gguf_cache.lookup("k6") is None and list((cache / "gguf").iterdir()) == []


def test_a_load_with_other_from_pretrained_options_is_neither_stored_nor_read(cache, monkeypatch, tiny_model_dir):
    """The key holds the file, the dtype and the converter, not load_base_model's **kwargs (from_pretrained's
    options, config overrides among them): a model loaded with one is not stored under the plain key, where every
    later plain load would get it, and a plain entry is not served to such a load. from_pretrained is a stand-in
    that returns the tiny model and records where it read from."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adaptive_decoder.modeling.models import load_base_model

    sources = []
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def model(source, **kw):
        sources.append(kw.get("gguf_file") or source)
        return real_model(str(tiny_model_dir), dtype=kw.get("dtype"))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda source, **kw: real_tok(str(tiny_model_dir)))
    try:
        load_base_model("smollm2", dtype=torch.float32, num_hidden_layers=1)
    except ImportError as e:  # the embedded SmolLM2 package is not installed
        pytest.skip(str(e))
    assert not (cache / "gguf").exists()
    load_base_model("smollm2", dtype=torch.float32)  # a plain load: stored
    (entry,) = (cache / "gguf").iterdir()
    load_base_model("smollm2", dtype=torch.float32, num_hidden_layers=1)
    load_base_model("smollm2", dtype=torch.float32)
    assert [s.endswith(".gguf") for s in sources] == [True, True, True, False] and sources[3] == str(entry)


def test_a_store_that_loses_the_race_keeps_the_winners_entry(cache, caplog):
    """Two processes that both missed convert and store the same key: the second's rename meets the first's
    complete entry (ENOTEMPTY on Linux), which stays as it is; the second returns it, warns nothing and leaves no
    temporary directory."""
    first = gguf_cache.store("k7", tiny_llama(vocab_size=259, seed=0), tiny_tokenizer(), "first")
    with caplog.at_level(logging.WARNING, logger=gguf_cache.__name__):
        second = gguf_cache.store("k7", tiny_llama(vocab_size=259, seed=1), tiny_tokenizer(), "second")
    assert second == first and caplog.text == ""
    assert json.loads((first / gguf_cache.COMPLETE).read_text())["source"] == "first"
    assert [p.name for p in (cache / "gguf").iterdir()] == ["k7"]


def test_a_killed_stores_temporary_directory_is_removed_by_the_next_store_once_stale(cache, caplog):
    """A store killed mid-write leaves its temporary directory (a dequantized model's worth of bytes); the next store
    removes it once no file in it has been written for STALE_S, and leaves a live store's (recent writes) and
    every complete entry alone."""
    import time

    gguf = cache / "gguf"
    done = gguf_cache.store("k6", tiny_llama(vocab_size=259), tiny_tokenizer(), "tiny")
    old = time.time() - gguf_cache.STALE_S - 60
    killed, live = gguf / ".k7-killed", gguf / ".k8-live"
    for d in (killed, live):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "model.safetensors").write_bytes(b"\0" * 1024)
    for p in (killed / "sub" / "model.safetensors", killed / "sub", killed):
        os.utime(p, (old, old))
    os.utime(live, (old, old))  # an old directory whose weights file is still being written
    os.utime(done, (old, old))
    with caplog.at_level(logging.INFO, logger=gguf_cache.__name__):
        entry = gguf_cache.store("k9", tiny_llama(vocab_size=259), tiny_tokenizer(), "tiny")
    assert sorted(p.name for p in gguf.iterdir()) == [".k8-live", "k6", "k9"]
    assert gguf_cache.lookup("k6") == done and gguf_cache.lookup("k9") == entry
    assert "did not finish" in caplog.text and ".k7-killed" in caplog.text
