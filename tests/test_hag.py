"""HAG config format, parser, prompt builder and the two-stage HAGPolicy (tiny models, offline)."""

import math
import string

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptive_decoder.modeling.generation import AdaptiveDecodingModel
from adaptive_decoder.hag.policy import (DEFAULT_CONFIG, KEYS, RANGES, HAGPolicy, ParseStats, build_config_prompt,
                                  format_config, parse_config, sft_example, validate_config)
from adaptive_decoder.modeling.models import encode_prompts
from conftest import tiny_llama


def in_range(config: dict) -> bool:
    if set(config) != set(KEYS):
        return False
    for k, v in config.items():
        lo, hi, lo_incl = RANGES[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if v > hi or v < lo or (v == lo and not lo_incl):
            return False
        if k == "top_k" and not isinstance(v, int):
            return False
    return True


# ------------------------------------------------------------------------------------------ parser properties
_KEYWORDS = ["temperature", "top_p", "top_k", "repetition_penalty", "top-p", "Top K", "temp", "=", ":", ",", " ",
             "\n", "-", ".", "e", "nan", "inf", "1e9", "0", "0.5", "7", "-3", "40", "1.1", "2.0000001"]


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parser_never_raises_and_stays_in_range_on_arbitrary_text(text):
    r = parse_config(text)
    assert in_range(r.config)
    assert r.status in ("ok", "partial", "failed") and r.failed == (r.status != "ok")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_KEYWORDS) | st.text(max_size=4), max_size=30).map("".join))
def test_parser_in_range_on_config_like_garbage(text):
    """Strings built from keys, separators and edge numbers reach the value-checking code far more often."""
    r = parse_config(text)
    assert in_range(r.config)
    for k, problem in r.problems.items():
        assert r.config[k] == DEFAULT_CONFIG[k] and problem in ("missing", "not_a_number", "out_of_range")


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 2), st.floats(0, 1, exclude_min=True), st.integers(0, 1000), st.floats(1, 2),
       st.permutations(list(KEYS)), st.sampled_from(["=", " = ", ": ", ":"]), st.sampled_from([", ", ",", "; ", " "]))
def test_roundtrip_any_valid_config_in_any_order_and_spacing(t, p, k, r, order, eq, sep):
    cfg = {"temperature": t, "top_p": p, "top_k": k, "repetition_penalty": r}
    res = parse_config(format_config(cfg))
    assert res.status == "ok"
    for key in KEYS:  # format_config keeps 6 significant digits
        assert res.config[key] == pytest.approx(cfg[key], rel=1e-5)
    text = sep.join(f"{key}{eq}{cfg[key]!r}" for key in order)
    res = parse_config(text)
    assert res.status == "ok" and res.config == {**cfg, "temperature": t + 0.0, "top_p": p, "repetition_penalty": r}


# ------------------------------------------------------------------------------------------ explicit bad input
def test_empty_and_whitespace_fall_back_to_default_and_count_as_failed():
    for text in ["", "   ", "\n\n", None]:
        r = parse_config(text)
        assert r.status == "failed" and r.config == DEFAULT_CONFIG
        assert r.problems == {k: "missing" for k in KEYS}


def test_prose_is_a_failure():
    r = parse_config("I think a low temperature would be good for this math problem, maybe around zero.")
    assert r.status == "failed" and r.config == DEFAULT_CONFIG


def test_out_of_range_values_use_the_default_for_that_key_only():
    r = parse_config("temperature=-3, top_p=7, top_k=40, repetition_penalty=1.1")
    assert r.status == "partial"
    assert r.problems == {"temperature": "out_of_range", "top_p": "out_of_range"}
    assert r.config == {"temperature": 1.0, "top_p": 1.0, "top_k": 40, "repetition_penalty": 1.1}
    r = parse_config("temperature=-3")
    assert r.problems["temperature"] == "out_of_range" and r.config["temperature"] == DEFAULT_CONFIG["temperature"]
    r = parse_config("top_p=7")
    assert r.problems["top_p"] == "out_of_range" and r.config["top_p"] == 1.0
    for bad in ["top_p=0", "top_k=2.5", "top_k=-1", "repetition_penalty=0.9", "temperature=nan", "temperature=inf",
                "temperature=1e999", "top_k=1001"]:
        key = bad.split("=")[0]
        assert parse_config(bad).problems[key] == "out_of_range", bad


def test_not_a_number_is_counted_separately():
    r = parse_config("temperature=high, top_p=0.9, top_k=40, repetition_penalty=1.0")
    assert r.problems == {"temperature": "not_a_number"} and r.config["top_p"] == 0.9


def test_config_then_continued_talking_uses_the_config_line():
    text = ("temperature=0.2, top_p=0.9, top_k=40, repetition_penalty=1.1\n"
            "Now let me solve it. With temperature=1.9 I would ramble. The answer is 7.")
    r = parse_config(text)
    assert r.status == "ok" and r.text.startswith("temperature=0.2")
    assert r.config == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}
    # on the same line: the first occurrence of each key wins, trailing prose is ignored
    r = parse_config("temperature=0.2, top_p=0.9, top_k=40, repetition_penalty=1.1. Sure! temperature=1.5 is fun")
    assert r.status == "ok" and r.config["temperature"] == 0.2 and r.config["repetition_penalty"] == 1.1


def test_reordered_spaced_and_cased_keys():
    r = parse_config("  Top-K : 20 ;top p=0.8,  REPETITION_PENALTY = 1.05 , Temperature:0  ")
    assert r.status == "ok"
    assert r.config == {"temperature": 0.0, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert parse_config('{"temperature": 0.5, "top_p": 0.95, "top_k": 0, "repetition_penalty": 1.0}').status == "ok"
    assert parse_config("temperature=0.5, top_k=10").status == "partial"


def test_configured_default_is_used_and_validated():
    d = {"temperature": 0.3, "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.2}
    assert parse_config("nothing", default=d).config == d
    with pytest.raises(ValueError, match="top_p"):
        parse_config("x", default={**d, "top_p": 2.0})
    with pytest.raises(ValueError, match="missing \\['top_k'\\]"):
        validate_config({"temperature": 0.1, "top_p": 1.0, "repetition_penalty": 1.0})


def test_format_config_is_canonical_and_rejects_bad_values():
    assert format_config({"top_k": 40, "temperature": 0.70000001, "repetition_penalty": 1, "top_p": 0.9}) == \
        "temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1"
    with pytest.raises(ValueError, match="top_k=2.5 is out of range"):
        format_config({"temperature": 0.7, "top_p": 0.9, "top_k": 2.5, "repetition_penalty": 1.0})


def test_parse_stats_counts_outcomes():
    s = ParseStats()
    assert s.failure_rate is None
    for t in ["temperature=0.1, top_p=1, top_k=0, repetition_penalty=1", "temperature=-3", "", "top_p=7, top_k=3"]:
        s.update(parse_config(t))
    d = s.to_dict()
    assert (d["total"], d["ok"], d["partial"], d["failed"]) == (4, 1, 1, 2)
    assert d["failure_rate"] == 0.75
    assert d["problems"]["temperature:out_of_range"] == 1 and d["problems"]["top_p:out_of_range"] == 1


def test_prompt_builder_modes_and_sft_record():
    q = "What is 2 + 3?"
    trained, untrained = build_config_prompt(q), build_config_prompt(q, "untrained")
    assert trained.endswith(q) and untrained.endswith(q) and len(untrained) > len(trained)
    assert "temperature=" in untrained and "repetition_penalty" in trained
    with pytest.raises(ValueError, match="'trained' or 'untrained'"):
        build_config_prompt(q, "zero-shot")
    with pytest.raises(ValueError, match="placeholder"):
        build_config_prompt(q, template="no slot")
    rec = sft_example(q, {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}, prompt_id="a/1")
    assert rec["prompt"] == [{"role": "user", "content": trained}] and rec["prompt_id"] == "a/1"
    assert rec["completion"] == [{"role": "assistant", "content": "temperature=0, top_p=1, top_k=0, repetition_penalty=1"}]


# ------------------------------------------------------------------------------------------ the policy end to end
def char_tokenizer():
    """Character-level tokenizer (ids < 128, newline included) so a tiny Llama can write real config text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<s>", "<unk>"] + list(string.printable))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


GOOD = "temperature=0.3, top_p=0.8, top_k=5, repetition_penalty=1.1"
BAD = "top_p=7 is what I like"
PROMPTS = ["Add two and three.", "Tell me a story!!"]
assert len(PROMPTS[0]) != len(PROMPTS[1])  # different lengths: stage 1 runs on a left-padded batch


@pytest.fixture(scope="module")
def scripted_config_model():
    """A tiny Llama taught (plain Adam, a few seconds) to answer PROMPTS[0] with GOOD and PROMPTS[1] with BAD."""
    torch.manual_seed(0)
    tok = char_tokenizer()
    model = tiny_llama(vocab_size=128, hidden_size=64, seed=0).train()
    seqs = []
    for p, target in zip(PROMPTS, [GOOD, BAD]):
        q = encode_prompts(tok, [build_config_prompt(p)], chat=False)["input_ids"][0].tolist()
        a = tok(target + "\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((q, a))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        loss = 0.0
        for q, a in seqs:
            ids = torch.tensor([q + a])
            labels = torch.tensor([[-100] * len(q) + a])
            loss = loss + model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval().requires_grad_(False)
    return model, tok


def test_hag_policy_applies_the_parsed_config_and_counts_failures(scripted_config_model):
    cmodel, tok = scripted_config_model
    answer_lm = tiny_llama(vocab_size=128, hidden_size=32, seed=1)
    adm = AdaptiveDecodingModel(answer_lm, tok)
    default = {"temperature": 0.9, "top_p": 0.95, "top_k": 0, "repetition_penalty": 1.0}
    pol = HAGPolicy(model=cmodel, tokenizer=tok, default=default, max_config_tokens=70)  # chars; prompt+70 < 256 positions
    outs = pol.generate(adm, PROMPTS, num_samples=3, max_new_tokens=6, seed=0, chat=False)
    assert len(outs) == 2 and all(len(o.texts) == 3 for o in outs)
    good, bad = outs
    assert good.extra["config_text"].strip() == GOOD and good.extra["parse_failed"] is False
    assert bad.extra["config_text"].strip() == BAD and bad.extra["parse_failed"] is True
    assert bad.extra["parse_problems"]["top_p"] == "out_of_range"
    expect_good = {"temperature": 0.3, "top_p": 0.8, "top_k": 5, "repetition_penalty": 1.1}
    expect_bad = default  # top_p out of range -> default; the other keys missing -> default
    for o, want in [(good, expect_good), (bad, expect_bad)]:
        assert o.extra["config"] == want
        for v in o.values:  # what stage 2 really applied, read back from the generate output
            assert v == pytest.approx({**want, "min_p": 0.0})
    s = pol.describe()["parse_stats"]
    assert (s["total"], s["ok"], s["failed"], s["partial"]) == (2, 1, 1, 0) and s["failure_rate"] == 0.5  # BAD: no valid key
    # stage 2 is the one sampling code path: the same as forcing those configs directly with the same seed
    from adaptive_decoder.methods.policies import forced_generate

    ref = forced_generate(adm, PROMPTS, [expect_good, expect_bad], num_samples=3, max_new_tokens=6, seed=0, chat=False)
    assert [o.completion_ids for o in outs] == [o.completion_ids for o in ref]


def test_untrained_mode_prompts_the_evaluated_model_itself_and_counts_failures():
    tok = char_tokenizer()
    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, hidden_size=32, seed=2), tok)
    pol = HAGPolicy(untrained=True, max_config_tokens=12)
    assert pol.name == "hag_untrained"
    outs = pol.generate(adm, ["Say hi.", "Count to three please."], num_samples=2, max_new_tokens=5, seed=3, chat=False)
    # a random model writes junk: every row falls back to the default config, and that is counted
    for o in outs:
        assert o.extra["parse_failed"] and o.extra["config"] == DEFAULT_CONFIG
        assert all(v == pytest.approx({**DEFAULT_CONFIG, "min_p": 0.0}) for v in o.values)
        assert len(tok(o.extra["config_text"], add_special_tokens=False)["input_ids"]) <= 12
    assert pol.stats.total == 2 and pol.stats.failure_rate == 1.0


def test_hag_policy_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="model_path="):
        HAGPolicy()
    with pytest.raises(ValueError, match="untrained HAG"):
        HAGPolicy(untrained=True, model_path="x")
    with pytest.raises(ValueError, match="HAG default config"):
        HAGPolicy(untrained=True, default={**DEFAULT_CONFIG, "temperature": 5})
    pol = HAGPolicy(model_path=str(tmp_path / "missing"))
    tok = char_tokenizer()
    adm = AdaptiveDecodingModel(tiny_llama(vocab_size=128, seed=0), tok)
    with pytest.raises(FileNotFoundError, match="train_hag.py"):
        pol.generate(adm, ["hi"], num_samples=1, max_new_tokens=2, seed=0, chat=False)


def test_registry_builds_hag_policies():
    from adaptive_decoder.methods.policies import build_policies

    (p,) = build_policies("hag_untrained")
    assert isinstance(p, HAGPolicy) and p.untrained
    (p,) = build_policies("hag", model_path="runs/hag/merged", name="hag_lora")
    assert p.name == "hag_lora" and p.model_path == "runs/hag/merged"


@pytest.mark.parametrize("text, key", [
    ("top_k=1_000", "top_k"),  # float() accepts underscores; a prefix match would read 1, status ok
    ("temperature=0.7abc", "temperature"),  # a prefix match would read 0.7
    ("top_p=.9.", "top_p"),  # a prefix match would read 0.9
    ("repetition_penalty=1.1.1", "repetition_penalty"),  # a prefix match would read 1.1
    ("temperature=1,5", "temperature"),  # a decimal comma; a prefix match would read 1.0
    ("temperature=2e-9990.2", "temperature"),  # a prefix match would read 0.0, i.e. greedy
    ("top_k=\uff14\uff10", "top_k"),  # full-width digits: float() reads 40, and re's \d matches them
    ("temperature=\u0660.5", "temperature"),  # Arabic-Indic zero
    ("top_k=40abc", "top_k"),
])
def test_a_value_must_be_a_whole_ascii_number(text, key):
    r = parse_config(text + ", top_p=0.9" if key != "top_p" else text)
    assert r.problems[key] == "not_a_number", text
    assert r.config[key] == DEFAULT_CONFIG[key] and r.status != "ok"


def test_strict_numbers_keep_the_ordinary_forms():
    r = parse_config("temperature=.5, top_p=0.9, top_k=+40, repetition_penalty=1.")
    assert r.status == "ok" and r.config == {"temperature": 0.5, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.0}
    r = parse_config("temperature=1e-1,top_p=0.9;top_k=40 repetition_penalty=1.1. More prose.")
    assert r.status == "ok" and r.config["temperature"] == 0.1 and r.config["repetition_penalty"] == 1.1
    assert parse_config("(temperature=0.3)").config["temperature"] == 0.3  # brackets delimit


def test_an_exponent_that_underflows_is_out_of_range_not_greedy():
    assert parse_config("temperature=2e-9990").problems["temperature"] == "out_of_range"
    assert parse_config("temperature=0e-9990").config["temperature"] == 0.0  # a real zero stays greedy


def test_validate_config_applies_the_same_grammar_to_strings():
    good = {"temperature": "0.7", "top_p": "0.9", "top_k": "40", "repetition_penalty": "1.1"}
    assert validate_config(good) == {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1}
    with pytest.raises(ValueError, match="top_k='1_000' is not a number"):
        validate_config({**good, "top_k": "1_000"})
