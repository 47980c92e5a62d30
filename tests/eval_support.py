"""Shared by the evaluation tests: a tiny random Llama with a character tokenizer (offline), a head for it, the
suite config those tests start from, and units looked up by method and task."""

import string
from pathlib import Path

import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead
from adaptive_decoder.evaluation.config import EvalConfig

REPO = Path(__file__).resolve().parents[1]


ALL_TASKS = ["gsm8k", "translation", "constrained_writing", "creative_writing"]


def char_tokenizer():
    """Character-level tokenizer (ids < 128) so a tiny random Llama can decode real text, offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<s>", "<unk>"] + list(string.printable[:95]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>")


def save_tiny(path: Path, zero_lm_head: bool = False) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=1, pad_token_id=0, bos_token_id=2)
    model = LlamaForCausalLM(cfg)
    if zero_lm_head:  # all logits equal -> greedy picks id 0 (= pad) -> every completion is empty
        model.lm_head.weight.data.zero_()
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def save_head(path: Path, level: str, base_model: str, hidden: int = 32) -> str:
    torch.manual_seed(1)
    AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=hidden, base_model=base_model, level=level)).save_pretrained(path)
    return str(path)


def tiny_cfg(model_dir, out, **kw) -> EvalConfig:
    base = dict(model=str(model_dir), tasks={t: {} for t in ALL_TASKS}, num_prompts=3, num_dev_prompts=2,
                methods=["greedy", "fixed"],
                temperatures=[0.0, 1.0], num_samples=2, max_new_tokens=6, batch_size=2, n_bootstrap=200,
                report_to="none", progress=False, torch_threads=1, output_dir=str(out))
    base.update(kw)
    return EvalConfig(**base)


def units_by(results, method, task, split="test"):
    return {u["prompt_id"]: u for u in results["units"] if (u["method"], u["task"], u["split"]) == (method, task, split)}


# --------------------------------------------------------------------------------------------------------
