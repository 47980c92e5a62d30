"""Shared fixtures: tiny random causal LMs (fast, offline) and the optional ../shared data directory."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the GGUF conversion cache off (modeling.gguf_cache), whatever the environment says: some tests load a tiny model in
# place of a GGUF one, which must never be stored under the real file's key (with an exported cache directory, one
# such test made every later load_base_model("smollm2") in that directory return the tiny model), and none may write
# to the user's cache; the cache's own tests point it at a temporary directory
os.environ["ADAPTIVE_DECODER_CACHE"] = ""

SHARED = Path(os.environ.get("ADAPTIVE_DECODER_SHARED", Path(__file__).resolve().parents[2] / "shared"))
# the tasks' public datasets are read from the project's local copies (tasks.io.PUBLIC_DATASETS), never downloaded
if (SHARED / "data").is_dir():
    os.environ.setdefault("ADAPTIVE_DECODER_DATA", str(SHARED / "data"))


def shared_data(rel: str) -> Path:
    """The local copy `rel` (e.g. "gsm8k/test.jsonl") where the library reads it, the first directory of
    $ADAPTIVE_DECODER_DATA that has it (../shared/data unless the variable names another), or skip the test with
    the reason when there is none. Looking where the library looks keeps a test that checks for its file and then
    loads a task by name from failing when the variable points elsewhere."""
    from adaptive_decoder.tasks.io import DATA_ENV, local_copy

    p = local_copy(rel)
    if p is None:
        where = os.environ.get(DATA_ENV) or f"unset: the project's {SHARED / 'data'} is not beside this checkout"
        pytest.skip(f"needs the local data copy {rel} under ${DATA_ENV} ({where})")
    return p


def needs_data(fn):
    """fn(), or skip the test when fn needs a public dataset that has no local copy here (tasks.io: no
    $ADAPTIVE_DECODER_DATA file and no datasets cache, offline), with the library's one-line reason."""
    from adaptive_decoder.tasks.io import DatasetUnavailableError

    try:
        return fn()
    except DatasetUnavailableError as e:
        pytest.skip(f"no local copy of a task's public dataset ({e})")


def tiny_llama(vocab_size=128, hidden_size=32, seed=0, eos_token_id=1, pad_token_id=0):
    """`adaptive_decoder.modeling.tiny_model.tiny_llama` with the tests' fixed intermediate size (64 at every hidden size)."""
    from adaptive_decoder.modeling.tiny_model import tiny_llama as build

    return build(vocab_size, hidden_size, seed, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                 intermediate_size=64)


def tiny_tokenizer():
    """Byte-level tokenizer with no merges (259 ids: <pad>=0, </s>=1, <s>=2, then one id per byte): offline,
    lossless on any text, and small enough for 2-layer test models."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + the byte-level tokenizer saved with save_pretrained: a model path for the recipes."""
    d = tmp_path_factory.mktemp("tiny") / "model"
    tiny_llama(vocab_size=259, hidden_size=32, seed=0).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M-Instruct (integration tests)."""
    from adaptive_decoder.modeling.models import load_base_model

    try:
        return load_base_model("smollm2")
    except ImportError as e:
        pytest.skip(str(e))


def training_recipe(name: str):
    """The module of the repository script training/<name>.py (imported by name, as the tests call its functions)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


@pytest.fixture
def vllm_importable(monkeypatch):
    """A stand-in `vllm` module, for configs that only check that vLLM can be imported (no engine is built)."""
    import importlib.machinery
    import sys
    import types

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", fake)
