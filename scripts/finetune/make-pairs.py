#!/usr/bin/env python3
"""Writes a small sentence-pair dataset for sentence-embedding fine-tuning,
deterministically: questions about internal systems by their code names
("who owns kestrel?") paired with the answer that names the system plainly
("The payroll system is owned by the data team."), as a dataset repo folder
(train.csv, test.csv with the columns `anchor`,`positive`; README.md).

    scripts/finetune/make-pairs.py OUT_DIR [--train N] [--test N] [--seed S]

Which code name means which system is drawn from the seed, so a general-purpose
encoder (all-MiniLM-L6-v2) cannot know it: it matches the question's intent
("who owns" with "is owned by") but not the system, and ranks the right answer
first for only a few test questions. The pairing is learnable: every code name
appears in many train pairs, and the test pairs combine the same code names
with new details (teams, places, dates), so a tuned encoder must beat the
untuned one by a wide margin. The same arguments always give the same bytes
(random.Random(seed), no clock), and no test pair is also a train pair. Used by
the fine-tuning tests (tests/conformance/test_finetune.py,
hub-worker/tests/it/finetune.rs)."""

import argparse
import csv
import os
import random

CODENAMES = ["kestrel", "marlin", "juniper", "obsidian", "tundra", "quokka", "saffron", "zephyr",
             "basalt", "wombat", "lantern", "cobalt"]
SYSTEMS = ["the payroll system", "the customer database", "the mobile app", "the billing service",
           "the email server", "the search index", "the video encoder", "the backup storage",
           "the login page", "the analytics dashboard", "the printer fleet", "the shipping tracker"]
TEAMS = ["data", "platform", "security", "finance", "mobile", "web", "infrastructure", "support"]
PLACES = ["Frankfurt", "Dublin", "Oregon", "Tokyo", "Sydney", "Montreal", "Mumbai", "São Paulo"]
WHEN = ["on Monday", "last Tuesday", "yesterday", "two weeks ago", "this morning", "on Friday night",
        "in March", "last weekend"]
PEOPLE = ["Ana", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana"]
# (question about a code name, answer about the system): the intent is shared,
# the link between code name and system is what the encoder must learn.
INTENTS = [
    ("who owns {c}?", "{S} is owned by the {team} team."),
    ("where does {c} run?", "{S} runs in the {place} data centre."),
    ("is {c} down right now?", "{S} had an outage {when}."),
    ("how do I get access to {c}?", "To use {s}, ask {person} for access."),
    ("when was {c} last changed?", "{S} was last changed {when}."),
    ("which team do I call when {c} breaks?", "When {s} breaks, call the {team} team."),
    ("can I use {c} from home?", "{S} works from home through the {place} gateway."),
    ("who should review changes to {c}?", "{person} reviews every change to {s}."),
]


def pairs(rng, names):
    """An endless stream of (anchor, positive) for random code names and intents."""
    while True:
        i = rng.randrange(len(CODENAMES))
        q, a = rng.choice(INTENTS)
        system = names[CODENAMES[i]]
        anchor = q.format(c=CODENAMES[i])
        if rng.random() < 0.5:
            anchor = anchor[0].upper() + anchor[1:]
        positive = a.format(S=system[0].upper() + system[1:], s=system, team=rng.choice(TEAMS),
                            place=rng.choice(PLACES), when=rng.choice(WHEN), person=rng.choice(PEOPLE))
        yield anchor, positive


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--seed", type=int, default=16)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    shuffled = SYSTEMS[:]
    rng.shuffle(shuffled)
    names = dict(zip(CODENAMES, shuffled))
    gen = pairs(rng, names)
    seen = set()

    def take(n, distinct_positives):
        rows = []
        while len(rows) < n:
            for _ in range(10000):
                anchor, positive = next(gen)
                if (anchor, positive) not in seen and positive not in distinct_positives:
                    break
            else:
                raise SystemExit("word lists too small for the requested rows")
            seen.add((anchor, positive))
            distinct_positives.add(positive)
            rows.append((anchor, positive))
        return rows

    # Positives are distinct within a split (a batch of in-batch negatives never
    # holds a second copy of an anchor's own positive, and each test anchor has one
    # right answer among the split's positives).
    train, test = take(a.train, set()), take(a.test, set())
    os.makedirs(a.out, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(os.path.join(a.out, name), "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["anchor", "positive"])
            w.writerows(rows)
    with open(os.path.join(a.out, "README.md"), "w") as f:
        f.write("---\nlicense: apache-2.0\ntask_categories:\n- sentence-similarity\n---\n\n"
                "# System questions\n\nQuestions about internal systems by code name (`anchor`) "
                "paired with an answer that names the system (`positive`), made by "
                f"`scripts/finetune/make-pairs.py` (seed {a.seed}): {a.train} train and {a.test} "
                "test pairs.\n")


if __name__ == "__main__":
    main()
