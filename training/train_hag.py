"""Instruction-tune an LM to write its own decoding config (HAG) with TRL's SFTTrainer, full or LoRA.

    python training/train_hag.py --config configs/hag/sft_smollm2_lora.yaml [--max_steps 50 ...]

Data: the sft.jsonl written by training/build_hag_data.py (conversational prompt -> config line; the loss covers
the config line only). A tokenizer without a chat template gets the same examples as plain text
(prompt, "\\n" + config line), which is how HAGPolicy prompts such a model.

Outputs in output_dir (SFTConfig.output_dir):
    adapter/   LoRA adapter (use_lora) + tokenizer + hag_training.json (records the base model)
    merged/    the base model with the adapter merged in (merge_lora), or the fully fine-tuned model
    hag_eval.json   held-out config accuracy and parse-failure rate (eval_fraction > 0)
Use it in evaluation with method "hag" and method_options {hag: {model_path: <output_dir>/merged}} (or the
adapter dir: HAGPolicy loads the recorded base model and merges the adapter itself).
An unknown YAML key or CLI flag is an error naming it. wandb logs offline (WANDB_MODE=offline by default).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from trl import SFTConfig, SFTTrainer  # noqa: E402

from adaptive_decoder.configs import parse_recipe_config, run_recipe  # noqa: E402
from adaptive_decoder.hag.policy import HAGPolicy, parse_config  # noqa: E402
from adaptive_decoder.modeling.model_args import ModelArguments  # noqa: E402
from adaptive_decoder.modeling.models import has_chat_template  # noqa: E402

logger = logging.getLogger("train_hag")


@dataclass
class HAGTrainArguments(ModelArguments):
    dataset_path: str = field(default=None, metadata={"help": "sft.jsonl from build_hag_data.py (or its output directory)."})
    use_lora: bool = field(default=True, metadata={"help": "LoRA via peft (True) or full fine-tuning (False)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "Module names that get LoRA adapters."})
    merge_lora: bool = field(default=True, metadata={"help": "Also save the merged model to output_dir/merged."})
    eval_fraction: float = field(default=0.0, metadata={
        "help": "Held-out share of prompts: eval loss + config accuracy after training."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the train/held-out split."})

    def __post_init__(self):
        # the Trainer places the model (SFTConfig: use_cpu, the launcher's devices); a device here would be ignored
        if self.device is not None:
            raise ValueError(f"device is not an option of the HAG SFT recipe (got {self.device!r}): the Trainer places the "
                             "model; use SFTConfig's --use_cpu or the launcher's device selection")
        super().__post_init__()  # dtype: float32 keeps full-precision weight updates
        if not self.dataset_path:
            raise ValueError("dataset_path is required (sft.jsonl written by training/build_hag_data.py)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        quant = "load_in_4bit" if self.load_in_4bit else "load_in_8bit" if self.load_in_8bit else None
        if quant and not self.use_lora:  # bitsandbytes weights take no gradient: only adapters train on them
            raise ValueError(f"{quant} trains LoRA adapters only (QLoRA); set use_lora: true or drop {quant}")
        if quant and self.merge_lora:  # merging rounds the adapter into the quantized weights
            raise ValueError(f"merge_lora cannot merge into {quant} weights; set merge_lora: false (the adapter "
                             "loads onto the base model for evaluation)")


@dataclass
class _SFTOptions(SFTConfig):
    """TRL's SFTConfig; the group name puts its ~400 options after this recipe's own in --help. Its
    `trust_remote_code` is not a flag of its own: the recipe loads the model and the tokenizer (ModelArguments'
    `trust_remote_code`, one flag for both), and `main` copies that value here."""

    _argument_group_name = "TRL SFTConfig / transformers TrainingArguments options (see TRL's SFTTrainer docs)"
    trust_remote_code: bool = field(default=False, init=False)  # init=False: the argument parser skips it


def load_sft(path: str):
    """sft.jsonl (or the directory build_hag_data.py wrote it to) as a `datasets.Dataset`, read by datasets' own
    JSON loader; every row needs conversational 'prompt' and 'completion' message lists."""
    import datasets

    p = Path(path)
    if p.is_dir():
        p = p / "sft.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"HAG SFT data {p} not found; build it with training/build_hag_data.py")
    if not p.read_text(encoding="utf-8").strip():
        raise ValueError(f"{p} holds no examples (were all prompts tied? see summary.json)")
    try:
        ds = datasets.load_dataset("json", data_files=str(p), split="train")
    except datasets.exceptions.DatasetGenerationError as e:
        raise ValueError(f"{p}: not a JSONL file of SFT examples ({e.__cause__ or e})") from None
    if not all(isinstance(ds.features.get(c), datasets.List) for c in ("prompt", "completion")):
        raise ValueError(f"{p}: expected conversational 'prompt' and 'completion' message lists, got columns {ds.features}")
    return ds


def to_trl(rows, chat: bool):
    """Only the columns TRL needs; plain-text prompt/completion when the tokenizer has no chat template."""
    if chat:
        return rows.select_columns(["prompt", "completion"])
    return rows.map(lambda r: {"prompt": r["prompt"][-1]["content"], "completion": "\n" + r["completion"][-1]["content"]},
                    remove_columns=rows.column_names)


def split_rows(rows, fraction: float, seed: int):
    """(train, held-out) rows: the held-out ones are the first round(fraction * n) (at least one when fraction > 0)
    of a `random.Random(seed)` shuffle; the train rows keep their file order. (datasets' train_test_split would
    hold out other rows for the same split_seed, and so train another model.)"""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    n_eval = int(round(fraction * len(rows)))
    if fraction > 0 and n_eval == 0:
        n_eval = 1
    if n_eval >= len(rows):
        raise ValueError(f"eval_fraction={fraction} leaves no training example out of {len(rows)}")
    held = set(idx[:n_eval])
    return (rows.select([i for i in range(len(rows)) if i not in held]),
            rows.select([i for i in range(len(rows)) if i in held]))


def config_accuracy(model, tok, rows) -> dict:
    """Greedy stage 1 of HAGPolicy on held-out prompts: parse-failure rate and agreement with the search's config."""
    from adaptive_decoder.modeling.generation import AdaptiveDecodingModel

    pol = HAGPolicy(model=model, tokenizer=tok)
    prompts = [r.get("task_prompt") or r["prompt"][-1]["content"].split("Request:\n", 1)[-1] for r in rows]
    adm = AdaptiveDecodingModel(model, tok)
    got = []
    for s in range(0, len(prompts), 8):
        got += pol.propose(adm, prompts[s:s + 8])
    want = [parse_config(r["completion"][-1]["content"]).config for r in rows]
    exact = sum(g.config == w for (_, g), w in zip(got, want))
    temp = sum(g.config["temperature"] == w["temperature"] for (_, g), w in zip(got, want))
    return {"held_out": len(rows), "exact_config": exact / len(rows), "temperature_match": temp / len(rows),
            "parse": pol.stats.to_dict(), "examples": [{"wrote": t, "target": r["completion"][-1]["content"]}
                                                       for (t, _), r in list(zip(got, rows))[:5]]}


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args, sft_cfg = parse_recipe_config((HAGTrainArguments, _SFTOptions), argv, __doc__)
    sft_cfg.trust_remote_code = args.trust_remote_code
    args.set_threads()
    out = Path(sft_cfg.output_dir)
    os.environ.setdefault("WANDB_DIR", str(out))
    rows = load_sft(args.dataset_path)
    train_rows, eval_rows = split_rows(rows, args.eval_fraction, args.split_seed)
    model, tok = args.load()
    chat = has_chat_template(tok)
    model.train()
    peft_config = None
    if args.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                                 target_modules=list(args.lora_target_modules), task_type="CAUSAL_LM")
    else:
        model.requires_grad_(True)  # load_base_model returns a frozen model
    train_ds = to_trl(train_rows, chat)
    eval_ds = to_trl(eval_rows, chat) if len(eval_rows) else None
    if eval_ds is None and sft_cfg.eval_strategy != "no":
        sft_cfg.eval_strategy = "no"
    trainer = SFTTrainer(model=model, args=sft_cfg, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=tok, peft_config=peft_config)
    # requeued Slurm jobs pass the newest checkpoint-N here (slurm/train_hag.sbatch)
    result = trainer.train(resume_from_checkpoint=sft_cfg.resume_from_checkpoint)
    meta = {"base_model": args.model, "use_lora": args.use_lora, "train_examples": len(train_rows),
            "held_out": len(eval_rows), "dataset_path": args.dataset_path, "chat_template": chat,
            "train_loss": result.training_loss, "steps": result.global_step, "args": asdict(args),
            "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None)}
    final = trainer.model
    if args.use_lora:
        trainer.save_model(str(out / "adapter"))
        tok.save_pretrained(out / "adapter")
        (out / "adapter" / "hag_training.json").write_text(json.dumps(meta, indent=2))
        if args.merge_lora:
            final = trainer.model.merge_and_unload()
    if not args.use_lora or args.merge_lora:
        final.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
        (out / "merged" / "hag_training.json").write_text(json.dumps(meta, indent=2))
    if len(eval_rows):
        if eval_ds is not None:
            meta["eval_loss"] = trainer.evaluate().get("eval_loss")
        final.eval()
        meta["held_out_eval"] = config_accuracy(final, tok, eval_rows)
        (out / "hag_eval.json").write_text(json.dumps(meta["held_out_eval"], indent=2))
    (out / "hag_training.json").write_text(json.dumps(meta, indent=2))
    logger.info("HAG SFT: %d examples, %d steps, train loss %.4f -> %s", len(train_rows), result.global_step,
                result.training_loss, out)
    return meta


if __name__ == "__main__":
    run_recipe(main)
