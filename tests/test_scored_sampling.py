"""The scored-sampling engine (`adaptive_decoder.scoring`) and its one seeding rule (`adaptive_decoder.modeling.noise`):
a prompt's samples depend on (seed, task, prompt id, sample index) only, not on its batch, and the same prompt gets
the same noise in collection, evaluation and HAG search.

Float tolerance. Everything runs in float32 on the tiny model. Prompts of equal token length are never padded, so
their logits are bit-identical in any batch and their tokens must be equal. Prompts of different lengths are left-
padded to the longest of their batch, which perturbs their logits in the last bits (measured below: under 1e-4);
a token can then flip only if its uniform lands within that perturbation of a boundary of the cumulative
distribution (probability about 1e-4 per step), so the test asserts equal tokens for its fixed prompts and
checks the perturbation's size separately.
"""

import random

import pytest
import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from adaptive_decoder.evaluation.config import EvalConfig
from adaptive_decoder.evaluation.harness import eval_tasks, run_evaluation
from adaptive_decoder.hag.search import ConfigSearch, SearchSettings, SearchSpace, run_search
from adaptive_decoder.lpo.collection import collect
from adaptive_decoder.lpo.store import CollectionMismatchError, CollectionSettings, read_collection
from adaptive_decoder.methods.policies import AdaptivePolicy, FixedPolicy
from adaptive_decoder.modeling.models import encode_prompts
from adaptive_decoder.modeling.noise import NOISE_VERSION, prompt_seed, row_seeds
from adaptive_decoder.rewards import build_reward
from adaptive_decoder.scoring import ScoredSampling
from adaptive_decoder.tasks.recipe import load_task_prompts
from conftest import tiny_llama, tiny_tokenizer

SAME_LENGTH = [{"id": f"s{i}", "task": "t", "prompt": p} for i, p in enumerate(["abcd", "wxyz", "1234", "q r "])]
MIXED_LENGTH = [{"id": f"m{i}", "task": "t", "prompt": p}
                for i, p in enumerate(["a", "hello there", "xyz", "a much longer prompt than the others"])]


@pytest.fixture(scope="module")
def adm():
    return AdaptiveDecodingModel(tiny_llama(vocab_size=259, hidden_size=32).float(), tiny_tokenizer())


def engine_samples(adm, policy, prompts, batch_size, done=(), k=3):
    """{prompt id: (its k completions' token ids, their values)} drawn through the engine."""
    got = {}

    def draw(batch, seeds):
        return policy.generate(adm, [p["prompt"] for p in batch], num_samples=k, max_new_tokens=10, seed=seeds,
                               chat=False)

    def append(batch, outs):
        for p, o in zip(batch, outs):
            got[p["id"]] = (o.completion_ids, o.values)

    ScoredSampling(seed=7, batch_size=batch_size).run(prompts, draw=draw, append=append, done=done)
    return got


def token_head(level="token"):
    torch.manual_seed(3)
    cfg = AdaptiveDecoderConfig(hidden_size=32, num_layers=1, temperature_bins=[0.3, 0.8, 1.4], top_p_bins=[1.0, 0.8],
                                top_k_bins=[0, 20], level=level, selection="sample")
    return AdaptiveDecoderHead(cfg)


@pytest.mark.parametrize("prompts", [SAME_LENGTH, MIXED_LENGTH], ids=["equal-length", "mixed-length"])
@pytest.mark.parametrize("which", ["fixed", "head"])
def test_a_prompts_samples_do_not_change_with_batch_size_order_or_neighbours(adm, prompts, which):
    # the head samples its bins at every token (exploration): its draws must be batch-independent too
    policy = FixedPolicy(1.0) if which == "fixed" else AdaptivePolicy(head=token_head(), strict_base_model=False)
    ref = engine_samples(adm, policy, prompts, batch_size=len(prompts))
    shuffled = prompts[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != prompts
    others = [{"id": "o1", "task": "t", "prompt": "zz top"}, {"id": "o2", "task": "t", "prompt": "other words here"}]
    runs = [engine_samples(adm, policy, prompts, batch_size=1), engine_samples(adm, policy, shuffled, batch_size=3),
            engine_samples(adm, policy, [prompts[2], *others, prompts[0]], batch_size=4),
            # a resume: half the prompts already done, the rest batched together differently
            engine_samples(adm, policy, prompts, batch_size=2, done={prompts[0]["id"], prompts[3]["id"]})]
    for got in runs:
        assert all(got[p["id"]] == ref[p["id"]] for p in prompts if p["id"] in got) and len(set(got) & set(ref)) >= 2
    # the samples are real draws: a prompt's k samples differ from each other
    assert all(len({tuple(c) for c in ids}) > 1 for ids, _ in ref.values())


def test_left_padding_perturbs_logits_only_in_the_last_bits(adm):
    # the bound the module docstring states for different-length prompts
    alone = encode_prompts(adm.tokenizer, [MIXED_LENGTH[0]["prompt"]], chat=False)
    padded = encode_prompts(adm.tokenizer, [p["prompt"] for p in MIXED_LENGTH], chat=False)
    with torch.no_grad():
        a = adm.model(**alone).logits[0, -1]
        pos = (padded["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        b = adm.model(**padded, position_ids=pos).logits[0, -1]
    assert float((a - b).abs().max()) < 1e-4


def test_the_prompt_seed_rule_is_a_function_of_seed_task_id_and_sample_only():
    assert prompt_seed(0, "gsm8k", "q1") == prompt_seed(0, "gsm8k", "q1")
    seeds = {prompt_seed(0, "gsm8k", "q1"), prompt_seed(1, "gsm8k", "q1"), prompt_seed(0, "wmt", "q1"),
             prompt_seed(0, "gsm8k", "q2")}
    assert len(seeds) == 4
    rows = row_seeds([11, 12], 3)
    assert len(rows) == len(set(rows)) == 6
    assert rows[3:] == row_seeds([12], 3)  # prompt i's rows are i*k .. i*k+k-1, whatever comes before
    assert row_seeds([11], 2) == rows[:2]  # the j-th sample's seed does not depend on k
    assert set(row_seeds([11], 3, "twin")).isdisjoint(rows)


def test_the_engine_batches_within_a_task_skips_done_prompts_and_refuses_duplicate_ids():
    ps = [{"id": str(i), "task": "ab"[i % 2]} for i in range(7)]
    eng = ScoredSampling(seed=0, batch_size=2)
    assert [[p["id"] for p in b] for b in eng.batches(ps, done={"2"})] == [["0", "4"], ["6"], ["1", "3"], ["5"]]
    mixed = ScoredSampling(seed=0, batch_size=3, group_tasks=False).batches(ps, done={"2"})
    assert [[p["id"] for p in b] for b in mixed] == [["0", "1", "3"], ["4", "5", "6"]]
    assert eng.prompt_seeds(ps[:1]) == ScoredSampling(seed=0, batch_size=5).prompt_seeds(ps[:1]) == [prompt_seed(0, "a", "0")]
    with pytest.raises(ValueError, match=r"duplicated prompt ids \['1'\]"):
        eng.batches(ps + [{"id": "1", "task": "a"}])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        ScoredSampling(seed=0, batch_size=0)


def test_generate_refuses_row_seeds_of_the_wrong_length_or_with_head_seed(adm):
    with pytest.raises(ValueError, match=r"row_seeds needs one seed per row: 4 \(prompts x num_return_sequences\), got 2"):
        adm.generate_text(["ab", "cd"], chat=False, max_new_tokens=2, num_return_sequences=2, force={"temperature": 1.0},
                          row_seeds=[1, 2])
    with pytest.raises(ValueError, match="pass row_seeds= or head_seed=, not both"):
        adm.with_head(token_head()).generate_text(["ab"], chat=False, max_new_tokens=2, row_seeds=[1], head_seed=3)


def test_row_seeded_draws_follow_the_processed_distribution(adm):
    # 2000 rows of one prompt at temperature 0.7, top-k 5: the first token's frequencies match softmax(scores)
    n = 2000
    out = adm.generate_text(["abc"], chat=False, max_new_tokens=1, num_return_sequences=n,
                            force={"temperature": 0.7, "top_k": 5}, row_seeds=row_seeds([5], n))
    enc = encode_prompts(adm.tokenizer, ["abc"], chat=False)
    with torch.no_grad():
        logits = adm.model(**enc).logits[0, -1].float()
    top = torch.topk(logits, 5)
    p = torch.zeros_like(logits).index_put_((top.indices,), (top.values / 0.7).softmax(-1))
    first = torch.tensor([c[0] for c in out.completion_ids])
    freq = torch.bincount(first, minlength=p.shape[0]).double() / n
    assert float(freq[p == 0].sum()) == 0.0
    assert bool(((freq - p.double()).abs() <= 4.5 * (p * (1 - p) / n).sqrt() + 1.0 / n).all())


# --- one prompt, one noise: collection, evaluation and search ---------------------------------------------------
TASK = {"num_prompts": 4, "data_seed": 0, "reward": {"repetition": {"n": 1}}}  # the task "arithmetic"


def test_the_same_prompt_gets_the_same_noise_in_collection_evaluation_and_search(tiny_model_dir, tmp_path):
    model = tiny_llama(vocab_size=259, hidden_size=32).float()
    tok = tiny_tokenizer()
    k, new = 3, 8
    # evaluation: the fixed policy T=1.0 on the task's test prompts, 3 samples each
    cfg = EvalConfig(model=str(tiny_model_dir), tasks={"arithmetic": TASK}, num_prompts=4, methods=["fixed"],
                     temperatures=[1.0], num_samples=k, max_new_tokens=new, batch_size=3, n_bootstrap=10, report_to="none",
                     progress=False, plots=False, fluency=False, torch_threads=1, output_dir=str(tmp_path / "eval"), chat=False)
    res = run_evaluation(cfg, model, tok)
    evaluated = {u["prompt_id"]: [s["text"] for s in u["samples"]] for u in res["units"] if u["method"] == "T=1.0"}
    # the same prompts (ids, texts) for the collection and the search, in another order
    prompts = [{**e, "task": "arithmetic"} for e in eval_tasks(cfg)["arithmetic"].examples() if e["id"] in evaluated][::-1]
    assert len(prompts) == len(evaluated) == 4
    # collection: a head whose only temperature bin is 1.0 (so it decodes as T=1.0 does), in other batches
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, num_layers=1, factors=["temperature"],
                                                     temperature_bins=[1.0], selection="sample"))
    settings = CollectionSettings(num_samples=k, max_new_tokens=new, prompts_per_batch=2, chat=False, seed=0)
    collect(AdaptiveDecodingModel(model, tok, head), prompts, {"arithmetic": build_reward(TASK["reward"])},
            tmp_path / "collect", settings, progress=False)
    collected = {}
    for r in sorted(read_collection(tmp_path / "collect")[1], key=lambda r: r["sample_index"]):
        collected.setdefault(r["prompt_id"], []).append(r["completion"])
    # search: a space of the one config T=1.0, so its k samples are the record's best_texts
    one = dict(temperature=[1.0], top_p=[1.0], top_k=[0], repetition_penalty=[1.0],
               base={"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    recs = ConfigSearch(AdaptiveDecodingModel(model, tok), lambda texts, exs: [0.0] * len(texts), SearchSpace(**one),
                        SearchSettings(samples_per_config=k, max_new_tokens=new, prompts_per_chunk=4, chat=False,
                                       seed=0)).search(prompts)
    searched = {r["prompt_id"]: r["best_texts"] for r in recs}
    assert collected == evaluated == searched
    assert all(len(set(v)) > 1 for v in evaluated.values())  # sampled, not greedy


def test_runs_recorded_under_another_noise_scheme_are_refused_by_name(tiny_model_dir, tmp_path):
    # evaluation
    cfg = dict(model=str(tiny_model_dir), tasks={"arithmetic": TASK}, num_prompts=2, methods=["greedy"], num_samples=1,
               max_new_tokens=2, n_bootstrap=10, report_to="none", progress=False, plots=False, fluency=False,
               torch_threads=1, output_dir=str(tmp_path / "eval"))
    run_evaluation(EvalConfig(**cfg))
    rc = tmp_path / "eval" / "run_config.json"
    import json

    old = json.loads(rc.read_text())
    assert old["noise_scheme"] == NOISE_VERSION
    rc.write_text(json.dumps({k: v for k, v in old.items() if k != "noise_scheme"}))  # as written before scheme 3
    with pytest.raises(ValueError, match=r"different config \(noise_scheme differ\)"):
        run_evaluation(EvalConfig(**cfg))
    # collection
    model, tok = tiny_llama(vocab_size=259, hidden_size=32), tiny_tokenizer()
    adm = AdaptiveDecodingModel(model, tok, AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=32, num_layers=1)))
    settings = CollectionSettings(num_samples=2, max_new_tokens=2)
    prompts, rewards = load_task_prompts("arithmetic", TASK)[:1], {"arithmetic": build_reward(TASK["reward"])}
    collect(adm, prompts, rewards, tmp_path / "c", settings, progress=False)
    manifest = tmp_path / "c" / "manifest.json"
    m = json.loads(manifest.read_text())
    del m["settings"]["noise_scheme"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(CollectionMismatchError, match=r"settings\.noise_scheme: stored None, now 3"):
        collect(adm, prompts, rewards, tmp_path / "c", settings, progress=False)
    # search
    run_search(AdaptiveDecodingModel(model, tok), prompts, lambda t, e: [0.0] * len(t), tmp_path / "s",
               settings=SearchSettings(samples_per_config=1, max_new_tokens=2, chat=False, max_rounds=1), progress=False)
    sc = tmp_path / "s" / "search_config.json"
    sc.write_text(json.dumps({k: v for k, v in json.loads(sc.read_text()).items() if k != "noise_scheme"}))
    with pytest.raises(ValueError, match=r"different configuration \(noise_scheme differ\)"):
        run_search(AdaptiveDecodingModel(model, tok), prompts, lambda t, e: [0.0] * len(t), tmp_path / "s",
                   settings=SearchSettings(samples_per_config=1, max_new_tokens=2, chat=False, max_rounds=1),
                   progress=False)


def test_hf_row_seeded_generate_draws_what_the_vllm_backends_served_model_draws(tmp_path):
    """The vLLM backend's served model (`per_request.RequestDecoder`, no vLLM needed) given the same row seeds,
    hidden states and logits picks the token HF `generate(row_seeds=)` picked, at every step of every row, with a
    token-level head sampling its bins (epsilon exploration). The replay's logits come from one teacher-forced pass
    instead of generate's cached steps: equal to float32 rounding, which a draw can only notice at a CDF boundary."""
    from adaptive_decoder.integrations.vllm.per_request import RequestDecoder
    from adaptive_decoder.modeling.generation import compute_head_inputs

    token_head().save_pretrained(tmp_path / "head")
    head = AdaptiveDecoderHead.from_pretrained(tmp_path / "head")
    model, tok = tiny_llama(vocab_size=259, hidden_size=32).float(), tiny_tokenizer()
    seeds = row_seeds([prompt_seed(0, "t", "a"), prompt_seed(0, "t", "b")], 2)
    out = AdaptiveDecodingModel(model, tok, head).generate_text(["abc", "hello"], chat=False, max_new_tokens=6,
                                                                 num_return_sequences=2, epsilon=0.2, row_seeds=seeds)
    enc = encode_prompts(tok, ["abc", "hello"], chat=False)
    mask = torch.cat([enc["attention_mask"].repeat_interleave(2, 0), torch.ones_like(out.step_mask, dtype=torch.long)], 1)
    hidden = compute_head_inputs(model, out.sequences, mask, out.prompt_length, "token")
    with torch.no_grad():
        logits = model.lm_head(hidden)  # the final hidden states are the lm_head's inputs
    specs = [{"seed": s, "head": str(tmp_path / "head"), "selection": "sample", "epsilon": 0.2, "head_seed": s}
             for s in seeds]
    dec, checked = RequestDecoder(), 0
    for t in range(out.step_mask.shape[1]):
        served = dec.warp_rows(hidden[:, t], logits[:, t], specs, [t] * len(seeds)).argmax(-1)
        for r in range(len(seeds)):
            if out.step_mask[r, t]:
                assert int(served[r]) == int(out.sequences[r, out.prompt_length + t]), (r, t)
                checked += 1
    assert checked >= 12
    assert len({c for row in out.choices["temperature"].tolist() for c in row if c >= 0}) > 1  # the head explored
