"""Methods describe themselves: the registry's traits, the one `fit(DevResults)` contract of the dev-fitted policies,
and a baseline defined here (not in the library) that the evaluation harness runs end to end without a change."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from eval_support import save_tiny, tiny_cfg, units_by

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel
from adaptive_decoder.evaluation.config import EvalConfig
from adaptive_decoder.evaluation.harness import mix_normalizer, run_evaluation
from adaptive_decoder.methods.base import (
    POLICIES,
    TRAITS,
    build_policies,
    controls,
    method_traits,
    register_policy,
    registered_methods,
    role_of,
    role_of_type,
)
from adaptive_decoder.methods.fitted import DevFittedPolicy, DevResults, MeanShiftPolicy, OraclePolicy
from adaptive_decoder.methods.policies import FixedPolicy, RandomPolicy, fixed_grid
from adaptive_decoder.methods.samplers import SAMPLER_GRIDS, sampler_grid

PKG = Path(__file__).resolve().parents[1] / "adaptive_decoder"
SAMPLERS = list(SAMPLER_GRIDS)
MIXES = [f"{m}_mix" for m in SAMPLERS]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def registry_guard():
    """Registrations a test adds are removed again (the registry is process-wide)."""
    before = set(POLICIES)
    yield
    for name in set(POLICIES) - before:
        del POLICIES[name], TRAITS[name]


def dev_results(rewards: dict, task: str | None = None, normalizer=None) -> DevResults:
    """DevResults over hand-written {task: {policy name: {prompt_id: reward}}}."""
    def units(name, t):
        return [{"prompt_id": p, "reward": r, "samples": []} for p, r in rewards[t].get(name, {}).items()]
    return DevResults(task=task or next(iter(rewards)), tasks=list(rewards), units=units, normalizer=normalizer)


# --- the shipped methods' traits ----------------------------------------------------------------------------
def test_the_traits_of_the_shipped_methods_give_the_lists_callers_used_to_keep():
    assert set(registered_methods(needs_dev=True)) == {"oracle", "best_joint", "meanshift", *SAMPLERS, *MIXES,
                                                       "best_joint_mix"}
    assert registered_methods(pooled=True) == ["meanshift", *MIXES, "best_joint_mix"]
    assert registered_methods(takes_heads=True) == ["adaptive", "meanshift"]
    assert registered_methods(uses_head_bins=True) == ["random", "random_token", "best_joint"]
    assert set(registered_methods(is_control=True)) == {"oracle", "random", "random_token"}
    assert controls(["greedy", "T=0.0", "random", "oracle", "adseq", "not_a_method"]) == ["random", "oracle"]
    assert role_of_type() == {"FixedPolicy": "fixed", "GreedyPolicy": "greedy", "RandomPolicy": "random",
                              "TokenRandomPolicy": "random_token", "AdaptivePolicy": "adaptive", "OraclePolicy": "oracle",
                              "TunedSamplerPolicy": "sampler", "MixSamplerPolicy": "sampler",
                              "MeanShiftPolicy": "meanshift", "JointMixPolicy": "sampler", "HAGPolicy": "hag"}
    grid = ("temperatures", "top_p", "top_k")
    assert {m: method_traits(m).run_options for m in ("fixed", "oracle", "min_p", "min_p_mix", "best_joint_mix",
                                                      "random")} == {
        "fixed": grid, "oracle": grid, "min_p": ("budget",), "min_p_mix": (*grid, "budget"),
        "best_joint_mix": (*grid, "budget"), "random": ()}
    with pytest.raises(ValueError, match="unknown method 'nucleus'"):
        method_traits("nucleus")


def test_every_method_describes_its_role_and_builds_what_its_traits_say(tmp_path):
    head = tmp_path / "head"
    AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=8)).save_pretrained(head)
    options = {"adaptive": {"head_path": str(head)}, "meanshift": {"head_path": str(head)},
               "hag": {"model_path": str(tmp_path / "hag")}}  # HAG loads its model only when it generates
    roles = {}
    for method in POLICIES:
        traits = method_traits(method)
        for p in build_policies(method, **options.get(method, {})):
            d = json.loads(json.dumps(p.describe()))  # as results.json holds it
            roles[method] = d["role"]
            assert role_of(d) == p.role == traits.role
            assert (p.needs_dev, p.pooled) == (traits.needs_dev, traits.pooled), method
            assert bool(p.dev_policies()) == p.needs_dev, method  # only a dev-fitted policy runs anything on dev
            # a description without a role is read by its class name
            assert role_of({k: v for k, v in d.items() if k != "role"}) == p.role == role_of_type()[d["type"]]
    assert roles["greedy"] == "greedy" and roles["fixed"] == "fixed" and roles["oracle"] == roles["best_joint"] == "oracle"
    assert roles["min_p"] == "sampler" and roles["meanshift"] == "meanshift" and roles["random_token"] == "random_token"
    assert roles["hag"] == roles["hag_untrained"] == "hag" and roles["adaptive"] == "adaptive"
    assert role_of({"name": "mine", "type": "MyPolicy"}) == "policy"  # an unknown class: a chooser like any other


def test_registration_is_checked(registry_guard):
    @register_policy("t07_test", policy=FixedPolicy)
    def build(**kw):
        return [FixedPolicy(0.7, name="t07", **kw)]

    with pytest.raises(ValueError, match="'t07_test' is already registered"):
        register_policy("t07_test")(lambda **kw: [])
    with pytest.raises(ValueError, match="'fixed' is already registered"):
        register_policy("fixed")(build)
    assert [p.name for p in build_policies("t07_test")] == ["t07"]
    # the traits are read from the declared class before building, so a builder must build that class
    register_policy("liar_test", policy=OraclePolicy)(lambda: [FixedPolicy(0.5)])
    with pytest.raises(TypeError, match=r"'liar_test' is registered with policy=OraclePolicy but built \['FixedPolicy'\]"):
        build_policies("liar_test")
    with pytest.raises(ValueError, match=r"unknown run option\(s\) \['grid'\]"):
        register_policy("bad_test", run_options=("grid",))
    with pytest.raises(TypeError, match="policy= must be a DecodingPolicy subclass"):
        register_policy("bad_test", policy=dict)


def test_fixed_and_random_policies():
    r = RandomPolicy()
    assert r.config_for("a prompt", 3) == r.config_for("a prompt", 3)
    assert len({tuple(r.config_for(f"p{i}", 0).values()) for i in range(50)}) > 10
    assert r.fixed_config() is None  # it chooses per prompt: nothing to copy units by
    grid = build_policies("fixed", temperatures=[0.2, 0.6, 1.0])
    assert [p.name for p in grid] == ["T=0.2", "T=0.6", "T=1.0"]
    assert grid[1].fixed_config() == {"temperature": 0.6, "top_p": 1.0, "top_k": 0}
    with pytest.raises(ValueError, match="unknown method 'nucleus'"):
        build_policies("nucleus")
    with pytest.raises(ValueError, match="bad options for method 'fixed'"):
        build_policies("fixed", temperature=[0.5])


# --- fit(DevResults) -----------------------------------------------------------------------------------------
def test_the_oracle_fits_on_its_task_and_decodes_the_best_candidate():
    o = OraclePolicy(fixed_grid([0.2, 0.6, 1.0]))
    with pytest.raises(RuntimeError, match=r"OraclePolicy.fit\(dev\) must run before generate"):
        o.generate(None, ["x"], num_samples=1, max_new_tokens=1, seed=0)
    assert o.fixed_config() is None
    # task a: T=0.6 and T=1.0 tie at 0.7 (ties -> the earlier candidate); task b (not fitted here) prefers T=0.2
    rewards = {"a": {"T=0.2": {"1": 0.4, "2": 0.6}, "T=0.6": {"1": 0.7, "2": 0.7}, "T=1.0": {"1": 1.0, "2": 0.4}},
               "b": {"T=0.2": {"1": 1.0}, "T=0.6": {"1": 0.0}, "T=1.0": {"1": 0.0}}}
    assert o.fit(dev_results(rewards, "a")).name == "T=0.6"
    assert o.dev_scores == pytest.approx({"T=0.2": 0.5, "T=0.6": 0.7, "T=1.0": 0.7})
    assert o.fixed_config() == {"temperature": 0.6, "top_p": 1.0, "top_k": 0} and o.output_extra() == {"oracle_choice": "T=0.6"}
    assert o.fit(dev_results(rewards, "b")).name == "T=0.2"  # refitted per task
    assert o.fit(dev_results({"a": {**rewards["a"], "T=1.0": {"1": math.nan, "2": 0.9}}}, "a")).name == "T=1.0"  # NaN left out
    with pytest.raises(ValueError, match=r"oracle: no dev score for candidates \['T=1.0'\]"):
        o.fit(dev_results({"a": {k: v for k, v in rewards["a"].items() if k != "T=1.0"}}))


def test_a_mix_sampler_picks_one_value_on_the_normalized_dev_reward_of_all_tasks():
    """Hand numbers: on raw dev means min_p=0.5 would win (task b's rewards are 10x larger), but normalized by
    each task's fixed grid (a: T=0 0.0, T=1 1.0; b: T=0 0.0, T=1 10.0) min_p=0.02 has the higher mean over
    tasks: (0.9 + 0.3) / 2 = 0.6 against (0.1 + 0.5) / 2 = 0.3."""
    [p] = build_policies("min_p_mix", budget=2, temperatures=[0.0, 1.0], values=[0.02, 0.5])
    assert p.name == "min_p_mix" and [a.name for a in p.anchors] == ["T=0.0", "T=1.0"]
    lo, hi = p.candidates
    assert [q.name for q in p.dev_policies()] == [lo.name, hi.name, "T=0.0", "T=1.0"]
    dev = {"a": {"T=0.0": {"1": 0.0, "2": 0.0}, "T=1.0": {"1": 1.0, "2": 1.0},
                 lo.name: {"1": 0.8, "2": 1.0}, hi.name: {"1": 0.1, "2": 0.1}},
           "b": {"T=0.0": {"1": 0.0, "2": 0.0}, "T=1.0": {"1": 10.0, "2": 10.0},
                 lo.name: {"1": 3.0, "2": 3.0}, hi.name: {"1": 4.0, "2": 6.0}}}
    for task in ("a", "b"):  # pooled: the task being decoded does not change the fit
        assert p.fit(dev_results(dev, task, mix_normalizer)) is lo
        assert p.dev_scores == pytest.approx({lo.name: 0.6, hi.name: 0.3})
    assert p.fit_summary()["pooled"] is True
    with pytest.raises(ValueError, match=r"task 'b' has no dev rewards for \['T=1.0'\]"):
        p.fit(dev_results({**dev, "b": {k: v for k, v in dev["b"].items() if k != "T=1.0"}}, "a", mix_normalizer))
    with pytest.raises(ValueError, match="min_p_mix: its fit needs dev.normalizer"):
        p.fit(dev_results(dev))


def test_meanshift_fits_the_heads_mean_temperature_over_every_task():
    """Hand numbers: decisions 0.2 (task a, sequence level) and 0.6, 0.4, 0.8 (task b, one per token, NaN after
    EOS) average to 0.5, halfway between the bins 0.4 and 0.6: the tie goes to the lower one."""
    head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=8, level="sequence", factors=["temperature"],
                                                     fixed={"top_p": 0.9, "top_k": 20}))
    p = MeanShiftPolicy(head=head)
    assert p.name == "meanshift-adseq" and p.pooled and [c.name for c in p.dev_policies()] == ["adseq"]
    units = {"a": [{"samples": [{"values": {"temperature": 0.2}}]}],
             "b": [{"samples": [{"values": {"temperature": [0.6, 0.4, 0.8, math.nan]}}]}]}
    dev = DevResults(task="a", tasks=["a", "b"], units=lambda name, t: units[t])
    assert p.fit(dev).config == {"temperature": 0.4, "top_p": 0.9, "top_k": 20}
    assert p.mean_temperature == pytest.approx(0.5) and p.fit_summary()["chosen"] == "T=0.4,p=0.9,k=20"
    with pytest.raises(ValueError, match="the head made no decisions"):
        p.fit(DevResults(task="a", tasks=["a"], units=lambda name, t: [{"samples": []}]))


def test_sampler_grid_keeps_the_oracle_budget():
    for m, (_, grid) in SAMPLER_GRIDS.items():
        assert len(grid) == 6 and sampler_grid(m, 6) == grid
        assert sampler_grid(m, 3) == [grid[0], grid[2], grid[-1]]  # indices round(i * 5 / 2): 0, 2, 5
    with pytest.raises(ValueError, match="equal tuning budget"):
        build_policies("min_p", budget=3, values=[0.1, 0.2])
    with pytest.raises(ValueError, match="min_p"):
        build_policies("min_p", budget=2, values=[0.1, 1.5])  # an invalid value fails when the method is built
    [p] = build_policies("edt", budget=2, temperature=0.7)
    assert [c.name for c in p.candidates] == ["T=0.7,edt_theta=0.1", "T=0.7,edt_theta=4"]


# --- a baseline the library does not know ---------------------------------------------------------------------
class LastBestPolicy(DevFittedPolicy):
    """A dev-fitted baseline defined only here: the candidate with the highest total dev reward, ties going to the
    LATER candidate (the oracle takes the earlier), on its task or, pooled, on every task."""

    role = "last_best"

    def fit(self, dev):
        tasks = dev.tasks if self.pooled else [dev.task]
        self.dev_scores = {c.name: sum(r for t in tasks for r in dev.rewards(c.name, t).values()) for c in self.candidates}
        self.chosen = max(reversed(self.candidates), key=lambda c: self.dev_scores[c.name])
        return self.chosen


class PooledLastBestPolicy(LastBestPolicy):
    pooled = True


@pytest.mark.parametrize("cls", [LastBestPolicy, PooledLastBestPolicy])
def test_a_new_dev_fitted_baseline_runs_end_to_end_without_a_change_to_the_harness(cls, tiny_dir, tmp_path,
                                                                                     registry_guard):
    @register_policy("last_best_test", policy=cls, run_options=("temperatures", "top_p", "top_k"))
    def build(name="last_best", **grid):
        return [cls(fixed_grid(**grid), name=name)]

    with pytest.raises(ValueError, match=r"method\(s\) \['last_best_test'\] need num_dev_prompts >= 1"):
        EvalConfig(methods=["last_best_test"], num_dev_prompts=0)
    tasks = ["gsm8k", "translation"]
    cfg = tiny_cfg(tiny_dir, tmp_path / "out", tasks={t: {} for t in tasks}, methods=["fixed", "last_best_test"],
                   temperatures=[0.0, 0.5, 1.0], num_prompts=2)
    res = run_evaluation(cfg)
    assert res["methods"]["last_best"]["role"] == "last_best" and res["methods"]["last_best"]["type"] == cls.__name__
    grid = ["T=0.0", "T=0.5", "T=1.0"]
    totals = {t: {c: sum(u["reward"] for u in units_by(res, c, t, "dev").values()) for c in grid} for t in tasks}
    for t in tasks:
        assert all(len(units_by(res, c, t, "dev")) == 2 for c in grid)  # the harness ran its candidates on dev
        scores = {c: sum(totals[s][c] for s in tasks) for c in grid} if cls.pooled else totals[t]
        want = max(reversed(grid), key=lambda c: scores[c])
        fit = res["tasks"][t]["oracle"]["last_best"]
        assert fit["chosen"] == want and fit["dev_scores"] == pytest.approx(scores)
        # its test prompts decode with the chosen setting: the fixed grid's units, copied
        test, chosen = units_by(res, "last_best", t), units_by(res, want, t)
        assert len(test) == 2 and all(u["samples"] == chosen[k]["samples"] for k, u in test.items())
        assert all(u["extra"]["reused_from"] == want and u["extra"]["oracle_choice"] == want for u in test.values())
        assert {c["baseline"] for c in res["comparisons"] if (c["method"], c["task"]) == ("last_best", t)} == set(grid)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| last_best |" in md


# --- no caller decides by class or method name ------------------------------------------------------------------
def test_no_module_outside_the_methods_imports_a_policy_class():
    """The harness, the reports and the experiment read traits: none of them imports a policy class (the package's
    public API, adaptive_decoder/__init__.py, re-exports some)."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "methods" or rel.parts[:2] == ("hag", "policy.py") or rel == Path("__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and "methods" in (node.module or ""):
                bad += [f"{rel}:{node.lineno} {a.name}" for a in node.names if a.name.endswith("Policy")]
    assert not bad, bad


def test_fixed_policy_is_exactly_force_generate(tiny_dir):
    from adaptive_decoder.modeling.models import load_base_model

    model, tok = load_base_model(str(tiny_dir))
    adm = AdaptiveDecodingModel(model, tok)
    prompts = ["Hello there", "What is 2+2?"]
    outs = FixedPolicy(0.7, top_p=0.9, top_k=20).generate(adm, prompts, num_samples=3, max_new_tokens=5, seed=11)
    torch.manual_seed(11)
    ref = adm.generate_text(prompts, max_new_tokens=5, num_return_sequences=3,
                            force={"temperature": 0.7, "top_p": 0.9, "top_k": 20})
    assert [t for o in outs for t in o.texts] == ref.texts  # prompt i, sample j = row i*3+j
    assert outs[1].values[2] == {"temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.0, "repetition_penalty": 1.0}
    g = build_policies("greedy")[0].generate(adm, prompts, num_samples=3, max_new_tokens=5, seed=0)
    assert g[0].extra["replicated"] and len(set(g[0].texts)) == 1


def test_random_token_draws_a_uniform_choice_at_every_token(tiny_dir):
    from adaptive_decoder.modeling.models import load_base_model

    model, tok = load_base_model(str(tiny_dir))
    adm = AdaptiveDecodingModel(model, tok)
    (pol,) = build_policies("random_token", temperature_bins=[0.0, 0.5, 1.0], top_p_bins=[0.9], top_k_bins=[0])
    prompts = ["Hello there", "What is 2+2?", "Name a colour", "Count to three"]
    outs = pol.generate(adm, prompts, num_samples=4, max_new_tokens=12, seed=5)
    temps = [t for o in outs for v in o.values for t in v["temperature"]]
    assert len(temps) > 100 and set(temps) <= {0.0, 0.5, 1.0}
    assert {p for o in outs for v in o.values for p in v["top_p"]} == {0.9}  # a single bin stays fixed
    share = {t: temps.count(t) / len(temps) for t in (0.0, 0.5, 1.0)}
    assert all(0.2 < f < 0.47 for f in share.values()), share  # uniform, not learned
    assert any(len(set(v["temperature"])) > 1 for o in outs for v in o.values)  # it changes within a sequence
    again = pol.generate(adm, prompts, num_samples=4, max_new_tokens=12, seed=5)
    assert [o.texts for o in again] == [o.texts for o in outs] and [o.values for o in again] == [o.values for o in outs]
    other = pol.generate(adm, prompts, num_samples=4, max_new_tokens=12, seed=6)
    assert [o.values for o in other] != [o.values for o in outs]
    with pytest.raises(ValueError, match="nothing to randomize"):
        build_policies("random_token", temperature_bins=[0.7], top_p_bins=[1.0], top_k_bins=[0])[0].generate(
            adm, prompts, num_samples=1, max_new_tokens=2, seed=0)
