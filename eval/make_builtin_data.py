"""Regenerate the small built-in arithmetic word-problem set shipped in adaptive_decoder/tasks/data/.

    python eval/make_builtin_data.py      # rewrites arithmetic.jsonl (60 test) and arithmetic_train.jsonl (8 shots)

The problems are written from templates by this script (no external data), in GSM8K's format:
{"question": str, "answer": "<worked solution>\\n#### <number>"}. Answers include multi-step sums, money with
cents and thousands (so extraction of "$1,200.50"-style answers is exercised), and integer division.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaptive_decoder" / "tasks" / "data"
NAMES = ["Ava", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo", "Nora"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "shells", "cards"]


def fmt_money(x: float) -> str:
    return f"{x:,.2f}" if x != int(x) else f"{int(x):,}"


def make(rng: random.Random) -> dict:
    kind = rng.randrange(5)
    n = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    if kind == 0:  # buy, give away, receive
        a, b, c = rng.randint(10, 60), rng.randint(2, 9), rng.randint(3, 20)
        q = f"{n} has {a} {item}. {n} gives away {b} {item} and then receives {c} more. How many {item} does {n} have now?"
        ans = a - b + c
        sol = f"After giving away: {a} - {b} = {a - b}.\nAfter receiving: {a - b} + {c} = {ans}."
    elif kind == 1:  # packs times price
        packs, per, price = rng.randint(2, 9), rng.randint(3, 12), rng.randint(2, 15)
        q = (f"A shop sells boxes of {per} {item}. {n} buys {packs} boxes, and each box costs ${price}. "
             f"How many dollars does {n} spend?")
        ans = packs * price
        sol = f"{packs} boxes cost {packs} * {price} = {ans} dollars."
    elif kind == 2:  # salary with cents, thousands
        hours, rate = rng.randint(80, 240), rng.choice([12.5, 15.25, 18.75, 21.5, 9.75])
        q = (f"{n} works {hours} hours in a month and earns ${rate:.2f} per hour. "
             f"How much money, in dollars, does {n} earn that month?")
        ans = round(hours * rate, 2)
        sol = f"{hours} * {rate:.2f} = {fmt_money(ans)} dollars."
        return {"question": q, "answer": f"{sol}\n#### {fmt_money(ans)}"}
    elif kind == 3:  # share equally
        per, people = rng.randint(3, 12), rng.randint(2, 8)
        total = per * people
        q = f"{n} shares {total} {item} equally among {people} friends. How many {item} does each friend get?"
        ans = per
        sol = f"{total} / {people} = {ans}."
    else:  # two-step rate
        days, per_day, extra = rng.randint(3, 14), rng.randint(4, 25), rng.randint(5, 40)
        q = (f"{n} reads {per_day} pages every day for {days} days and then reads {extra} pages on the weekend. "
             f"How many pages does {n} read in total?")
        ans = days * per_day + extra
        sol = f"Weekdays: {days} * {per_day} = {days * per_day}.\nTotal: {days * per_day} + {extra} = {ans}."
    return {"question": q, "answer": f"{sol}\n#### {ans:,}"}


def main():
    rng = random.Random(20261123)
    rows = [make(rng) for _ in range(68)]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in (("arithmetic_train.jsonl", rows[:8]), ("arithmetic.jsonl", rows[8:])):
        with open(OUT / name, "w") as f:
            for r in part:
                f.write(json.dumps(r) + "\n")
        print(f"wrote {len(part)} problems to {OUT / name}")


if __name__ == "__main__":
    main()
