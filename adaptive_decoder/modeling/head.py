"""AdaptiveDecoder head: a small MLP on the frozen LM's final hidden state that picks decoding hyperparameters.

The head outputs one categorical distribution per *factor* (temperature, top-p, top-k, min-p). The factors are
independent given the hidden state, so the joint log-probability of a choice is the sum over the active
factors; LPO only ever needs that joint log-probability (see `AdaptiveDecoderHead.log_prob`). What the bins
may be (their order, what 0 / 1.0 mean, the optional min_p factor) is `adaptive_decoder.modeling.bins`.

A run's initial head (collection, the experiment's collect stage, LPO) is made one way, `build_head`: the saved
head at a path, or a fresh one sized from the model and initialised from a seed. Whether a model is the LM a head
records it was built for is one test, `same_base_model`, whether a mismatch then warns or refuses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .bins import DEFAULT_FACTORS, FACTORS, FIXED_DEFAULTS, check_bins, check_fixed
from .head_digest import CONFIG_NAME, DIGEST_KEY, WEIGHTS_NAME, recorded_digest, verify_weights, weights_digest
from .models import EMBEDDED
from ..paths import local_path, missing_local_dir
from ..validation import fraction, positive_int

logger = logging.getLogger(__name__)
LEVELS = ("token", "sequence")
SELECTIONS = ("argmax", "sample")


@dataclass
class AdaptiveDecoderConfig:
    """Configuration of an `AdaptiveDecoderHead`. Saved as `config.json` next to the weights."""

    hidden_size: int | None = field(default=None, metadata={"help": "Hidden size of the base LM (taken from its config)."})
    base_model: str | None = field(default=None, metadata={"help": "Identity of the base LM the head was built for."})
    num_layers: int = field(default=3, metadata={"help": "MLP depth (linear layers, incl. the output layer). The paper used ~3."})
    intermediate_size: int = field(default=256, metadata={"help": "Width of the MLP's hidden layers."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout between MLP layers (training only)."})
    temperature_bins: list = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], metadata={
        "help": "Temperature choices; 0.0 = greedy."})
    top_p_bins: list = field(default_factory=lambda: [1.0, 0.95, 0.9, 0.8], metadata={"help": "Top-p choices; 1.0 = off."})
    top_k_bins: list = field(default_factory=lambda: [0, 50, 20], metadata={"help": "Top-k choices; 0 = off."})
    min_p_bins: list = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2], metadata={
        "help": "Min-p choices; 0.0 = off (used only when 'min_p' is in factors)."})
    factors: list = field(default_factory=lambda: list(DEFAULT_FACTORS), metadata={
        "help": f"Factors the head learns (any of {list(FACTORS)}); the others use `fixed`."})
    fixed: dict = field(default_factory=lambda: dict(FIXED_DEFAULTS), metadata={"help": "Values of inactive factors."})
    level: str = field(default="token", metadata={
        "help": "'token' decides every step (ADtok); 'sequence' once from the last prompt token (ADseq)."})
    selection: str = field(default="argmax", metadata={
        "help": "'argmax' for inference, 'sample' for exploration during data collection."})

    def __post_init__(self):
        for f in FACTORS:
            setattr(self, f"{f}_bins", check_bins(f, getattr(self, f"{f}_bins")))
        if isinstance(self.factors, (str, bytes)) or not isinstance(self.factors, Iterable):
            raise ValueError(f"factors must be a list of factor names, got {self.factors!r}")
        self.factors = list(self.factors)
        unknown = [f for f in self.factors if f not in FACTORS]
        if unknown:
            raise ValueError(f"unknown factors {unknown}; valid: {list(FACTORS)}")
        if len(set(self.factors)) != len(self.factors):
            raise ValueError(f"factors has duplicates: {self.factors}")
        self.fixed = check_fixed(self.fixed)
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {self.level!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        # sizes come from JSON / YAML / the command line: a wrong type must fail here, naming the field, not
        # later as a bare TypeError in nn.Linear (and a width of 0 must not build an empty, untrainable head)
        if self.hidden_size is not None:
            self.hidden_size = positive_int("hidden_size", self.hidden_size)
        self.num_layers = positive_int("num_layers", self.num_layers)
        self.intermediate_size = positive_int("intermediate_size", self.intermediate_size)
        self.dropout = fraction("dropout", self.dropout)
        if self.base_model is not None and not isinstance(self.base_model, str):
            raise ValueError(f"base_model must be a string, got {self.base_model!r} ({type(self.base_model).__name__})")

    def bins(self, factor: str) -> list:
        return getattr(self, f"{factor}_bins")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdaptiveDecoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown AdaptiveDecoderConfig keys {unknown}; valid: {sorted(names)}")
        return cls(**d)


def exploration_probs(logits: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The distribution "sample" selection draws a bin from: (1 - epsilon) * softmax(logits) + epsilon / K, in
    float32. One definition, so that the HF draw, the row-seeded draw and the expected-reward objective's recomputed
    behaviour probabilities agree to rounding."""
    p = logits.float().softmax(-1)
    return (1 - epsilon) * p + epsilon / p.shape[-1] if epsilon > 0 else p


class AdaptiveDecoderHead(nn.Module, PyTorchModelHubMixin, library_name="adaptive-decoder", tags=["adaptive-decoding"]):
    """MLP trunk + one linear output per active factor (factorized categorical distributions)."""

    def __init__(self, config: AdaptiveDecoderConfig):
        super().__init__()
        if isinstance(config, dict):
            config = AdaptiveDecoderConfig.from_dict(config)
        if config.hidden_size is None:
            raise ValueError("AdaptiveDecoderConfig.hidden_size is required (take it from the base model's config)")
        self.config = config
        layers, width = [], config.hidden_size
        for _ in range(config.num_layers - 1):
            layers += [nn.Linear(width, config.intermediate_size), nn.GELU(), nn.Dropout(config.dropout)]
            width = config.intermediate_size
        self.trunk = nn.Sequential(*layers)
        self.outputs = nn.ModuleDict({f: nn.Linear(width, len(config.bins(f))) for f in config.factors})
        # Value tables as buffers so `values()` follows the head's device; top_p thresholds are computed in
        # float64 then cast, exactly like HF's `scores <= (1 - top_p)` with a Python float.
        for f in FACTORS:
            # min_p float64 like a forced value: the filter rounds it to the scores' dtype itself, as HF's float
            dtype = {"temperature": torch.float32, "top_p": torch.float64, "top_k": torch.long, "min_p": torch.float64}[f]
            self.register_buffer(f"_{f}_values", torch.tensor(config.bins(f), dtype=dtype), persistent=False)

    @property
    def factors(self) -> list:
        return self.config.factors

    def forward(self, hidden: torch.Tensor) -> dict:
        # The base LM may run in bf16/fp16; the head is small and stays in its own dtype.
        h = self.trunk(hidden.to(self.outputs[self.factors[0]].weight.dtype)) if self.factors else hidden
        return {f: self.outputs[f](h) for f in self.factors}

    def probs(self, hidden: torch.Tensor) -> dict:
        return {f: logits.softmax(-1) for f, logits in self(hidden).items()}

    def log_prob(self, hidden: torch.Tensor, choices: dict) -> torch.Tensor:
        """Joint log-probability of `choices` (bin indices per active factor): the sum over active factors."""
        missing = [f for f in self.factors if f not in choices]
        if missing:
            raise ValueError(f"choices lack active factors {missing}")
        total = None
        for f, logits in self(hidden).items():
            idx = choices[f].long()
            lp = logits.log_softmax(-1).gather(-1, idx.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total = lp if total is None else total + lp
        if total is None:
            return hidden.new_zeros(hidden.shape[:-1])
        return total

    def entropy(self, hidden: torch.Tensor) -> torch.Tensor:
        total = hidden.new_zeros(hidden.shape[:-1], dtype=torch.float32)
        for logits in self(hidden).values():
            logp = logits.float().log_softmax(-1)
            total = total + -(logp.exp() * logp).sum(-1)
        return total

    @torch.no_grad()
    def select(self, hidden: torch.Tensor, selection: str | None = None, generator: torch.Generator | None = None,
               epsilon: float = 0.0) -> dict:
        """Pick a bin per active factor: argmax, or a sample from (1-epsilon)*pi + epsilon*uniform."""
        selection = selection or self.config.selection
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        out = {}
        for f, logits in self(hidden).items():
            if selection == "argmax":
                out[f] = logits.argmax(-1)
                continue
            p = exploration_probs(logits, epsilon)
            flat = p.reshape(-1, p.shape[-1])
            out[f] = torch.multinomial(flat, 1, generator=generator).reshape(p.shape[:-1])
        return out

    def values(self, choices: dict, shape=None) -> dict:
        """Map bin indices to hyperparameter values; inactive factors get `config.fixed`.

        Indices of -1 (a finished row) map to the fixed value; `shape` is needed only when no factor is active.
        """
        if shape is None:
            if not choices:
                raise ValueError("values() needs `shape` when no factor is active")
            shape = next(iter(choices.values())).shape
        out = {}
        for f in FACTORS:
            table = getattr(self, f"_{f}_values")
            fixed = torch.full(shape, self.config.fixed[f], dtype=table.dtype, device=table.device)
            if f in choices:
                idx = choices[f].to(table.device)
                out[f] = torch.where(idx >= 0, table[idx.clamp(min=0)], fixed)
            else:
                out[f] = fixed
        return out

    # --- persistence: safetensors + JSON only, never pickle -------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights, then config.json with their digest (see `head_digest`). The hub mixin leaves a config.json
        written here alone; the digest sits beside the config fields, not in AdaptiveDecoderConfig, so a head's
        config (and everything that compares configs) is the same before and after a save."""
        super()._save_pretrained(save_directory)
        cfg = {**self.config.to_dict(), DIGEST_KEY: weights_digest(save_directory)}
        (Path(save_directory) / CONFIG_NAME).write_text(json.dumps(cfg, sort_keys=True, indent=2))

    def generate_model_card(self, *args, **kwargs):
        """The README.md that `save_pretrained` and `push_to_hub` write (`model_card.render_model_card`). The run's
        facts come as their `model_card_kwargs`: base_model_revision, reward, collection_size, results_table,
        repo_id; what is not given reads "not recorded"."""
        from huggingface_hub import ModelCard

        from .model_card import render_model_card

        return ModelCard(render_model_card(self.config, **kwargs))

    def push_to_hub(self, repo_id: str, *, model_card_kwargs: dict | None = None, **kwargs) -> str:
        """Upload the head (config.json with its digest, model.safetensors) and its model card to the Hub model repo
        `repo_id` in one commit; returns the commit URL. The repo is created if missing (`private=`, `token=`,
        `branch=`, `create_pr=`, `commit_message=` as in huggingface_hub's `ModelHubMixin.push_to_hub`).
        `model_card_kwargs`: the facts the card states (see `generate_model_card`;
        `adaptive_decoder.experiment.model_card.run_card_facts` reads them from a run directory)."""
        card = {"repo_id": repo_id, **(model_card_kwargs or {})}
        return super().push_to_hub(repo_id, model_card_kwargs=card, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision=None, cache_dir=None, force_download=False, proxies=None,
                         resume_download=None, local_files_only=False, token=None, map_location="cpu",
                         strict=True, **model_kwargs):
        from huggingface_hub import hf_hub_download
        from safetensors.torch import load_file

        if Path(model_id).is_dir():
            weights = Path(model_id) / WEIGHTS_NAME
            if not weights.exists():
                raise FileNotFoundError(f"{model_id} has no {WEIGHTS_NAME} "
                                        "(adaptive-decoder never loads pickled weights)")
        else:
            weights = Path(hf_hub_download(model_id, WEIGHTS_NAME, revision=revision, cache_dir=cache_dir,
                                           force_download=force_download, token=token,
                                           local_files_only=local_files_only))
        config = model_kwargs.get("config")
        if isinstance(config, dict):  # the mixin passes config.json as read; the digest is not a config field
            model_kwargs["config"] = {k: v for k, v in config.items() if k != DIGEST_KEY}
        # config.json next to the weights (a local directory, or the same Hub snapshot) holds the digest
        verify_weights(weights, recorded_digest(weights.parent / CONFIG_NAME))
        try:
            model = cls(**model_kwargs)
        except ValueError as e:  # name the checkpoint: the field error alone does not say which file is wrong
            raise ValueError(f"invalid head config in {model_id}: {e}") from e
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for truncated / garbage files
            raise ValueError(f"cannot read head weights {weights}: the file is corrupt or not safetensors ({e})") from e
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as e:
            raise ValueError(f"head weights {weights} do not match its config.json: {e}") from e
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a head from a directory saved by `save_pretrained`, or from a Hub repo id.

        A name that looks like a local path (`adaptive_decoder.paths.local_path`) but is not a directory fails
        with "directory not found: <path>"; the weights are checked against the digest in config.json.
        """
        missing = missing_local_dir(pretrained_model_name_or_path)
        if missing is not None:
            raise missing
        path = local_path(pretrained_model_name_or_path)
        if path is not None:  # expanded ("~/heads/x"), so the mixin, which does not expand, sees the directory
            pretrained_model_name_or_path = path
            cfg_file = path / CONFIG_NAME
            if not cfg_file.exists():
                raise FileNotFoundError(f"{path} has no config.json: not an AdaptiveDecoderHead checkpoint")
            try:
                json.loads(cfg_file.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"corrupt head config {cfg_file}: {e}") from e
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def check_compatible(self, model, strict_identity: bool = False, requested: str | None = None) -> None:
        """Raise a clear error if this head cannot sit on `model` (hidden size mismatch).

        A head trained on one LM reads another LM's hidden states as noise even when the sizes agree, so a
        different recorded base-model identity (`same_base_model`; `requested`: the name the model was asked for
        by) is a warning (an error with `strict_identity=True`).
        """
        hidden = model_hidden_size(model)
        name = getattr(model.config, "_name_or_path", None) or type(model).__name__
        if hidden != self.config.hidden_size:
            raise ValueError(
                f"head was built for base model {self.config.base_model!r} with hidden size {self.config.hidden_size}, "
                f"but {name!r} has hidden size {hidden}"
            )
        if not same_base_model(self.config.base_model, model, requested):
            msg = f"head was built for base model {self.config.base_model!r} but is attached to {name!r}"
            if strict_identity:
                raise ValueError(msg)
            logger.warning("%s (same hidden size %d, so it runs; its choices are probably meaningless)", msg, hidden)


def canonical_model_name(name: str) -> str:
    """Embedded short names ("smollm2") and their recorded identities compare equal."""
    return EMBEDDED[name]["identity"] if name in EMBEDDED else name


def same_base_model(recorded: str | None, model, requested: str | None = None) -> bool:
    """Whether `model` is the base LM a head records (`recorded`, its config's base_model) it was built for.

    The model is known by its `_name_or_path` and, when given, by the name it was requested as (`requested`: a
    local directory loads under its path, while the head may record the name it was built with); names compare
    after `canonical_model_name`. A head that records no base model matches any model.
    """
    if not recorded:
        return True
    have = getattr(model.config, "_name_or_path", None) or type(model).__name__
    return canonical_model_name(recorded) in {canonical_model_name(n) for n in (have, requested) if n}


def model_hidden_size(model) -> int:
    cfg = model.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    return int(cfg.hidden_size)


def build_head(options: dict, init_seed: int, model=None, head_path=None, agree: tuple = (),
               model_name: str | None = None) -> AdaptiveDecoderHead:
    """The head a collection or an LPO run starts from: the saved head at `head_path`, else a fresh one.

    A fresh head's config is `options` over what `model` (when given) says of itself: its hidden size, and its
    `_name_or_path` (else `model_name`, the name it was loaded by) as `base_model`, which is what later lets
    `same_base_model` refuse another LM. Its weights are drawn right after `torch.manual_seed(init_seed)`, so a
    seed stands for one initial head wherever the head is made. A saved head must agree with that fresh config on
    every key in `agree` (the keys that make a stored bin index mean the same bin), else ValueError.
    """
    fresh = None
    if head_path is None or agree:
        own = {} if model is None else {"hidden_size": model_hidden_size(model),
                                        "base_model": getattr(model.config, "_name_or_path", None) or model_name}
        fresh = AdaptiveDecoderConfig.from_dict({**own, **options})
    if head_path is not None:
        head = AdaptiveDecoderHead.from_pretrained(head_path)
        for k in agree:
            if getattr(head.config, k) != getattr(fresh, k):
                raise ValueError(f"head_path {head_path} has {k}={getattr(head.config, k)!r} but the pairs need "
                                 f"{getattr(fresh, k)!r}")
        return head
    torch.manual_seed(init_seed)
    return AdaptiveDecoderHead(fresh)
