"""Files for a small lm-eval run on SmolLM2 (docs/results.md, "lm-evaluation-harness"): a local task over 20 additions, heads,
and the base model as a float32 directory for `--model hf`.

    python examples/lmeval_add20.py --out runs/lmeval_add20

writes, under OUT:
  tasks/add20_gen.yaml   generate_until, greedy by the task's settings, scored on the last number of the answer;
  tasks/add20_mc.yaml    multiple choice between the sum and a near miss (log-likelihoods);
  add20.jsonl            the 20 questions (seeded);
  head_untrained/        a fresh head on SmolLM2 (default bins, token level, torch seed 0), as LPO starts from;
  head_greedy/           a head whose every choice is the greedy bin;
  smollm2_f32/           the embedded SmolLM2 as load_base_model dequantizes it, saved for `--model hf` (given the
                         GGUF file, transformers keeps its weights packed where the `kernels` package is installed,
                         which would compare two different models);
and prints the lm-eval commands.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, load_base_model

GEN = """task: add20_gen
{common}output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: 24
filter_list:
  - name: last_number
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
        group_select: -1
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
MC = """task: add20_mc
{common}output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/lmeval_add20")
    out = Path(ap.parse_args().out)
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    rows = []
    for _ in range(20):
        a, b = rng.randint(2, 49), rng.randint(2, 49)
        rows.append({"question": f"What is {a} + {b}? Answer with the number only.", "answer": str(a + b),
                     "choices": [str(a + b), str(a + b + rng.choice([-10, -2, -1, 1, 2, 10]))], "label": 0})
    data = out / "add20.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data.resolve()}\ntest_split: test\n"
    (out / "tasks" / "add20_gen.yaml").write_text(GEN.format(common=common))
    (out / "tasks" / "add20_mc.yaml").write_text(MC.format(common=common))

    model, tok = load_base_model("smollm2", dtype="float32")
    model.save_pretrained(out / "smollm2_f32")
    tok.save_pretrained(out / "smollm2_f32")
    cfg = {"hidden_size": model.config.hidden_size, "base_model": "smollm2"}
    torch.manual_seed(0)
    AdaptiveDecoderHead(AdaptiveDecoderConfig(**cfg)).save_pretrained(out / "head_untrained")
    greedy = AdaptiveDecoderHead(AdaptiveDecoderConfig(**cfg, num_layers=1))
    with torch.no_grad():
        for lin in greedy.outputs.values():
            lin.weight.zero_()
            lin.bias.zero_()
            lin.bias[0] = 100.0  # bin 0 of every factor: temperature 0 (greedy), top-p 1, top-k off
    greedy.save_pretrained(out / "head_greedy")

    run = (f"python -m adaptive_decoder.integrations.lmeval run --device cpu --batch_size 20 --limit 20 --log_samples "
           f"--include_path {out / 'tasks'}")
    print(f"{run} --model adaptive-decoder --model_args pretrained=smollm2,head={out / 'head_untrained'} "
          f"--tasks add20_gen,add20_mc --output_path {out / 'out_head'}")
    print(f"{run} --model hf --model_args pretrained={out / 'smollm2_f32'},dtype=float32 --apply_chat_template "
          f"--tasks add20_gen --output_path {out / 'out_hf_chat'}")
    print(f"{run} --model hf --model_args pretrained={out / 'smollm2_f32'},dtype=float32 "
          f"--tasks add20_mc --output_path {out / 'out_hf_plain'}")
    print(f"{run} --model adaptive-decoder --model_args pretrained=smollm2,head={out / 'head_greedy'} "
          f"--tasks add20_gen --output_path {out / 'out_greedy'}")


if __name__ == "__main__":
    main()
