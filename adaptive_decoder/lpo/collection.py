"""LPO sample collection: draw N samples per prompt with the head exploring, score them, store them crash-safely.

On-disk layout of a collection directory (append-only; nothing is ever rewritten except the manifest):

    manifest.json                   identity (base model, head, settings, tasks), shard list, done prompt ids
    shards/shard-00000.jsonl        one JSON line per sample; a shard holds whole prompt groups only
    hidden/shard-00000.safetensors  fp16 head inputs of the samples that can enter pairs ("<prompt_id>::<j>")

Crash safety: a shard (and its hidden-state file) is written to a temporary name, fsync'ed and renamed; only then
is the manifest (also tmp + rename) updated to list it and its prompts as done. A kill -9 at any point leaves
either the old manifest (the unlisted shard is ignored and rewritten on resume, with the same seeds) or the new
one, so a prompt's samples are never lost or duplicated. Readers only read shards the manifest lists.

Integrity: the manifest records each listed file's byte length and sha256. A file changed after its commit (a
torn last line from an interrupted copy, a truncated or edited file) no longer matches: readers refuse it naming
the file, and the next writer (rerunning the same collect command) unlists the shard and deletes its files,
so `collect` draws its prompts again, in the same batch with the same seed, i.e. the same samples.

The base LM is frozen, so the head's inputs never change: we keep them (fp16) for the samples that can enter
pairs while the byte budget lasts; `adaptive_decoder.lpo.pairs.PairDataset` recomputes the rest with one
teacher-forced forward pass (`adaptive_decoder.modeling.generation.compute_head_inputs`).
Every sample also keeps its token table (`adaptive_decoder.modeling.response_logps`): the LM's log P(y_t | tau) of its
own tokens under every temperature bin, [T, K] fp16 under "<prompt_id>::<j>::token_logps" in the same hidden
file (T*K*2 bytes, not counted against the hidden-state budget), and in its record the sums `response_logp`
(at the temperatures it was decoded with) and `lm_logp` (at temperature 1), for the joint and latent LPO losses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..configs import describe_changes
from ..modeling.generation import AdaptiveDecodingModel
from ..modeling.models import encode_prompts
from ..modeling.response_logps import response_log_prob, sample_token_log_probs, table_temperatures
from ..rewards import needs_group
from ..storage import atomic_write_bytes, lock_dir
from ..tasks.io import read_jsonl
from ..tasks.translation import LANGS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CACHE_WHICH = ("extremes", "all", "none")

# --------------------------------------------------------------------------------------------------------
# Prompt sources: source 'registry' takes an `adaptive_decoder.tasks` task's examples. The file formats beside it
# build their prompts with templates of their own, which differ from the registry tasks' (CommonGen's story
# length and part-of-speech stripping, GSM8K's instruction), so they stay: the collections and presets made with
# them keep their prompts. A prompt record: {"id", "task", "prompt", + the fields its reward reads: "answer" |
# "concepts" | "reference"}.
# --------------------------------------------------------------------------------------------------------

SOURCES = ("gsm8k", "commongen", "translation", "prompts", "arithmetic", "registry")
DEFAULT_TEMPLATES = {
    "gsm8k": "{question}\nSolve it step by step and write the final answer after '####'.",
    "commongen": "Write a short story of two or three sentences that uses all of these words: {concepts}.",
    "translation": "Translate the following text into {tgt_lang}. Reply with the translation only.\n\n{source}",
    "prompts": "{prompt}",
    "arithmetic": "What is {question}? Reply with the number only.",
}


@dataclass
class TaskSpec:
    """One task of a collection run, as written under `tasks:` in the collect YAML."""

    source: str = field(metadata={
        "help": f"Prompt source format: one of {SOURCES}; 'registry' = an adaptive_decoder.tasks task."})
    reward: dict | None = field(default=None, metadata={
        "help": "Reward spec for adaptive_decoder.rewards.build_reward (registry tasks default to the task's reward)."})
    path: str | None = field(default=None, metadata={"help": "JSONL file (not needed for 'arithmetic')."})
    num_prompts: int | None = field(default=None, metadata={"help": "Use the first N prompts (after offset); None = all."})
    offset: int = field(default=0, metadata={"help": "Skip this many records first."})
    template: str | None = field(default=None, metadata={
        "help": "Prompt template with {field} placeholders; default per source."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Per-task generation length (default: the run's)."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic 'arithmetic' source."})
    eval_task: str | None = field(default=None, metadata={
        "help": "source 'registry': the adaptive_decoder.tasks name (gsm8k, translation, ...)."})
    task_options: dict = field(default_factory=dict, metadata={
        "help": "source 'registry': options of that task (num_fewshot, template, ...)."})

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "TaskSpec":
        if not isinstance(d, dict):
            raise ValueError(f"task {name!r}: expected a mapping of options, got {d!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"task {name!r}: unknown key(s) {unknown}; valid: {valid}")
        if "source" not in d:
            raise ValueError(f"task {name!r}: missing required key 'source'")
        spec = cls(**d)
        if spec.source not in SOURCES:
            raise ValueError(f"task {name!r}: unknown source {spec.source!r}; valid: {list(SOURCES)}")
        if spec.source == "registry":
            if not spec.eval_task:
                raise ValueError(f"task {name!r}: source 'registry' needs eval_task: (e.g. gsm8k, constrained_writing)")
            if spec.template:
                raise ValueError(f"task {name!r}: registry tasks build their own prompts; set template under task_options")
            if spec.reward is None:  # the registry task's own reward, recorded explicitly in the manifest
                spec.reward = _registry_task(spec).reward_spec
        elif spec.eval_task or spec.task_options:
            raise ValueError(f"task {name!r}: eval_task / task_options only apply to source 'registry'")
        if spec.reward is None:
            raise ValueError(f"task {name!r}: missing required key 'reward'")
        if spec.source not in ("arithmetic", "registry") and not spec.path:
            raise ValueError(f"task {name!r}: source {spec.source!r} needs path: (a JSONL file)")
        if spec.source == "arithmetic" and not spec.num_prompts:
            raise ValueError(f"task {name!r}: the synthetic 'arithmetic' source needs num_prompts")
        return spec


def _need(rec: dict, key: str, where: str):
    if key not in rec:
        raise ValueError(f"{where}: record lacks field {key!r} (has {sorted(rec)})")
    return rec[key]


def _registry_task(spec: TaskSpec):
    from ..tasks import get_task

    return get_task(spec.eval_task, path=spec.path, **({"reward": spec.reward} if spec.reward else {}), **spec.task_options)


def load_task_prompts(name: str, spec: TaskSpec | dict) -> list[dict]:
    """Prompt records for one task. Ids are "<task>/<record index>" so they stay stable across runs."""
    if isinstance(spec, dict):
        spec = TaskSpec.from_dict(name, spec)
    out = []
    if spec.source == "registry":  # first num_prompts examples after offset, in file order
        exs = _registry_task(spec).examples()[spec.offset:]
        exs = exs if spec.num_prompts is None else exs[: spec.num_prompts]
        if not exs:
            raise ValueError(f"task {name!r}: no prompts (eval_task={spec.eval_task}, offset={spec.offset})")
        return [{**ex, "id": f"{name}/{ex['id']}", "task": name} for ex in exs]
    template = spec.template or DEFAULT_TEMPLATES[spec.source]
    if spec.source == "arithmetic":
        rng = random.Random(spec.seed)
        for i in range(spec.offset + spec.num_prompts):
            a, b = rng.randint(2, 60), rng.randint(2, 40)
            op = rng.choice("+-")
            if i < spec.offset:
                continue
            q = f"{a} {op} {b}"
            rec = {"question": q, "answer": f"#### {a + b if op == '+' else a - b}"}
            out.append({"id": f"{name}/{i}", "task": name, "prompt": template.format(**rec), "answer": rec["answer"]})
        return out
    rows = read_jsonl(spec.path, expected=f"one JSON object per line with the fields of source {spec.source!r}")[spec.offset:]
    if spec.num_prompts is not None:
        rows = rows[: spec.num_prompts]
    for k, (lineno, rec) in enumerate(rows):
        where, i = f"{spec.path}:{lineno}", spec.offset + k
        fields_ = dict(rec)
        ex = {"id": f"{name}/{i}", "task": name}
        if spec.source == "gsm8k":
            _need(rec, "question", where)
            ex["answer"] = _need(rec, "answer", where)
        elif spec.source == "commongen":
            if "concepts" in rec:
                concepts = list(rec["concepts"])
            else:  # CommonGen's "field_N#look_V#stand_V": drop the POS tags
                concepts = [c.split("_")[0] for c in str(_need(rec, "concept_set", where)).split("#")]
            ex["concepts"] = concepts
            fields_["concepts"] = ", ".join(concepts)
        elif spec.source == "translation":
            _need(rec, "source", where)
            ex["reference"] = _need(rec, "reference", where)
            fields_.setdefault("tgt_lang", "English")
            fields_["tgt_lang"] = LANGS.get(fields_["tgt_lang"], fields_["tgt_lang"])
        else:
            _need(rec, "prompt", where)
        try:
            ex["prompt"] = template.format(**fields_)
        except KeyError as e:
            raise ValueError(f"task {name!r}: template field {e} is not in the record at {where} (has {sorted(rec)})") from None
        out.append(ex)
    if not out:
        raise ValueError(f"task {name!r}: no prompts (path={spec.path}, offset={spec.offset}, num_prompts={spec.num_prompts})")
    return out


# --------------------------------------------------------------------------------------------------------
# Identity: a collection must come from one base model, one head and one setting.
# --------------------------------------------------------------------------------------------------------


def tensor_fingerprint(named_tensors) -> str:
    """Cheap content hash: names, shapes and the first 256 values of every tensor."""
    h = hashlib.sha256()
    for name, t in named_tensors:
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def model_identity(model) -> dict:
    """Name, hidden size, dtype and content fingerprint of a base LM (a cache from another model is refused).

    The dtype is the one the model actually runs in (what `dtype: auto` resolved to), so a resume under another
    one is refused by name: bf16 and fp32 samples of one prompt differ, and their cached hidden states too.
    """
    from ..modeling.head import model_hidden_size
    from ..modeling.models import dtype_name

    return {"name": getattr(model.config, "_name_or_path", "") or type(model).__name__,
            "hidden_size": model_hidden_size(model),
            "dtype": dtype_name(next(model.parameters()).dtype),
            "fingerprint": tensor_fingerprint(model.named_parameters())}


def model_identity_diffs(stored: dict, model) -> list[str]:
    """What differs between a manifest's base-model identity and `model` (empty: the same model).

    A manifest written before the dtype was recorded has none; its content fingerprint (taken from the weights as
    loaded, so in their dtype) still tells a differently cast model apart, so the missing field is not a change.
    """
    new = model_identity(model)
    if isinstance(stored, dict) and "dtype" not in stored:
        stored = {**stored, "dtype": new["dtype"]}
    return describe_changes({"base_model": stored}, {"base_model": new})


def head_identity(head) -> dict:
    return {"config": head.config.to_dict(), "fingerprint": tensor_fingerprint(head.state_dict().items())}


@dataclass
class CollectionSettings:
    """How samples are drawn and stored (library-level; `training/collect.py` fills it from YAML)."""

    num_samples: int = field(default=8, metadata={"help": "Samples per prompt (the paper: best-vs-worst of N)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Default generation length (tasks may override)."})
    epsilon: float = field(default=0.0, metadata={
        "help": "Epsilon-uniform mix into the head's bin distribution, so every bin gets explored."})
    selection: str = field(default="sample", metadata={"help": "'sample' (exploration) or 'argmax'."})
    seed: int = field(default=0, metadata={
        "help": "Base seed; each prompt batch derives its token and head seeds from it and its prompt ids."})
    prompts_per_batch: int = field(default=4, metadata={"help": (
        "Prompts per generate call (rows = this * num_samples). Fixed for a collection: a batch's seed and its "
        "prompts' padding depend on which prompts share it, so a resume must batch as the first run did.")})
    chat: bool | None = field(default=None, metadata={"help": "Chat template: None = use it when the tokenizer has one."})
    cache_budget_mb: float = field(default=512.0, metadata={
        "help": "Byte budget of the fp16 hidden-state cache; beyond it PairDataset recomputes."})
    cache_which: str = field(default="extremes", metadata={
        "help": f"Which samples to cache: {CACHE_WHICH}; 'extremes' = best and worst of each prompt (what best-vs-worst pairs "
                "use)."})
    group_reward_twins: bool = field(default=True, metadata={"help": (
        "Sequence level, with a reward that compares the samples of a prompt (novelty): score each sample against a "
        "twin drawn with the same decoding values, as the evaluation's k samples of one choice are, instead of "
        "against the other choices of the exploration pool. Costs one more generate call per batch.")})
    twins: int = field(default=1, metadata={"help": (
        "With group_reward_twins: how many twins each sample is scored among (the group is the sample plus its "
        "twins). Set it to the evaluation's num_samples - 1 when the group reward depends on the group size (e.g. "
        "distinct_valid: distinct among 8 samples is harder than among 2).")})
    backend: str = field(default="hf", metadata={"help": (
        "Where samples are drawn: 'hf' (transformers generate) or 'vllm' (a vLLM engine, "
        "adaptive_decoder.integrations.vllm.backend; head inputs and token tables still come from the HF model).")})

    def __post_init__(self):
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 to form preference pairs, got {self.num_samples}")
        if self.max_new_tokens < 1 or self.prompts_per_batch < 1:
            raise ValueError("max_new_tokens and prompts_per_batch must be >= 1")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        if self.selection not in ("sample", "argmax"):
            raise ValueError(f"selection must be 'sample' or 'argmax', got {self.selection!r}")
        if self.cache_which not in CACHE_WHICH:
            raise ValueError(f"cache_which must be one of {CACHE_WHICH}, got {self.cache_which!r}")
        if int(self.twins) != self.twins or self.twins < 1:
            raise ValueError(f"twins must be an integer >= 1, got {self.twins}")
        if self.backend not in ("hf", "vllm"):
            raise ValueError(f"backend must be 'hf' or 'vllm', got {self.backend!r}")
        if self.cache_budget_mb < 0:
            raise ValueError(f"cache_budget_mb must be >= 0, got {self.cache_budget_mb}")

    def identity(self) -> dict:
        # Settings that change the samples. The batch size does: a batch's token and head seeds come from its prompt
        # ids, and its prompts are left-padded to the longest one, which changes the LM's logits in the last bits,
        # so no per-prompt seeding could make a prompt's samples independent of its batch. The cache budget does not.
        out = {k: getattr(self, k) for k in ("num_samples", "epsilon", "selection", "chat", "group_reward_twins",
                                             "prompts_per_batch")}
        if self.twins != 1:  # left out at its default: collections made before the option stay valid
            out["twins"] = int(self.twins)
        if self.backend != "hf":  # the same way: another backend draws other samples for the same seeds
            out["backend"] = self.backend
        return out


class CollectionMismatchError(ValueError):
    """The collection directory was made with another base model / head / settings."""


def read_manifest(root) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a sample collection: no {MANIFEST} (run training/collect.py first)")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"corrupt collection manifest {path}: {e}") from e
    if m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {m.get('format_version')!r}, this library reads {FORMAT_VERSION}")
    return m


class DamagedShardError(ValueError):
    """A file the manifest lists is missing or is not the file that was committed (torn, truncated, altered)."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}; the collection is damaged: rerun the same collect command (same config "
                         "and output_dir) to repair it, it recollects the prompts of that shard")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shard_files(root: Path, name: str) -> tuple[Path, Path]:
    return root / "shards" / f"{name}.jsonl", root / "hidden" / f"{name}.safetensors"


def _verified_bytes(path: Path, nbytes: int | None, sha: str | None) -> bytes:
    """The file's bytes if they are the ones the manifest recorded (manifests written before the digests were
    kept have none: only the parse below can catch damage there)."""
    if not path.is_file():
        raise DamagedShardError(path, "listed in the manifest but missing")
    raw = path.read_bytes()
    if nbytes is not None and len(raw) != nbytes:
        raise DamagedShardError(path, f"{len(raw)} bytes, the manifest recorded {nbytes}")
    if sha is not None and _sha256(raw) != sha:
        raise DamagedShardError(path, "its content differs from the checksum in the manifest")
    return raw


def _parse_shard(path: Path, raw: bytes, num_records: int) -> list[dict]:
    rows = []
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:  # JSONDecodeError, or a multi-byte character cut in half
            raise DamagedShardError(path, f"line {lineno} is not valid JSON ({e})") from None
    if len(rows) != num_records:
        raise DamagedShardError(path, f"{len(rows)} records, the manifest says {num_records}")
    return rows


def _read_shard(root: Path, shard: dict, hidden_checksum: bool) -> list[dict]:
    """Records of one listed shard, verified; its hidden-state file is checked by checksum or (cheaply, for
    readers that only open the tensors they need) by size."""
    path, hidden = _shard_files(root, shard["name"])
    rows = _parse_shard(path, _verified_bytes(path, shard.get("bytes"), shard.get("sha256")), shard["num_records"])
    if shard["hidden"]:
        if hidden_checksum:
            _verified_bytes(hidden, shard.get("hidden_file_bytes"), shard.get("hidden_sha256"))
        elif not hidden.is_file():
            raise DamagedShardError(hidden, "listed in the manifest but missing")
        elif shard.get("hidden_file_bytes") not in (None, hidden.stat().st_size):
            raise DamagedShardError(hidden, f"{hidden.stat().st_size} bytes, the manifest recorded {shard['hidden_file_bytes']}")
    return rows


class CollectionWriter:
    """Append whole prompt groups to a collection directory, atomically; refuses a mismatched directory and
    unlists damaged shards on open (their prompts are then not done, so `collect` draws them again)."""

    def __init__(self, root, identity: dict):
        self.root = Path(root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        (self.root / "hidden").mkdir(parents=True, exist_ok=True)
        self._lock = lock_dir(self.root, "collection")
        for tmp in list(self.root.glob("*.tmp")) + list(self.root.glob("*/*.tmp")):
            tmp.unlink()  # leftovers of a killed write
        if (self.root / MANIFEST).exists():
            self.manifest = read_manifest(self.root)
            self._check(identity)
            self._drop_damaged()
        else:
            self.manifest = {"format_version": FORMAT_VERSION, **identity, "shards": [], "done": [], "hidden_bytes": 0}
            self._save()
        self.done = set(self.manifest["done"])

    def _check(self, identity: dict):
        m = self.manifest
        if "prompts_per_batch" not in m["settings"]:  # written before the batch size was part of the identity
            logger.warning("%s does not record prompts_per_batch; resuming with %d, which can only reproduce an "
                           "uninterrupted run if the first run used it too", self.root, identity["settings"]["prompts_per_batch"])
            m["settings"]["prompts_per_batch"] = identity["settings"]["prompts_per_batch"]
        diffs = []
        if isinstance(m.get("base_model"), dict) and "dtype" not in m["base_model"]:
            # written before the dtype was part of the identity: see model_identity_diffs
            m["base_model"]["dtype"] = identity["base_model"]["dtype"]
        if isinstance(m.get("head"), dict) and isinstance(m["head"].get("config"), dict):
            # written before a head-config field existed (min_p_bins, fixed.min_p): compare it with its defaults
            from ..modeling.head import AdaptiveDecoderConfig

            m["head"]["config"] = AdaptiveDecoderConfig.from_dict(m["head"]["config"]).to_dict()
        for key in ("base_model", "head", "settings"):
            diffs += describe_changes({key: m.get(key)}, {key: identity[key]})
        for task, spec in identity["tasks"].items():  # new tasks may be added; existing ones must not change
            if task in m["tasks"]:
                diffs += describe_changes({"tasks": {task: m["tasks"][task]}}, {"tasks": {task: spec}})
        if diffs:
            raise CollectionMismatchError(
                f"{self.root} holds samples from a different setup, refusing to mix them:\n  " + "\n  ".join(diffs)
                + "\nUse a new output_dir (or restore the original base model / head / settings to resume).")
        m["tasks"].update(identity["tasks"])

    def _drop_damaged(self):
        damaged = []
        for shard in self.manifest["shards"]:
            try:
                _read_shard(self.root, shard, hidden_checksum=True)
            except DamagedShardError as e:
                logger.warning("%s: %s; recollecting its %d prompt(s)", e.path, e.problem, len(shard["prompt_ids"]))
                damaged.append(shard)
        if not damaged:
            return
        m, lost = self.manifest, {pid for sh in damaged for pid in sh["prompt_ids"]}
        m["shards"] = [sh for sh in m["shards"] if sh not in damaged]
        m["done"] = [pid for pid in m["done"] if pid not in lost]
        m["hidden_bytes"] -= sum(sh["hidden_bytes"] for sh in damaged)
        self._save()  # unlisted before deleted: a kill in between leaves only ignored files
        for sh in damaged:
            for path in _shard_files(self.root, sh["name"]):
                path.unlink(missing_ok=True)

    def _next_name(self) -> str:
        # after the max, not the count: a shard dropped as damaged leaves a gap, and its successors stay listed
        used = [int(sh["name"].rsplit("-", 1)[1]) for sh in self.manifest["shards"]]
        return f"shard-{max(used, default=-1) + 1:05d}"

    def _save(self):
        atomic_write_bytes(self.root / MANIFEST, json.dumps(self.manifest, indent=1).encode())

    def write_group(self, records: list[dict], hidden: dict[str, torch.Tensor]):
        """Write one shard holding every sample of some prompts, then mark those prompts done."""
        from safetensors.torch import save

        ids = list(dict.fromkeys(r["prompt_id"] for r in records))
        again = [i for i in ids if i in self.done]
        if again:
            raise ValueError(f"prompts {again[:5]} are already in {self.root}; refusing to duplicate their samples")
        name = self._next_name()
        shard_path, hidden_path = _shard_files(self.root, name)
        lines = "".join(json.dumps(r) + "\n" for r in records).encode()
        atomic_write_bytes(shard_path, lines)
        task_of = {r["prompt_id"]: r["task"] for r in records}
        entry = {"name": name, "prompt_ids": ids, "prompt_tasks": [task_of[i] for i in ids], "num_records": len(records),
                 "bytes": len(lines), "sha256": _sha256(lines), "hidden": bool(hidden), "hidden_bytes": 0}
        if hidden:
            blob = save({k: v.contiguous() for k, v in hidden.items()})
            atomic_write_bytes(hidden_path, blob)
            # the budget counts hidden states only; token tables ride along (the file's sha covers both)
            entry.update(hidden_bytes=sum(v.numel() * v.element_size() for k, v in hidden.items()
                                          if not k.endswith("::token_logps")),
                         hidden_file_bytes=len(blob), hidden_sha256=_sha256(blob))
        self.manifest["shards"].append(entry)
        self.manifest["done"].extend(ids)
        self.manifest["hidden_bytes"] += entry["hidden_bytes"]
        self._save()  # the commit point
        self.done.update(ids)

    def close(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def read_collection(root) -> tuple[dict, list[dict]]:
    """(manifest, sample records of every shard the manifest lists). Unlisted (half-written) shards are ignored;
    a listed one that is not what was committed raises DamagedShardError, naming the file and the repair."""
    root = Path(root)
    m = read_manifest(root)
    records, seen = [], set()
    for shard in m["shards"]:
        rows = _read_shard(root, shard, hidden_checksum=False)
        for r in rows:
            key = (r["prompt_id"], r["sample_index"])
            if key in seen:
                raise ValueError(f"duplicated sample {key} in {root}")
            seen.add(key)
            r["shard"] = shard["name"]
        records.extend(rows)
    return m, records


def hidden_key(prompt_id: str, sample_index: int) -> str:
    return f"{prompt_id}::{sample_index}"


def token_logps_key(prompt_id: str, sample_index: int) -> str:
    return f"{hidden_key(prompt_id, sample_index)}::token_logps"


# --------------------------------------------------------------------------------------------------------
# Collection loop
# --------------------------------------------------------------------------------------------------------


def _batch_seed(seed: int, prompt_ids: list[str]) -> int:
    h = hashlib.sha256(f"{seed}|{'|'.join(prompt_ids)}".encode()).digest()
    return int.from_bytes(h[:7], "little")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _to_cache(totals: list[float], which: str) -> list[int]:
    """Indices (within a prompt group) of the samples whose hidden states we keep."""
    if which == "none":
        return []
    if which == "all":
        return list(range(len(totals)))
    ok = [t for t in totals if _finite(t)]
    if not ok:
        return []
    hi, lo = max(ok), min(ok)
    return [j for j, t in enumerate(totals) if _finite(t) and t in (hi, lo)]


def _jsonable(v):
    return v.item() if v.dim() == 0 else v.tolist()


def collect(adm: AdaptiveDecodingModel, prompts: list[dict], rewards: dict, output_dir, settings: CollectionSettings,
            task_specs: dict | None = None, progress: bool = True) -> dict:
    """Collect `settings.num_samples` scored samples for every prompt not yet done in `output_dir`.

    prompts: records {"id", "task", "prompt", ...reward fields}; rewards: {task: CompositeReward};
    task_specs: {task: TaskSpec or dict} (stored in the manifest; per-task max_new_tokens). Resumable: prompts
    already in the manifest are skipped. Returns a summary dict (counts, wall time is the caller's business).
    """
    from tqdm.auto import tqdm

    if adm.head is None:
        raise ValueError("collection samples latent choices from a head: attach one (AdaptiveDecodingModel(..., head=))")
    if adm.tokenizer is None:
        raise ValueError("collection needs the tokenizer (AdaptiveDecodingModel(model, tokenizer, head))")
    if getattr(adm, "backend", "hf") != settings.backend:
        raise ValueError(f"settings.backend is {settings.backend!r} but the decoding model samples with "
                         f"{getattr(adm, 'backend', 'hf')!r}")
    ids = [p["id"] for p in prompts]
    dup = sorted(i for i, c in Counter(ids).items() if c > 1)
    if dup:
        raise ValueError(f"duplicated prompt ids {dup[:5]}")
    missing = sorted({p["task"] for p in prompts} - set(rewards))
    if missing:
        raise ValueError(f"no reward configured for task(s) {missing}")
    specs = {t: (asdict(s) if not isinstance(s, dict) else dict(s)) for t, s in (task_specs or {}).items()}
    for t in {p["task"] for p in prompts}:
        specs.setdefault(t, {})
    identity = {"base_model": model_identity(adm.model), "head": head_identity(adm.head),
                "settings": settings.identity(), "tasks": specs}
    writer = CollectionWriter(output_dir, identity)
    budget = int(settings.cache_budget_mb * 2**20)
    todo = [p for p in prompts if p["id"] not in writer.done]
    summary = {"prompts_total": len(prompts), "prompts_already_done": len(prompts) - len(todo), "prompts_collected": 0,
               "samples_collected": 0, "nonfinite_rewards": 0, "samples_cached": 0, "samples_not_cached_budget": 0}

    batches = []
    for task in dict.fromkeys(p["task"] for p in todo):  # batch within a task: one reward, one length
        group = [p for p in todo if p["task"] == task]
        batches += [group[i : i + settings.prompts_per_batch] for i in range(0, len(group), settings.prompts_per_batch)]
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc="collect", unit="prompt", disable=not progress)
    try:
        for batch in batches:
            task = batch[0]["task"]
            records, hidden, totals = _sample_batch(adm, batch, rewards[task], specs[task], settings, writer, budget, summary)
            writer.write_group(records, hidden)
            summary["prompts_collected"] += len(batch)
            summary["samples_collected"] += len(records)
            bar.update(len(batch))
            finite = [x for x in totals if math.isfinite(x)]
            bar.set_postfix(task=task, mean_reward=f"{sum(finite) / max(1, len(finite)):.3f}")
    finally:
        bar.close()
        writer.close()
    summary["hidden_bytes"] = writer.manifest["hidden_bytes"]
    return summary


def _sample_batch(adm, batch, reward, spec, settings, writer, budget, summary):
    """Generate num_samples per prompt of one single-task batch, score them, pick what to cache."""
    n, level = settings.num_samples, adm.head.config.level
    seed = _batch_seed(settings.seed, [p["id"] for p in batch])  # same prompts -> same samples after a resume
    enc = encode_prompts(adm.tokenizer, [p["prompt"] for p in batch], chat=settings.chat).to(adm.model.device)
    torch.manual_seed(seed)
    out = adm.generate(enc["input_ids"], enc["attention_mask"],
                       max_new_tokens=spec.get("max_new_tokens") or settings.max_new_tokens,
                       num_return_sequences=n, selection=settings.selection, epsilon=settings.epsilon, head_seed=seed,
                       return_head_inputs=True)
    scores = _score(adm, enc, out, batch, reward, spec, settings, seed)
    temps = table_temperatures(adm.head.config)
    full_mask = torch.cat([enc["attention_mask"].repeat_interleave(n, 0), torch.ones_like(out.step_mask, dtype=torch.long)], 1)
    # one more column at temperature 1: the LM's own likelihood, the joint loss's reference (see lpo.joint_loss)
    tables = sample_token_log_probs(adm.model, out.sequences, full_mask, out.prompt_length, temps + [1.0],
                                    out.step_mask).cpu()
    records, hidden = [], {}
    used = writer.manifest["hidden_bytes"]
    for i, p in enumerate(batch):
        prompt_ids = enc["input_ids"][i][enc["attention_mask"][i].bool()].tolist()
        rows = range(i * n, (i + 1) * n)
        keep = set(_to_cache([scores["total"][r] for r in rows], settings.cache_which))
        for j, r in enumerate(rows):
            t = len(out.completion_ids[r])
            choices = {f: _jsonable(c[r] if level == "sequence" else c[r, :t]) for f, c in out.choices.items()}
            values = {k: _jsonable(v[r, 0] if level == "sequence" else v[r, :t]) for k, v in out.values.items()}
            cached = False
            if j in keep:
                h = (out.head_inputs[r] if level == "sequence" else out.head_inputs[r, :t]).to(torch.float16)
                size = h.numel() * h.element_size()
                if used + size <= budget:
                    hidden[hidden_key(p["id"], j)] = h
                    used += size
                    cached = True
                    summary["samples_cached"] += 1
                else:
                    summary["samples_not_cached_budget"] += 1
            table = tables[r, :t]
            hidden[token_logps_key(p["id"], j)] = table[:, :-1].to(torch.float16)
            t_choice = choices.get("temperature")
            logps = {"response_logp": float(response_log_prob(table[:, :-1], t_choice)),
                     "lm_logp": float(table[:, -1].sum()), "logp_temperatures": temps}
            rew = {k: float(v[r]) for k, v in scores.items()}
            summary["nonfinite_rewards"] += not math.isfinite(rew["total"])
            records.append({"prompt_id": p["id"], "task": p["task"], "sample_index": j, "prompt": p["prompt"],
                            "prompt_ids": prompt_ids, "completion": out.texts[r], "completion_ids": out.completion_ids[r],
                            "choices": choices, "values": values, "rewards": rew, "cached": cached, "seed": seed, **logps})
    return records, hidden, scores["total"]


def _score(adm, enc, out, batch, reward, spec, settings, seed) -> dict:
    """Reward components of every row. A group reward (e.g. novelty) compares the samples of a prompt, and its
    value depends on who else is in the group. In this pool the rows of a prompt use different decoding values,
    so a lone greedy sample looks novel next to sampled ones; at evaluation a sequence-level head decodes all k
    samples of a prompt with its one choice, and k greedy samples are identical. With `group_reward_twins`, each
    row is scored in a group of 1 + `twins`: itself and twins generated with the same values (the twins are
    scored, not kept)."""
    n = settings.num_samples
    examples = [p for p in batch for _ in range(n)]
    if not (settings.group_reward_twins and adm.head.config.level == "sequence" and needs_group(reward)):
        return reward.score_components(out.texts, examples)
    m = int(settings.twins)
    torch.manual_seed(seed ^ 0x7717)
    # from the head's [n] choices: out.values is per step, NaN where a row produced no token
    force = {k: v.repeat_interleave(m, 0) for k, v in adm.head.values(out.choices, shape=(len(examples),)).items()}
    twin = adm.generate(enc["input_ids"].repeat_interleave(n * m, 0), enc["attention_mask"].repeat_interleave(n * m, 0),
                        max_new_tokens=spec.get("max_new_tokens") or settings.max_new_tokens, force=force)
    keyed = [{**e, "id": f"{e['id']}#{r}"} for r, e in enumerate(examples)]
    twin_keyed = [k for k in keyed for _ in range(m)]  # twin rows r*m .. r*m+m-1 belong to row r
    scores = reward.score_components(out.texts + twin.texts, keyed + twin_keyed)
    return {k: v[: len(out.texts)] for k, v in scores.items()}
