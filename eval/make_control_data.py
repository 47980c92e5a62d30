"""Write the positive-control prompt sets (adaptive_decoder/tasks/data/control_*.jsonl; fixed seed, no model):

  control_qa.jsonl       closed questions with a one-word answer ("What is the capital of France?" -> Paris):
                         one right answer, which SmolLM2-135M-Instruct mostly gives at greedy; sampling hurts.
  control_numbers.jsonl  "random numbers between 1 and 10, one per line" with five example numbers; the task
                         file rewards a reply no other sample of the prompt gives, so greedy (k identical
                         answers) scores 0 and the best temperature is high.
  control_phrase.jsonl   token-level control: begin with an exact phrase (needs greedy-like decoding for those
                         tokens), then continue freely (rewarded for novelty among the prompt's samples).

    python eval/make_control_data.py
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "adaptive_decoder" / "tasks" / "data"

CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("England", "London"), ("Russia", "Moscow"), ("China", "Beijing"), ("Egypt", "Cairo"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Hungary", "Budapest"),
            ("Thailand", "Bangkok"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Argentina", "Buenos Aires"),
            ("Cuba", "Havana"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
            ("the Netherlands", "Amsterdam"), ("South Korea", "Seoul"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
            ("India", "New Delhi|Delhi"), ("Mexico", "Mexico City"), ("Turkey", "Ankara"), ("Iran", "Tehran"),
            ("Iraq", "Baghdad"), ("Chile", "Santiago"), ("Colombia", "Bogota|Bogotá"), ("the Philippines", "Manila"),
            ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Switzerland", "Bern|Berne")]
FACTS = [("What color is the sky on a clear day?", "blue"), ("How many days are in a week?", "seven|7"),
         ("What is the opposite of hot?", "cold"), ("What is the opposite of up?", "down"),
         ("What is the opposite of day?", "night"), ("What color is grass?", "green"),
         ("What color is snow?", "white"), ("How many legs does a spider have?", "eight|8"),
         ("What is frozen water called?", "ice"), ("What is the largest planet in our solar system?", "Jupiter"),
         ("What planet do we live on?", "Earth"), ("What is the closest star to Earth?", "Sun|the Sun"),
         ("What gas do plants absorb from the air?", "carbon dioxide|CO2"), ("What is the color of a ripe banana?", "yellow"),
         ("How many hours are in a day?", "24|twenty-four|twenty four"), ("How many months are in a year?", "12|twelve"),
         ("What is the first letter of the English alphabet?", "A"), ("What animal is known as man's best friend?", "dog|dogs"),
         ("Which ocean is the largest?", "Pacific|the Pacific"), ("What do bees make?", "honey"),
         ("Who wrote Romeo and Juliet?", "Shakespeare|William Shakespeare"), ("What is the boiling point of water in Celsius?", "100")]


def qa_records():
    recs = [{"question": f"What is the capital of {c}?", "answer": a} for c, a in CAPITALS]
    recs += [{"question": q, "answer": a} for q, a in FACTS]
    return recs


def number_records(n=72, seed=0):
    rng = random.Random(seed)
    recs, seen = [], set()
    while len(recs) < n:
        ex = tuple(rng.randint(1, 10) for _ in range(5))
        if ex in seen:
            continue
        seen.add(ex)
        recs.append({"examples": "\n".join(map(str, ex))})
    return recs

PHRASES = ["Once upon a time", "The quick brown fox", "It was a dark and stormy night", "In the beginning",
           "Good morning everyone", "The weather today is", "My favourite food is", "Every Monday morning",
           "The old lighthouse keeper", "At the edge of the forest", "When I was a child", "The best way to learn",
           "Last summer in Paris", "The little red car", "Deep in the ocean", "On the top of the mountain",
           "The city never sleeps", "A long time ago", "The secret to happiness", "Under the bright moon",
           "The cat on the roof", "In a small village", "The train was late", "After the rain stopped",
           "The library was quiet", "Near the old bridge", "The first day of school", "Behind the blue door",
           "The garden was full of", "On a cold winter evening", "The scientist looked at", "Far away from home",
           "The band started playing", "In the middle of the night", "The baker woke up early", "Along the river bank",
           "The children laughed", "At the end of the road", "The market was busy", "Inside the old castle"]


def phrase_records():
    return [{"phrase": p} for p in PHRASES]


def main():
    for name, recs in (("control_qa.jsonl", qa_records()), ("control_numbers.jsonl", number_records()),
                       ("control_phrase.jsonl", phrase_records())):
        (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        print(f"wrote {OUT / name}: {len(recs)} records")


if __name__ == "__main__":
    main()
