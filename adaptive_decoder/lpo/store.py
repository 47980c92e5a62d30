"""A collection on disk: its identity (a collection must come from one base model, one head and one setting), the
manifest, checksummed shards, the crash-safe writer and the readers (`lpo.collection` describes the layout and
its guarantees)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..configs import Managed, as_mapping, check_backend, describe_changes
from ..modeling.noise import NOISE_VERSION
from ..storage import RecordKind, RunRecord, atomic_write_bytes
from ..tasks.identity import recorded_contents, unrecorded_contents

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CACHE_WHICH = ("extremes", "all", "none")


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
    `load` holds the loading options that change outputs (revision, attention kernel, quantization, remote code)
    that `load_base_model` left on the model ({} when all are at their default). LPO reloads the LM with them to
    recompute uncached head inputs.
    """
    from ..modeling.head import model_hidden_size
    from ..modeling.loading import LOAD_IDENTITY_ATTR
    from ..modeling.models import dtype_name

    out = {"name": getattr(model.config, "_name_or_path", "") or type(model).__name__,
           "hidden_size": model_hidden_size(model),
           "dtype": dtype_name(next(model.parameters()).dtype),
           "fingerprint": tensor_fingerprint(model.named_parameters()),
           "load": dict(getattr(model, LOAD_IDENTITY_ATTR, None) or {})}
    return out


def model_identity_diffs(stored: dict, model) -> list[str]:
    """What differs between a manifest's base-model identity and `model` (empty: the same model)."""
    return describe_changes({"base_model": stored}, {"base_model": model_identity(model)})


def head_identity(head) -> dict:
    return {"config": head.config.to_dict(), "fingerprint": tensor_fingerprint(head.state_dict().items())}


@dataclass
class CollectionSettings:
    """How samples are drawn and stored (library-level; `training/collect.py` fills it from YAML). The fields typed
    `Managed[...]` are the ones the experiment sets for every stage (one seed, generation length, chat setting and
    sampling backend for collection and evaluation alike; `adaptive_decoder.configs.Managed`)."""

    num_samples: int = field(default=8, metadata={"help": "Samples per prompt (the paper: best-vs-worst of N)."})
    max_new_tokens: Managed[int] = field(default=128, metadata={"help": "Default generation length (tasks may override)."})
    epsilon: float = field(default=0.0, metadata={
        "help": "Epsilon-uniform mix into the head's bin distribution, so every bin gets explored."})
    selection: str = field(default="sample", metadata={"help": "'sample' (exploration) or 'argmax'."})
    seed: Managed[int] = field(default=0, metadata={
        "help": "Base seed; each prompt batch derives its token and head seeds from it and its prompt ids."})
    prompts_per_batch: int = field(default=4, metadata={"help": (
        "Prompts per generate call (rows = this * num_samples). Fixed for a collection: a batch's seed and its "
        "prompts' padding depend on which prompts share it, so a resume must batch as the first run did.")})
    chat: Managed[bool | None] = field(default=None, metadata={
        "help": "Chat template: None = use it when the tokenizer has one."})
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
        "twins). Set it to the evaluation's num_samples - 1: a group reward depends on the group's size (distinct "
        "among 8 samples is harder than among 2; novelty, 1 - the max similarity to the others, falls with their "
        "number, fastest for low temperatures), and the experiment warns when the two differ.")})
    stop_when_scored: Managed[bool] = field(default=False, metadata={"help": (
        "Stop each sample once its task's scored text is final (the reward is a TaskReward whose task has a "
        "stop_predicate, e.g. the first line). Rewards are unchanged; the stored completions, token tables (and so "
        "response_logp) and a token-level head's per-step choices end there; either backend ends a row at the same "
        "token (`integrations.vllm.stops`).")})
    shard: Managed[str | None] = field(default=None, metadata={"help": (
        "'INDEX/COUNT': collect only the INDEX-th (from 0) of COUNT interleaved parts of the prompts, e.g. one per "
        "Slurm array task; merge the parts with `adaptive-decoder merge` (adaptive_decoder.lpo.shards).")})
    backend: Managed[str] = field(default="hf", metadata={"help": (
        "Where samples are drawn: 'hf' (transformers generate) or 'vllm' (a vLLM engine, "
        "adaptive_decoder.integrations.vllm.backend; head inputs and token tables still come from the HF model).")})
    vllm_options: dict | str | None = field(default=None, metadata={"help": (
        "backend 'vllm' only: VLLMEngine options {max_model_len, max_num_seqs, kv_cache_gib, block_size, "
        "prompts_per_call, share_prefix, in_process}, as the evaluation's (YAML/JSON text on the CLI). "
        "max_num_seqs defaults to a batch's rows (prompts_per_batch * num_samples * twins).")})

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
        self.vllm_options = as_mapping("vllm_options", self.vllm_options)
        check_backend(self.backend, self.vllm_options)
        if self.shard is not None:
            from .shards import parse_shard

            parse_shard(self.shard)
        if self.cache_budget_mb < 0:
            raise ValueError(f"cache_budget_mb must be >= 0, got {self.cache_budget_mb}")

    def identity(self) -> dict:
        # Settings that change the samples. The batch size does: its prompts are left-padded to the longest one,
        # which changes the LM's logits in the last bits (the seeds are per prompt and do not depend on the batch).
        # The cache budget does not. Every option at its value (`storage.record`): another backend or noise scheme
        # (`modeling.noise`) draws other samples for the same seeds, stop_when_scored ends the stored completions
        # earlier, and the shard says which part of the prompts this directory holds (another part is another
        # collection). vllm_options are not: they size the engine (memory, concurrency), and vLLM schedules a call's
        # rows by what fits at each step under any size, so they say nothing the seeds and backend do not.
        out = {k: getattr(self, k) for k in ("num_samples", "epsilon", "selection", "chat", "group_reward_twins",
                                             "prompts_per_batch", "backend", "stop_when_scored", "shard")}
        return {**out, "twins": int(self.twins), "noise_scheme": NOISE_VERSION}


class CollectionMismatchError(ValueError):
    """The collection directory was made with another base model / head / settings."""


# what a manifest of format 1 meant by leaving a setting out: its value before the setting existed
# (its noise scheme: the vLLM one it recorded as `vllm_noise`, else None for HF's batch-seeded draws; never this
# version's, so a format-1 collection is refused by name rather than extended with samples drawn another way)
_SETTINGS_ABSENT_IN_V1 = {"twins": 1, "backend": "hf", "noise_scheme": None, "stop_when_scored": False, "shard": None}
# what format 1 may lack and no value can stand in for: how the prompts were batched, and the dtype the base model ran
# in (`dtype: auto` resolved to bf16 or float32 by machine). Migrated as None: readable, and a resume is refused
_UNRECORDED_IN_V1 = (("settings", "prompts_per_batch"), ("base_model", "dtype"))


def _manifest_v1(m: dict) -> dict:
    """Format 1 -> 2: every setting recorded; the base model's loading options ({}: all at their default); the head
    config with the fields added since at their default; what no value can stand in for as None."""
    from ..modeling.head import AdaptiveDecoderConfig

    m["settings"] = {**json.loads(json.dumps(_SETTINGS_ABSENT_IN_V1)), **m["settings"]}
    if "vllm_noise" in m["settings"]:
        m["settings"]["noise_scheme"] = m["settings"].pop("vllm_noise")
    if isinstance(m.get("base_model"), dict):
        m["base_model"] = {"load": {}, **m["base_model"]}
    for part, key in _UNRECORDED_IN_V1:
        if isinstance(m.get(part), dict):
            m[part].setdefault(key, None)
    if isinstance(m.get("head"), dict) and isinstance(m["head"].get("config"), dict):
        m["head"]["config"] = AdaptiveDecoderConfig.from_dict(m["head"]["config"]).to_dict()
    return m


# the collection's run record: identity (base model, head, settings, tasks, task contents: None in format 2) and, as
# state, the shard list, the done prompts and the cache's size; the shards' integrity is `_read_shard`'s
COLLECTION = RecordKind(MANIFEST, "collection", version=3, migrations={1: _manifest_v1, 2: unrecorded_contents},
                        state=("shards", "done", "hidden_bytes", "prompts_expected", "merged_from"))
FORMAT_VERSION = COLLECTION.version


def read_manifest(root) -> dict:
    """The manifest of the collection in `root`, migrated to the current format."""
    m = RunRecord(root, COLLECTION).read()
    if m is None:
        raise FileNotFoundError(f"{root} is not a sample collection: no {MANIFEST} (run training/collect.py first)")
    return m


def collection_card_facts(root) -> dict:
    """What a head's model card states about the collection it was trained on (`modeling.model_card`): the reward
    per task, the collection's size, and the base model's revision when the manifest records one."""
    m = read_manifest(root)
    base = m.get("base_model") if isinstance(m.get("base_model"), dict) else {}
    return {"reward": {t: (spec or {}).get("reward") for t, spec in m["tasks"].items()},
            "collection_size": {"prompts": len(m["done"]), "samples_per_prompt": m["settings"]["num_samples"],
                                "tasks": len(m["tasks"])},
            "base_model_revision": base.get("revision")}


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
        self.record = RunRecord(self.root, COLLECTION)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        (self.root / "hidden").mkdir(parents=True, exist_ok=True)
        self._lock = self.record.lock()
        for tmp in list(self.root.glob("*.tmp")) + list(self.root.glob("*/*.tmp")):
            tmp.unlink()  # leftovers of a killed write
        if self.record.exists():
            self.manifest = read_manifest(self.root)
            self._check(identity)
            self._drop_damaged()
        else:
            self.manifest = {"format_version": FORMAT_VERSION, **identity, "shards": [], "done": [], "hidden_bytes": 0}
            self._save()
        self.done = set(self.manifest["done"])

    def _check(self, identity: dict):
        m = self.manifest
        unrecorded = [f"{part}.{key}" for part, key in _UNRECORDED_IN_V1 if (m.get(part) or {}).get(key) is None]
        if unrecorded:
            raise CollectionMismatchError(
                f"{self.root}: its manifest (format 1) does not record {' or '.join(unrecorded)}, so a resume cannot "
                "tell that it continues the same collection; collect into a new output_dir (its samples stay readable)")
        diffs = []
        for key in ("base_model", "head", "settings"):
            diffs += describe_changes({key: m.get(key)}, {key: identity[key]})
        for task, spec in identity["tasks"].items():  # new tasks may be added; existing ones must not change
            old = m["tasks"].get(task)
            if isinstance(old, dict) and "source" in old:  # no task renders a `source:` template: its prompts cannot be rebuilt
                raise CollectionMismatchError(
                    f"{self.root}: task {task!r} was collected from `source: {old['source']}`, which is gone, so its "
                    "prompts cannot be rebuilt to resume; collect into a new output_dir (its samples stay readable)")
            if task in m["tasks"]:
                diffs += describe_changes({"tasks": {task: m["tasks"][task]}}, {"tasks": {task: spec}})
        changed, m["task_contents"] = recorded_contents(m, identity, self.root)
        diffs += changed
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
        m = self.manifest
        self.record.write(self.record.identity(m), **{k: m[k] for k in COLLECTION.state if k in m})

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

    def expect(self, num_prompts: int) -> None:
        """Record how many prompts this directory is to hold, so that a merge can tell a finished part."""
        if self.manifest.get("prompts_expected") != num_prompts:
            self.manifest["prompts_expected"] = num_prompts
            self._save()

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
