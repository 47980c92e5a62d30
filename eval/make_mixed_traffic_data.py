"""Write the generated prompt sets of the mixed-traffic benchmark's task files (fixed seeds, no model) into
adaptive_decoder/tasks/data/:

  list_items.jsonl         one record per category, {"category": "fruits", "n": 4}: name n distinct members of a
                           familiar category (task file list_items.yaml).
  arithmetic_simple.jsonl  the first 200 records of the `arithmetic` task's generator (data_seed 0),
                           {"question": "17 + 25", "answer": "#### 42"} (task file arithmetic_simple.yaml): the same
                           prompts as `arithmetic`, as a file.

The categories are hand-written here: common nouns whose members a 135M instruct model knows many of, so the list
can be right at greedy and the question is whether sampling keeps it well-formed while varying it. n is drawn from
{3, 4, 5} by `random.Random(0)`, in category order, so a record keeps its n whatever is appended after it.

    PYTHONPATH=. python eval/make_mixed_traffic_data.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaptive_decoder" / "tasks" / "data"
NUM_ARITHMETIC = 200

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


def arithmetic_records() -> list[dict]:
    from adaptive_decoder.tasks import Arithmetic

    return [r for _, r in Arithmetic(data_seed=0, num_examples=NUM_ARITHMETIC)._raw_records()]


def main():
    for name, recs in (("list_items.jsonl", records()), ("arithmetic_simple.jsonl", arithmetic_records())):
        (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        print(f"wrote {OUT / name} ({len(recs)} records)")


if __name__ == "__main__":
    main()
