"""Per-sample rewards used to rank samples for LPO (and to score them in evaluation).

Every reward is a small class with a `name` and a batched `score(completions, examples) -> list[float]`.
`examples[i]` is the task record of sample i; the fields a reward reads are:

    "answer"     GSM8K answer field (the gold number follows "#### ")      -> GSM8KCorrectness
    "reference"  reference translation                                     -> ChrF, BLEU
    "concepts"   list of words that must appear                            -> ConceptCoverage
    "n"          how many items a list reply must give                     -> DistinctItems
    "prompt"     the prompt text                                           -> Fluency, RewardModelScorer

`CompositeReward` combines named components with weights; `build_reward` builds one from a YAML-style dict whose
keys name rewards and whose values are their options:

    build_reward({"gsm8k": {"weight": 1.0, "mode": "flexible"}, "repetition": {"weight": 0.2, "n": 3}})

A key is looked up in this order (`resolve_reward`):

1. a registered name: the built-ins above and anything decorated with `@register_reward("name")` (one registry,
   `REWARDS`; the built-ins are registered by the same function);
2. an import path `module:attribute` (`my_pkg.rewards:keyword_bonus`, `my_pkg.rewards:Scorer.create`);
3. an entry point of that name in the group `adaptive_decoder.rewards` (`importlib.metadata`), so an installed
   package can provide rewards by name without an import in the config.

What a key names may follow either convention:

* the library's: a class whose instances have `score(completions, examples)` (its options are passed to its
  constructor), or such an object itself (it takes no options);
* TRL's reward-function convention (`GRPOTrainer(reward_funcs=...)`): a function, or a callable class, called as
  `fn(completions=[...], prompts=[...], **columns)` where every other example field is passed as a keyword list
  (`answer=[...]`, `id=[...]`), returning one number per completion. `FunctionReward` adapts it; a function's
  options are passed on every call as extra fixed keywords (they replace an example field of the same name). TRL's
  `completion_ids` and `trainer_state` do not exist here and are not passed.

Two options (or attributes of the class / function) declare rather than configure a reward:
`needs_group: true` -- the value of a sample depends on the other samples of its prompt in the same call (e.g.
`Novelty`; see `group_components`): each call passes all the samples of a prompt, which the reward groups by the
example's "id" (or "prompt"), and the collection can score a sample among twins decoded like it
(`CollectionSettings.group_reward_twins`) instead of among the exploration pool;
`allow_nonfinite: true` -- NaN / inf scores are stored as they are and dropped when pairs are built (`pairs.py`),
as for a reward model that can overflow.

Every component's scores are checked where they are consumed, in `CompositeReward.score_components`, before the
collection or the evaluation writes anything: one number per completion, real numbers only, and finite unless
the reward allows otherwise; the error is one line naming the reward. The built-in rewards never return NaN, even
for an empty completion (each one documents the value it gives instead).
"""

from .metrics import (  # noqa: F401
    EXTRACTION_MODES, extract_gsm8k_answer, gsm8k_gold, numbers_equal, GSM8KCorrectness, ChrF, BLEU, word_forms,
    ConceptCoverage, _ngrams, distinct_n, repeated_ngram_rate, Repetition, Novelty, ExactMatch, DistinctValid,
)
from .lists import DistinctItems, list_items  # noqa: F401
from .scorers import (  # noqa: F401
    Fluency, _warn_reward_model_on_cpu, RewardModelScorer,
)
from .registry import (  # noqa: F401
    FunctionReward, checked_scores, CompositeReward, ENTRY_POINT_GROUP, FLAG_OPTIONS, REWARDS, register_reward,
    available_rewards, resolve_reward, reward_options, spec_needs_group, group_components, needs_group,
    check_reward_spec, build_reward,
)

__all__ = [
    "EXTRACTION_MODES", "extract_gsm8k_answer", "gsm8k_gold", "numbers_equal", "GSM8KCorrectness", "ChrF", "BLEU",
    "word_forms", "ConceptCoverage", "distinct_n", "repeated_ngram_rate", "Repetition", "Novelty", "ExactMatch",
    "DistinctValid", "DistinctItems", "list_items", "Fluency", "RewardModelScorer", "FunctionReward", "checked_scores",
    "CompositeReward",
    "ENTRY_POINT_GROUP", "FLAG_OPTIONS", "REWARDS", "register_reward", "available_rewards", "resolve_reward",
    "reward_options", "spec_needs_group", "group_components", "needs_group", "check_reward_spec", "build_reward",
]
