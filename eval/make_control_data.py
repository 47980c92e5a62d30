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
         ("Who wrote Romeo and Juliet?", "Shakespeare|William Shakespeare"),
         ("What is the boiling point of water in Celsius?", "100")]
# more candidates of the same kinds; `--keep_greedy_correct` keeps only those the model answers at greedy
MORE_CAPITALS = [("Brazil", "Brasilia|Brasília"), ("Venezuela", "Caracas"), ("Ukraine", "Kyiv|Kiev"),
                 ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
                 ("the Czech Republic", "Prague"), ("Slovakia", "Bratislava"), ("Iceland", "Reykjavik|Reykjavík"),
                 ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("Morocco", "Rabat"), ("Nigeria", "Abuja"),
                 ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"), ("Saudi Arabia", "Riyadh"), ("Syria", "Damascus"),
                 ("Lebanon", "Beirut"), ("Israel", "Jerusalem"), ("Pakistan", "Islamabad"), ("Afghanistan", "Kabul"),
                 ("Nepal", "Kathmandu"), ("Bangladesh", "Dhaka"), ("Malaysia", "Kuala Lumpur"),
                 ("Singapore", "Singapore"), ("North Korea", "Pyongyang"), ("Taiwan", "Taipei"),
                 ("Mongolia", "Ulaanbaatar|Ulan Bator"), ("New Zealand", "Wellington"), ("Uruguay", "Montevideo"),
                 ("Paraguay", "Asuncion|Asunción"), ("Ecuador", "Quito"), ("Bolivia", "La Paz|Sucre"),
                 ("Jamaica", "Kingston"), ("Qatar", "Doha"), ("Jordan", "Amman"), ("Libya", "Tripoli"),
                 ("Tunisia", "Tunis"), ("Algeria", "Algiers"), ("Sudan", "Khartoum"), ("Uganda", "Kampala"),
                 ("Tanzania", "Dodoma|Dar es Salaam"), ("Zimbabwe", "Harare"), ("Senegal", "Dakar"),
                 ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Lithuania", "Vilnius"), ("Belarus", "Minsk"),
                 ("Georgia", "Tbilisi"), ("Armenia", "Yerevan"), ("Cyprus", "Nicosia"), ("Malta", "Valletta")]
MORE_FACTS = [("What color is a ripe tomato?", "red"), ("What color is coal?", "black"),
              ("What is the opposite of big?", "small|little"), ("What is the opposite of fast?", "slow"),
              ("What is the opposite of old?", "young|new"), ("What is the opposite of left?", "right"),
              ("What is the opposite of open?", "closed|close|shut"), ("What is the opposite of wet?", "dry"),
              ("What is the opposite of happy?", "sad|unhappy"), ("What is the opposite of light?", "dark|heavy"),
              ("How many legs does a dog have?", "four|4"), ("How many wheels does a bicycle have?", "two|2"),
              ("How many sides does a triangle have?", "three|3"), ("How many sides does a square have?", "four|4"),
              ("How many minutes are in an hour?", "60|sixty"), ("How many seconds are in a minute?", "60|sixty"),
              ("What day comes after Monday?", "Tuesday"), ("What day comes after Friday?", "Saturday"),
              ("What month comes after January?", "February"), ("What month comes after June?", "July"),
              ("What is the last month of the year?", "December"), ("What is the first month of the year?", "January"),
              ("What animal says moo?", "cow|cows"), ("What animal says meow?", "cat|cats"),
              ("What animal has a trunk?", "elephant|elephants"), ("What is the largest animal on Earth?", "blue whale|whale"),
              ("What is the tallest animal?", "giraffe|giraffes"), ("What do cows drink?", "water"),
              ("What is the chemical symbol for gold?", "Au"), ("What is the chemical symbol for water?", "H2O"),
              ("What is the capital city of the United States?", "Washington|Washington, D.C.|Washington D.C."),
              ("What language is spoken in France?", "French"), ("What language is spoken in Germany?", "German"),
              ("What language is spoken in Spain?", "Spanish"), ("What language is spoken in Italy?", "Italian"),
              ("What language is spoken in Japan?", "Japanese"), ("What currency is used in Japan?", "yen"),
              ("What currency is used in the United Kingdom?", "pound|pounds|sterling"),
              ("What is the freezing point of water in Celsius?", "0|zero"), ("What is 2 plus 2?", "4|four"),
              ("What is 3 plus 4?", "7|seven"), ("What is 5 plus 5?", "10|ten"), ("What is 10 minus 3?", "7|seven"),
              ("What is 6 times 2?", "12|twelve"), ("What is half of 10?", "5|five"),
              ("Which planet is known as the Red Planet?", "Mars"), ("What is the hottest planet in our solar system?", "Venus"),
              ("What is the natural satellite of Earth called?", "Moon|the Moon"),
              ("What is the largest continent?", "Asia"), ("What is the longest river in Africa?", "Nile|the Nile"),
              ("Who painted the Mona Lisa?", "Leonardo|da Vinci|Leonardo da Vinci"),
              ("What is the main ingredient of guacamole?", "avocado|avocados"),
              ("What fruit is dried to make raisins?", "grape|grapes"),
              ("What do caterpillars turn into?", "butterfly|butterflies|moth|moths"),
              ("What is a baby dog called?", "puppy|pup"), ("What is a baby cat called?", "kitten"),
              ("What is the color of the sun?", "yellow|white"), ("What shape has three sides?", "triangle"),
              ("What do you call a house made of ice?", "igloo")]


def qa_records(more: bool = False):
    caps, facts = (CAPITALS + MORE_CAPITALS, FACTS + MORE_FACTS) if more else (CAPITALS, FACTS)
    recs = [{"question": f"What is the capital of {c}?", "answer": a} for c, a in caps]
    recs += [{"question": q, "answer": a} for q, a in facts]
    return recs


def keep_greedy_correct(recs, model_name="smollm2", batch_size=16, model=None, tokenizer=None):
    """The records whose question `model_name` answers right at greedy, under control_qa's own template, filter
    and reward: the positive control needs a single right answer *the model gets at greedy*, so that greedy is
    best by construction and what sampling loses is measurable. (Questions it gets wrong at every temperature
    only add noise, and shrink the task's best-minus-worst range that normalization divides by.)"""
    import tempfile

    import torch

    from adaptive_decoder.modeling.models import encode_prompts, load_base_model
    from adaptive_decoder.tasks import get_task

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    task = get_task("control_qa", path=f.name)
    exs = task.examples()
    Path(f.name).unlink()
    model, tok = (model, tokenizer) if model is not None else load_base_model(model_name, dtype=torch.float32)
    kept = []
    for i in range(0, len(exs), batch_size):
        batch = exs[i:i + batch_size]
        enc = encode_prompts(tok, [e["prompt"] for e in batch])
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, max_new_tokens=task.max_new_tokens or 8,
                                 pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for e, t, rec in zip(batch, texts, recs[i:i + batch_size]):
            if task.score([t], e)[0][0]["reward"] > 0:
                kept.append(rec)
    print(f"{model_name} answers {len(kept)} of {len(recs)} candidate questions right at greedy")
    return kept


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
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep_greedy_correct", metavar="MODEL", default=None,
                    help="write control_qa.jsonl from the larger candidate pool, keeping only the questions MODEL "
                         "(e.g. smollm2) answers right at greedy (needs the model; default: the original 62, no model)")
    args = ap.parse_args()
    qa = (qa_records() if args.keep_greedy_correct is None
          else keep_greedy_correct(qa_records(more=True), args.keep_greedy_correct))
    for name, recs in (("control_qa.jsonl", qa), ("control_numbers.jsonl", number_records()),
                       ("control_phrase.jsonl", phrase_records())):
        (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
        print(f"wrote {OUT / name}: {len(recs)} records")


if __name__ == "__main__":
    main()
