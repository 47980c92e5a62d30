"""Rewards: GSM8K extraction, sacrebleu parity, concept coverage, repetition, fluency, reward model, composite."""

import math

from types import SimpleNamespace

import pytest
import sacrebleu
import torch

from adaptive_decoder.rewards import (
    BLEU,
    ChrF,
    CompositeReward,
    ConceptCoverage,
    Fluency,
    GSM8KCorrectness,
    Repetition,
    RewardModelScorer,
    build_reward,
    distinct_n,
    extract_gsm8k_answer,
    gsm8k_gold,
    repeated_ngram_rate,
    word_forms,
)
from conftest import tiny_llama, tiny_tokenizer


# ---------------------------------------------------------------------------------------------- GSM8K
@pytest.mark.parametrize(
    "text,mode,expected",
    [
        ("She pays $1,200.50 in total.", "flexible", "1200.50"),
        ("So the answer is 18.", "flexible", "18"),
        ("3 + 4 = 7, then 7 * 2 = 14. #### 14", "strict", "14"),
        ("3 + 4 = 7, then 7 * 2 = 14. #### 14", "flexible", "14"),
        ("The result is 14 but #### 15 is written", "strict", "15"),
        ("The answer is 42", "strict", None),          # no '#### ' marker: strict gives nothing
        ("The answer is 42", "flexible", "42"),
        ("#### 1,000", "strict", "1000"),
        ("I owe -5 dollars", "flexible", "-5"),
        ("no number here...", "flexible", None),        # '...' matches lm-eval's regex but holds no digit
        ("", "flexible", None),
    ],
)
def test_gsm8k_extraction(text, mode, expected):
    assert extract_gsm8k_answer(text, mode) == expected


def test_gsm8k_correctness_strict_vs_flexible_and_numeric_equality():
    ex = [{"answer": "Janet makes 9 * 2 = $<<9*2=18>>18.\n#### 18"}] * 4
    texts = ["She makes $18.", "#### 18", "#### 18.0", "The answer is 17"]
    assert GSM8KCorrectness("flexible").score(texts, ex) == [1.0, 1.0, 1.0, 0.0]
    assert GSM8KCorrectness("strict").score(texts, ex) == [0.0, 1.0, 1.0, 0.0]
    money = [{"answer": "#### 1,200.5"}]
    assert GSM8KCorrectness().score(["It costs $1,200.50."], money) == [1.0]


def test_gsm8k_bad_input():
    assert gsm8k_gold("work\n#### 1,000") == "1000"
    assert gsm8k_gold("72") == "72"
    with pytest.raises(ValueError, match="no '#### <number>'"):
        gsm8k_gold("the answer is seventy")
    with pytest.raises(ValueError, match="unknown GSM8K extraction mode 'loose'"):
        GSM8KCorrectness("loose")
    with pytest.raises(ValueError, match="needs the field 'answer'"):
        GSM8KCorrectness().score(["18"], [{"question": "q"}])
    with pytest.raises(ValueError, match="2 completions but 1 examples"):
        GSM8KCorrectness().score(["18", "19"], [{"answer": "#### 18"}])


# ---------------------------------------------------------------------------------------------- translation
def test_chrf_and_bleu_match_sacrebleu_directly():
    hyps = ["The goods cost less than 20 euro.", "Fee equals forty percent of goods value", "completely unrelated"]
    refs = ["The goods cost less than 20 euros.", "The fee would equal 40% of the value of the goods...", "The cat sat."]
    ex = [{"reference": r} for r in refs]
    chrf = ChrF().score(hyps, ex)
    bleu = BLEU().score(hyps, ex)
    for h, r, c, b in zip(hyps, refs, chrf, bleu):
        assert c == pytest.approx(sacrebleu.sentence_chrf(h, [r]).score / 100, abs=1e-12)
        assert b == pytest.approx(sacrebleu.sentence_bleu(h, [r]).score / 100, abs=1e-12)
    assert chrf[0] > chrf[1] > chrf[2] and 0 <= min(chrf) and max(chrf) <= 1
    assert ChrF().score(["  "], [{"reference": "x"}]) == [0.0]
    assert BLEU().score([""], [{"reference": "x"}]) == [0.0]
    assert ChrF().score(["same sentence"], [{"reference": "same sentence"}]) == [pytest.approx(1.0)]


# ---------------------------------------------------------------------------------------------- concepts
def test_concept_coverage_with_inflections():
    ex = [{"concepts": ["dog", "carry", "stop", "dance", "ball"]}]
    text = "The DOGS carried it; she stopped dancing near the wall."
    # dogs, carried, stopped, dancing hit; ball does not ("wall" is no form of it)
    assert ConceptCoverage().score([text], ex) == [pytest.approx(4 / 5)]
    assert ConceptCoverage().score([""], ex) == [0.0]
    forms = word_forms("carry") | word_forms("stop") | word_forms("dance")
    assert {"carries", "carried", "stopping", "danced", "dancer"} <= forms
    assert "ran" not in word_forms("run")  # irregular forms are documented as not covered
    # a multi-word concept needs all its words; substrings of other words never count
    ex2 = [{"concepts": ["ice cream", "cat"]}]
    assert ConceptCoverage().score(["creamy ice and a category"], ex2) == [0.0]
    assert ConceptCoverage().score(["Ice cream for the cat"], ex2) == [1.0]
    with pytest.raises(ValueError, match="non-empty list"):
        ConceptCoverage().score(["x"], [{"concepts": "dog cat"}])


# ---------------------------------------------------------------------------------------------- repetition
def test_repetition_scores_a_greedy_loop_low():
    loop = "the cat sat on the mat . " * 10
    varied = "A quiet fox crossed the frozen river while distant bells rang over the sleeping town ."
    rep = Repetition(n=3)
    s_loop, s_varied, s_empty, s_short = rep.score([loop, varied, "", "hi there"])
    assert s_varied == 1.0
    # 70 words -> 68 trigrams, 6 distinct (the loop has period 7 words: 7 distinct trigrams)
    grams = 70 - 2
    assert s_loop == pytest.approx(7 / grams)
    assert s_loop < 0.15
    assert s_empty == 0.0 and s_short == 1.0
    assert repeated_ngram_rate("a b a b", 2) == pytest.approx(1 / 3)
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="integer >= 1"):
        Repetition(n=0)


# ---------------------------------------------------------------------------------------------- fluency
@pytest.fixture(scope="module")
def lm_and_tok():
    return tiny_llama(vocab_size=260, hidden_size=32, seed=3), tiny_tokenizer()


def test_fluency_is_the_mean_token_log_likelihood_and_batch_invariant(lm_and_tok):
    model, tok = lm_and_tok
    flu = Fluency(model, tok, batch_size=4)
    ex = [{"prompt": "Tell me a story."}, {"prompt": "Q"}, {"prompt": "A much longer prompt, with more bytes in it."}]
    comps = ["Once upon a time.", "xq!", "ok"]
    batched = flu.score(comps, ex)
    alone = [flu.score([c], [e])[0] for c, e in zip(comps, ex)]
    assert batched == pytest.approx(alone, abs=1e-5)
    for c, e, got in zip(comps, ex, batched):  # hand computation: one unpadded forward
        p = tok(e["prompt"])["input_ids"]  # no chat template: BOS-less plain encoding like encode_prompts
        ids = tok(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([p + ids])).logits[0].log_softmax(-1)
        want = sum(logp[len(p) - 1 + t, i].item() for t, i in enumerate(ids)) / len(ids)
        assert got == pytest.approx(want, abs=1e-5)
        assert -math.log(260) - 3 < got < 0  # a near-uniform random LM: about -log(V) per token
    assert flu.score([""], [{"prompt": "x"}]) == [-20.0]  # empty completion -> the floor, never NaN
    assert Fluency(model, tok, floor=-1.0).score(["abc"], [{"prompt": "x"}]) == [-1.0]  # clamped
    with pytest.raises(ValueError, match="needs a scorer LM"):
        build_reward({"fluency": {}})


# ---------------------------------------------------------------------------------------------- reward model
@pytest.fixture(scope="module")
def reward_model():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, num_labels=1, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return LlamaForSequenceClassification(cfg).eval()


def test_reward_model_scorer_batched_equals_single_and_manual(reward_model):
    tok = tiny_tokenizer()
    rm = RewardModelScorer(reward_model, tok, batch_size=2)
    ex = [{"prompt": "Hi"}, {"prompt": "Write a poem about the sea"}, {"prompt": "2+2?"}]
    comps = ["Hello!", "Waves.", "It is four, because two plus two makes four."]
    batched = rm.score(comps, ex)
    for c, e, got in zip(comps, ex, batched):
        enc = tok(f"{e['prompt']}\n\n{c}", return_tensors="pt")
        with torch.no_grad():
            want = reward_model(**enc).logits[0, 0].item()
        assert got == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 6) for x in batched)) == 3


def test_reward_model_scorer_applies_chat_template(reward_model):
    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    rm = RewardModelScorer(reward_model, tok)
    assert rm.format("Q?", "A.") == "<user>Q?\n<assistant>A.\n"
    got = rm.score(["A."], [{"prompt": "Q?"}])[0]
    with torch.no_grad():
        want = reward_model(**tok("<user>Q?\n<assistant>A.\n", return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert got == pytest.approx(want, abs=1e-5)


def test_reward_model_from_path_via_build_reward(reward_model, tmp_path):
    reward_model.save_pretrained(tmp_path / "rm")
    tiny_tokenizer().save_pretrained(tmp_path / "rm")
    r = build_reward({"reward_model": {"path": str(tmp_path / "rm"), "batch_size": 2, "weight": 0.5}})
    direct = RewardModelScorer(reward_model, tiny_tokenizer()).score(["x y"], [{"prompt": "p"}])[0]
    assert r.score(["x y"], [{"prompt": "p"}]) == [pytest.approx(0.5 * direct, abs=1e-5)]
    with pytest.raises(ValueError, match="needs 'path:'"):
        build_reward({"reward_model": {"batch_size": 2}})


@pytest.fixture
def captured_reward_load(monkeypatch, reward_model):
    """AutoModelForSequenceClassification / AutoTokenizer.from_pretrained record their kwargs and return the tiny
    reward model (a copy: placement is what the tests look at) and tokenizer."""
    import copy

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    calls = {}

    def model(source, **kw):
        calls["model"] = (source, kw)
        return copy.deepcopy(reward_model).to(kw["dtype"] or torch.float32)

    def tok(source, **kw):
        calls["tokenizer"] = (source, kw)
        return tiny_tokenizer()

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tok)
    return calls


@pytest.fixture
def warned_once_per_test():
    from adaptive_decoder import rewards

    rewards._warn_reward_model_on_cpu.cache_clear()
    yield
    rewards._warn_reward_model_on_cpu.cache_clear()


def test_reward_model_options_reach_from_pretrained(captured_reward_load, monkeypatch):
    from adaptive_decoder.modeling import models

    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: True)  # 'auto' by the fixed rule: bf16 on this "CPU"
    r = build_reward({"reward_model": {"path": "org/rm", "revision": "v2", "trust_remote_code": True, "dtype": "auto",
                                       "device": "cpu"}})
    source, kw = captured_reward_load["model"]
    assert source == "org/rm" and kw == {"dtype": torch.bfloat16, "revision": "v2", "trust_remote_code": True}
    assert captured_reward_load["tokenizer"][1] == {"revision": "v2", "trust_remote_code": True}
    assert next(r.components["reward_model"][0].model.parameters()).dtype is torch.bfloat16
    build_reward({"reward_model": {"path": "org/rm", "device_map": "cpu", "dtype": "float32"}})
    assert captured_reward_load["model"][1] == {"dtype": torch.float32, "device_map": "cpu"}
    build_reward({"reward_model": {"path": "org/rm"}})  # nothing given: transformers' defaults
    assert captured_reward_load["model"][1] == {"dtype": None} and captured_reward_load["tokenizer"][1] == {}
    with pytest.raises(ValueError, match=r"^reward_model: device 'cuda' and device_map 'auto' both place the reward "
                                         r"model; give one of them$"):
        build_reward({"reward_model": {"path": "org/rm", "device": "cuda", "device_map": "auto"}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['policy_device'\]"):  # set by build_reward, not YAML
        build_reward({"reward_model": {"path": "org/rm", "policy_device": "cpu"}})


def test_the_reward_model_goes_to_the_policys_device_unless_told(captured_reward_load, monkeypatch, reward_model):
    """build_reward passes the policy LM's device; a reward model loaded from a path goes there by default."""
    moved = []
    monkeypatch.setattr(type(reward_model), "to", lambda self, *a, **k: moved.append(a) or self)
    policy = SimpleNamespace(parameters=lambda: iter([torch.zeros(1, device="meta")]))  # a policy on another device
    build_reward({"reward_model": {"path": "org/rm"}}, model=policy)
    assert moved[-1] == (torch.device("meta"),)
    build_reward({"reward_model": {"path": "org/rm", "device": "cpu"}}, model=policy)
    assert moved[-1] == ("cpu",)


def test_a_cpu_reward_model_beside_a_cuda_policy_warns_once_naming_the_key(reward_model, caplog, warned_once_per_test):
    tok = tiny_tokenizer()
    with caplog.at_level("WARNING", logger="adaptive_decoder.rewards"):
        RewardModelScorer(reward_model, tok, policy_device="cuda:0")  # a given model stays where it is: the CPU
        RewardModelScorer(reward_model, tok, policy_device="cuda:0")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "reward_model.device" in warnings[0] and "cuda:0" in warnings[0]
    caplog.clear()
    from adaptive_decoder import rewards

    rewards._warn_reward_model_on_cpu.cache_clear()
    with caplog.at_level("WARNING", logger="adaptive_decoder.rewards"):
        RewardModelScorer(reward_model, tok, device="cpu", policy_device="cuda:0")  # asked for: quiet
        RewardModelScorer(reward_model, tok, policy_device="cpu")  # a CPU policy: quiet
        RewardModelScorer(reward_model, tok)  # no policy known: quiet
    assert not caplog.records


# ---------------------------------------------------------------------------------------------- composite
def test_composite_weights_and_components():
    r = build_reward({"gsm8k": {"weight": 1.0, "mode": "strict"}, "repetition": {"weight": 0.25, "n": 2}})
    ex = [{"answer": "#### 4"}, {"answer": "#### 4"}]
    comps = r.score_components(["so #### 4", "4 4 4 4 4"], ex)
    assert comps["gsm8k"] == [1.0, 0.0]
    assert comps["repetition"] == [1.0, pytest.approx(1 - 3 / 4)]
    assert comps["total"] == [pytest.approx(1.25), pytest.approx(0.25 * 0.25)]
    assert r.score(["so #### 4", "4 4 4 4 4"], ex) == comps["total"]
    assert isinstance(r, CompositeReward)


def test_unknown_reward_names_and_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown reward name\(s\) \['rouge'\]"):
        build_reward({"rouge": {}, "bleu": {}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['ngram'\] for reward 'repetition'"):
        build_reward({"repetition": {"ngram": 3}})
    with pytest.raises(ValueError, match="non-empty mapping"):
        build_reward({})
    with pytest.raises(ValueError, match="weight must be a finite number"):
        build_reward({"bleu": {"weight": float("nan")}})


def test_novelty_is_one_minus_nearest_jaccard_within_each_prompt():
    from adaptive_decoder.rewards import Novelty

    a, b, c = "the cat sat down", "the cat ran off", "a dog barked"
    # bigrams: a {the cat, cat sat, sat down}; b {the cat, cat ran, ran off}; c {a dog, dog barked}
    # J(a,b) = 1/5, J(a,c) = J(b,c) = 0
    ex1, ex2 = {"id": "1"}, {"id": "2"}
    got = Novelty(n=2).score([a, b, c, a, a], [ex1, ex1, ex1, ex2, ex2])
    assert got == pytest.approx([0.8, 0.8, 1.0, 0.0, 0.0])  # prompt 2: two identical samples (greedy) -> 0
    mean = Novelty(n=2, reduce="mean").score([a, b, c], [ex1] * 3)
    assert mean == pytest.approx([0.9, 0.9, 1.0])
    # empty text is never novel; a text shorter than n is one n-gram of all its words
    assert Novelty(n=2).score(["", "hi", "hi", "yes"], [ex1] * 4) == pytest.approx([0.0, 0.0, 0.0, 1.0])
    # grouping falls back to the prompt when there is no id
    assert Novelty().score([a, c], [{"prompt": "p"}] * 2) == pytest.approx([1.0, 1.0])


def test_novelty_bad_input_is_named():
    from adaptive_decoder.rewards import Novelty

    with pytest.raises(ValueError, match="single sample"):
        Novelty().score(["x y", "x y"], [{"id": "1"}, {"id": "2"}])
    with pytest.raises(ValueError, match="reduce"):
        Novelty(reduce="min")
    with pytest.raises(ValueError, match="neither"):
        Novelty().score(["a", "b"], [{}, {}])
    assert build_reward({"novelty": {"weight": 0.5, "n": 1}}).score(["a b", "a c"], [{"id": 0}] * 2) == pytest.approx([1/3, 1/3])


def test_hag_task_scorer_marks_group_rewards_for_per_config_scoring():
    """A group reward in any task makes the HAG scorer ask the search to group samples by (prompt, config)
    (tests/test_hag_training.py checks the grouping itself); per-sample rewards alone do not."""
    from adaptive_decoder.hag.search import task_scorer
    from adaptive_decoder.tasks import get_task

    grouped = get_task("constrained_writing", reward={"concepts": {}, "novelty": {}})
    plain = get_task("constrained_writing", reward={"concepts": {}})
    assert task_scorer({"constrained_writing": grouped}).needs_group is True
    assert task_scorer({"constrained_writing": plain}).needs_group is False
    ex = {**grouped.examples()[0], "task": "constrained_writing"}
    got = task_scorer({"constrained_writing": grouped})(["a b c", "a b c"], [ex, ex])
    assert got == pytest.approx([grouped.setup_scoring().score(["a b c", "a b c"], ex)[0][i]["reward"] for i in (0, 1)])
