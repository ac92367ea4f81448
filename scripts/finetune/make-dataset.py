#!/usr/bin/env python3
"""Writes a small labelled text-classification dataset, deterministically: short
review-like sentences built from word lists, labelled `praise`, `complaint` or
`question`, as a dataset repo folder (train.csv, test.csv, README.md).

    scripts/finetune/make-dataset.py OUT_DIR [--train N] [--test N] [--seed S]

The same arguments always give the same bytes (random.Random(seed), no clock), and
no test sentence is also a train sentence. Used by the fine-tuning tests
(tests/conformance/test_finetune.py, hub-worker/tests/it/finetune.rs) and
scripts/bench/finetune.sh."""

import argparse
import csv
import os
import random

SUBJECTS = ["the pasta", "this phone", "the hotel room", "our waiter", "the new album", "this laptop",
            "the delivery", "the concert", "the headphones", "the support team", "this novel", "the bike",
            "the coffee", "the movie", "the app", "the camera", "the jacket", "the train ride"]
GOOD = ["wonderful", "excellent", "delightful", "superb", "fantastic", "lovely", "brilliant", "amazing",
        "perfect", "charming", "outstanding", "great"]
BAD = ["awful", "terrible", "broken", "disappointing", "horrible", "dreadful", "useless", "rude",
       "faulty", "miserable", "poor", "disgusting"]
PRAISE = ["{s} was {g}, I loved it", "honestly {s} was {g}", "{s} is {g} and I would buy it again",
          "what a {g} experience, {s} exceeded my hopes", "I am so happy, {s} was {g}",
          "five stars: {s} was {g} from start to finish"]
COMPLAINT = ["{s} was {b}, I want a refund", "honestly {s} was {b}", "{s} is {b} and I regret it",
             "what a {b} experience, {s} let me down", "I am so angry, {s} was {b}",
             "one star: {s} was {b} from start to finish"]
QUESTION = ["does {s} come in another size?", "how long does {s} take to arrive?",
            "can I return {s} after a week?", "where can I find {s} in the store?",
            "is {s} available on weekends?", "what time does {s} start?", "who should I ask about {s}?",
            "could you tell me the price of {s}?", "do you know if {s} has a warranty?",
            "why is {s} listed twice on the website?"]


def sentences(rng, label):
    while True:
        s = rng.choice(SUBJECTS)
        if label == "praise":
            yield rng.choice(PRAISE).format(s=s, g=rng.choice(GOOD))
        elif label == "complaint":
            yield rng.choice(COMPLAINT).format(s=s, b=rng.choice(BAD))
        else:
            yield rng.choice(QUESTION).format(s=s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--test", type=int, default=90)
    ap.add_argument("--seed", type=int, default=16)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    labels = ["praise", "complaint", "question"]
    gens = {lab: sentences(rng, lab) for lab in labels}
    seen = set()

    def take(n):
        rows = []
        for i in range(n):
            lab = labels[i % len(labels)]
            for _ in range(1000):
                text = next(gens[lab])
                if text not in seen:
                    break
            else:
                raise SystemExit("word lists too small for the requested rows")
            seen.add(text)
            rows.append((text, lab))
        rng.shuffle(rows)
        return rows

    train, test = take(a.train), take(a.test)
    os.makedirs(a.out, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(a.out, name), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["text", "label"])
            w.writerows(rows)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("---\nlicense: apache-2.0\ntask_categories:\n- text-classification\n---\n\n"
                "# Review intents\n\nShort synthetic sentences labelled `praise`, `complaint` or "
                f"`question`, made by `scripts/finetune/make-dataset.py` (seed {a.seed}): "
                f"{a.train} train and {a.test} test rows.\n")


if __name__ == "__main__":
    main()
