"""Write the generated prompt sets of the mixed-traffic benchmark's task files (fixed seeds, no model) into
adaptive_decoder/tasks/data/:

  list_items.jsonl         one record per category, {"category": "fruits", "n": 4}: name n distinct members of a
                           familiar category (task file list_items.yaml).
  arithmetic_simple.jsonl  200 sums and differences a + b / a - b with a in [2, 20], b in [2, 9],
                           {"question": "17 - 5", "answer": "#### 12"} (task file arithmetic_simple.yaml). Smaller
                           than the `arithmetic` task's (a up to 60, b up to 40), which SmolLM2-135M-Instruct answers
                           1 time in 6 at greedy (a floor task, flat in temperature); these about 1 in 2 (11 of 24).

The categories are hand-written here: common nouns whose members a 135M instruct model knows many of, so the list
can be right at greedy and the question is whether sampling keeps it well-formed while varying it. n is drawn from
{3, 4, 5} by `random.Random(0)`, in category order, so a record keeps its n whatever is appended after it.

    python eval/make_mixed_traffic_data.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaptive_decoder" / "tasks" / "data"
NUM_ARITHMETIC = 200
A_RANGE, B_RANGE = (2, 20), (2, 9)

CATEGORIES = [
    "fruits", "vegetables", "animals", "farm animals", "wild animals", "birds", "fish", "insects", "colors",
    "flowers", "trees", "countries", "cities", "European countries", "Asian countries", "rivers", "planets",
    "musical instruments", "sports", "ball games", "board games", "kitchen utensils", "pieces of furniture",
    "items of clothing", "shoes", "tools", "vehicles", "car brands", "jobs", "school subjects", "languages",
    "drinks", "desserts", "breakfast foods", "spices", "herbs", "cheeses", "breads", "body parts", "emotions",
    "weather conditions", "shapes", "metals", "gemstones", "dog breeds", "cat breeds", "pets", "sea creatures",
    "reptiles", "dinosaurs", "holidays", "months", "days of the week", "things in a bathroom", "office supplies",
    "toys", "things at a beach", "camping gear", "musical genres", "dances", "hobbies", "things in a garden",
    "berries", "nuts", "types of pasta", "rooms in a house", "things in a classroom",
    "things that fly", "things that are cold", "things that are round", "things made of wood",
]


def records(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"category": c, "n": rng.choice([3, 4, 5])} for c in CATEGORIES]


def arithmetic_records(seed: int = 0) -> list[dict]:
    rng, out = random.Random(seed), []
    for _ in range(NUM_ARITHMETIC):
        a, b, op = rng.randint(*A_RANGE), rng.randint(*B_RANGE), rng.choice("+-")
        out.append({"question": f"{a} {op} {b}", "answer": f"#### {a + b if op == '+' else a - b}"})
    return out


def main():
    for name, recs in (("list_items.jsonl", records()), ("arithmetic_simple.jsonl", arithmetic_records())):
        (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        print(f"wrote {OUT / name} ({len(recs)} records)")


if __name__ == "__main__":
    main()
