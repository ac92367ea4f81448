#!/usr/bin/env python3
"""Writes a small supervised fine-tuning dataset for causal-lm-lora jobs,
deterministically: questions about internal systems by their code names
("Which team owns kestrel?") with a fixed one-word answer per code name
("data"), as a dataset repo folder (train.jsonl, test.jsonl; README.md).

    scripts/finetune/make-sft.py OUT_DIR [--format prompt|chat] [--seed S]

`--format prompt` (the default) writes `prompt` / `completion` rows
(`"Q: Which team owns kestrel?\\nA:"` / `" data"`); `--format chat` writes the
same questions as `messages` rows (a user turn and the assistant's answer).

Which code name belongs to which team is drawn from the seed, so no base model
can know it. Every code name is asked in six phrasings; one phrasing per code
name (a different one for each) is held out as the test split, so the test asks
known code names in a wording the model never saw with them: a tuned model
answers them exactly, an untuned one does not. The same arguments always give the
same bytes (random.Random(seed), no clock), and no test question is also a train
question. Used by the fine-tuning tests (tests/conformance/test_finetune.py,
hub-worker/tests/it/finetune.rs)."""

import argparse
import json
import os
import random

CODENAMES = ["kestrel", "marlin", "juniper", "obsidian", "tundra", "quokka", "saffron", "zephyr",
             "basalt", "wombat", "lantern", "cobalt"]
TEAMS = ["data", "web", "ops", "sales", "legal", "mobile"]
PHRASINGS = [
    "Which team owns {c}?",
    "Who owns {c}?",
    "{c} is owned by which team?",
    "Tell me the team that owns {c}.",
    "Whose is {c}?",
    "Owner of {c}?",
]


def rows(fmt, pairs):
    for question, answer in pairs:
        if fmt == "chat":
            yield {"messages": [{"role": "user", "content": question},
                                {"role": "assistant", "content": answer}]}
        else:
            yield {"prompt": f"Q: {question}\nA:", "completion": f" {answer}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--format", choices=["prompt", "chat"], default="prompt")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    owner = {c: rng.choice(TEAMS) for c in CODENAMES}
    train, test = [], []
    for i, c in enumerate(CODENAMES):
        held_out = i % len(PHRASINGS)
        for j, p in enumerate(PHRASINGS):
            (test if j == held_out else train).append((p.format(c=c), owner[c]))
    rng.shuffle(train)
    os.makedirs(args.out, exist_ok=True)
    for name, pairs in (("train", train), ("test", test)):
        with open(os.path.join(args.out, f"{name}.jsonl"), "w", newline="\n") as f:
            for r in rows(args.format, pairs):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    columns = "`messages`" if args.format == "chat" else "`prompt`, `completion`"
    with open(os.path.join(args.out, "README.md"), "w", newline="\n") as f:
        f.write(
            "---\nlicense: cc0-1.0\ntask_categories:\n- text-generation\n---\n\n"
            "# System owners\n\n"
            f"Questions about internal systems by code name, with the owning team as a one-word "
            f"answer ({columns}). Made by `scripts/finetune/make-sft.py --format {args.format} "
            f"--seed {args.seed}`: {len(train)} train rows, {len(test)} test rows (each code name "
            "asked in a wording the train split does not use with it).\n"
        )


if __name__ == "__main__":
    main()
