"""A tiny random Llama: the model of the smoke-run configs (configs/experiments/tiny.yaml) and of the tests.

Two layers, 4 attention heads over 2 KV heads, weights drawn after `torch.manual_seed(seed)`, so one set of
arguments gives the same model on every machine. `tiny_llama` builds it in memory for any tokenizer's ids;
`save_tiny_model` saves it with a real tokenizer (SmolLM2's by default, chat template included) so that
`load_base_model(out_dir)` and the recipes can run on it.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_llama(vocab_size: int = 128, hidden_size: int = 32, seed: int = 0, eos_token_id: int = 1,
               pad_token_id: int = 0, bos_token_id: int = 2, intermediate_size: int | None = None,
               max_position_embeddings: int = 256, tie_word_embeddings: bool = False):
    """A 2-layer random `LlamaForCausalLM` in eval mode (intermediate size 2 x hidden unless given), its
    generation config padding with `pad_token_id` and stopping at `eos_token_id`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                      intermediate_size=2 * hidden_size if intermediate_size is None else intermediate_size,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=max_position_embeddings, eos_token_id=eos_token_id,
                      pad_token_id=pad_token_id, bos_token_id=bos_token_id, tie_word_embeddings=tie_word_embeddings)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model


def save_tiny_model(out_dir, tokenizer_source: str = "smollm2", hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a tiny random Llama with a real tokenizer (default: SmolLM2's, chat template included) to `out_dir`,
    loadable with `load_base_model(out_dir)`."""
    from transformers import AutoTokenizer

    from .models import resolve_model_source

    src, extra, _ = resolve_model_source(tokenizer_source)
    tok = AutoTokenizer.from_pretrained(src, **extra)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = tiny_llama(len(tok), hidden_size, seed, eos_token_id=tok.eos_token_id, pad_token_id=pad,
                       bos_token_id=tok.bos_token_id, max_position_embeddings=512, tie_word_embeddings=True)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
