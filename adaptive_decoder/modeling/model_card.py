"""A head's model card: the README.md that `AdaptiveDecoderHead.save_pretrained` and `push_to_hub` write.

YAML front matter (what the Hub indexes, and what `yaml.safe_load` reads back) holds `library_name`, `tags`,
`base_model` (when the head records a Hub id) and an `adaptive_decoder` mapping: the base model as recorded and its
revision, the level, the learned factors with their bins, the fixed values, the reward per task and the collection
size. The body says the same in prose, shows how to load the head, and adds the run's scale-free results table when
one is given (rendered by the caller, e.g. `adaptive_decoder.experiment.model_card`). Facts not given are written
as null and "not recorded", never guessed.
"""

from __future__ import annotations

import re

import yaml

LIBRARY = "adaptive-decoder"
TAGS = ["adaptive-decoding", "decoding", "lpo"]
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*")


def hub_base_model(recorded: str | None) -> str | None:
    """The Hub repo id in a recorded base-model identity ("HuggingFaceTB/SmolLM2-135M-Instruct (GGUF ...)" gives
    the id; a local directory or an embedded name gives None)."""
    first = (recorded or "").split(" ")[0]
    return first if _REPO_ID.fullmatch(first) and not first.startswith((".", "/")) else None


def card_metadata(config, *, base_model_revision: str | None = None, reward: dict | None = None,
                  collection_size: dict | None = None) -> dict:
    """The front matter of a head's card (see the module docstring)."""
    meta = {"library_name": LIBRARY, "tags": list(TAGS)}
    hub_id = hub_base_model(config.base_model)
    if hub_id:
        meta["base_model"] = hub_id
    meta["adaptive_decoder"] = {
        "base_model": config.base_model, "base_model_revision": base_model_revision, "level": config.level,
        "factors": list(config.factors), "bins": {f: list(config.bins(f)) for f in config.factors},
        "fixed": {f: v for f, v in config.fixed.items() if f not in config.factors},
        "reward": reward, "collection_size": collection_size,
    }
    return meta


def render_model_card(config, *, base_model_revision: str | None = None, reward: dict | None = None,
                      collection_size: dict | None = None, results_table: str | None = None,
                      repo_id: str | None = None) -> str:
    """README.md text of a head with `config` (an AdaptiveDecoderConfig).

    reward: {task: reward spec} it was trained on; collection_size: e.g. {"prompts": 24, "samples_per_prompt": 6};
    results_table: markdown (the run's scale-free tables); repo_id: where the card will live (for the snippet).
    """
    meta = card_metadata(config, base_model_revision=base_model_revision, reward=reward,
                         collection_size=collection_size)
    ad = meta["adaptive_decoder"]
    level = {"sequence": "once per response, from the last prompt token (ADseq)",
             "token": "at every generated token (ADtok)"}[config.level]
    base = f"`{config.base_model}`" if config.base_model else "not recorded"
    rev = f"`{base_model_revision}`" if base_model_revision else "not recorded"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
             f"# {repo_id.split('/')[-1] if repo_id else 'AdaptiveDecoder head'}", "",
             "An [adaptive-decoder](https://arxiv.org/abs/2411.09661) head: a small MLP on a frozen causal LM's final "
             f"hidden state that chooses the decoding values {level}.", "",
             f"- Base model: {base} (revision: {rev})",
             f"- Level: `{config.level}`",
             "- Fixed: " + (", ".join(f"{k}={v}" for k, v in ad["fixed"].items()) or "nothing"),
             "", "| factor | bins |", "|---|---|"]
    lines += [f"| {f} | {', '.join(str(b) for b in bins)} |" for f, bins in ad["bins"].items()]
    lines += ["", "## Training", ""]
    if reward:
        lines += ["| task | reward |", "|---|---|"]
        lines += [f"| {t} | `{yaml.safe_dump(r, default_flow_style=True, width=10**6).strip()}` |"
                  for t, r in reward.items()]
    else:
        lines += ["Reward: not recorded."]
    size = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in (collection_size or {}).items()) or "not recorded"
    lines += ["", f"Collection size: {size}.", "", "## Use", "", "```python",
              "from adaptive_decoder import AdaptiveDecoderHead, AdaptiveDecodingModel, load_base_model", "",
              f"head = AdaptiveDecoderHead.from_pretrained({repo_id or 'HEAD_DIR'!r})",
              f"model, tok = load_base_model({hub_base_model(config.base_model) or config.base_model or 'BASE_MODEL'!r})",
              "print(AdaptiveDecodingModel(model, tok, head).generate_text(['Hello'], max_new_tokens=32).texts[0])",
              "```", ""]
    if results_table:
        lines += ["## Results", "", "The run's scale-free report (every seed and level of the run; adseq / adtok are "
                  "its heads).", "", results_table.strip(), ""]
    return "\n".join(lines)


def read_card_metadata(text: str) -> dict:
    """The front matter of a card written by `render_model_card` (raises ValueError without one)."""
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if not m:
        raise ValueError("no YAML front matter (--- ... ---) at the top of the model card")
    return yaml.safe_load(m.group(1))
