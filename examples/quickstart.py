"""Quickstart: attach an (untrained or saved) AdaptiveDecoder head to SmolLM2-135M-Instruct and generate.

    python examples/quickstart.py                       # untrained head, token level
    python examples/quickstart.py --level sequence --head runs/control/seed-0/train-sequence/head

Each answer is printed with the temperature / top-p / top-k the head chose (sequence level: one choice;
token level: the most frequent choice and the mean temperature over the answer's tokens).
"""

import argparse
import time
from pathlib import Path
from collections import Counter

import torch

from adaptive_decoder import AdaptiveDecoderConfig, AdaptiveDecoderHead, AdaptiveDecodingModel, load_base_model

PROMPTS = [
    "What is 17 + 25? Answer with just the number.",
    "Translate to German: The weather is nice today.",
    "Write a two-sentence story that uses the words: dog, river, lantern.",
    "Give me a creative name for a coffee shop run by cats.",
]


def describe(out, row: int, level: str) -> str:
    v = out.values
    if level == "sequence":
        return f"T={v['temperature'][row, 0]:.1f} top_p={v['top_p'][row, 0]:.2f} top_k={int(v['top_k'][row, 0])}"
    m = out.step_mask[row]
    combos = Counter(zip(v["temperature"][row][m].tolist(), v["top_p"][row][m].tolist(), v["top_k"][row][m].tolist()))
    (t, p, k), n = combos.most_common(1)[0]
    mean_t = v["temperature"][row][m].mean().item()
    return f"mostly T={t:.1f} top_p={p:.2f} top_k={int(k)} ({n}/{int(m.sum())} tokens), mean T={mean_t:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--model", default="smollm2", help="embedded name (smollm2, gemma3), HF id or local dir")
    ap.add_argument("--head", default=None, help="saved head directory (default: a fresh untrained head)")
    ap.add_argument("--level", choices=["token", "sequence"], default="token")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("prompts", nargs="*", help="prompts (default: four built-in ones)")
    args = ap.parse_args()
    if args.head and not Path(args.head).is_dir():  # before the model load, not after it
        ap.error(f"--head: directory not found: {args.head} (`make demo` writes runs/control/seed-0/train-sequence/head)")

    t0 = time.perf_counter()
    model, tok = load_base_model(args.model)
    print(f"loaded {model.config._name_or_path} in {time.perf_counter() - t0:.1f}s")
    if args.head:
        head = AdaptiveDecoderHead.from_pretrained(args.head)
        head.check_compatible(model)
    else:
        torch.manual_seed(args.seed)
        head = AdaptiveDecoderHead(AdaptiveDecoderConfig(hidden_size=model.config.hidden_size, base_model=args.model,
                                                         level=args.level))
        print("using an UNTRAINED head (random choices); train one with LPO to make them meaningful")
    adm = AdaptiveDecodingModel(model, tok, head)
    prompts = args.prompts or PROMPTS
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    out = adm.generate_text(prompts, max_new_tokens=args.max_new_tokens)
    dt = time.perf_counter() - t0
    for i, (p, text) in enumerate(zip(prompts, out.texts)):
        print(f"\n### {p}\n[{describe(out, i, head.config.level)}]\n{text.strip()}")
    n_tok = int(out.step_mask.sum())
    print(f"\n{n_tok} tokens in {dt:.1f}s ({n_tok / dt:.0f} tokens/s, batch {len(prompts)}, CPU threads "
          f"{torch.get_num_threads()})")


if __name__ == "__main__":
    main()
