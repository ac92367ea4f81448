"""The PyTorch side of scripts/bench/finetune.sh: the same model, data, batch
size, sequence length, optimizer and schedule as hub-worker's fine-tune
(BertForSequenceClassification from the MiniLM folder with a new 3-way head,
no dropout, AdamW with no decay on biases/LayerNorm, linear warm-up/decay,
batches padded to their longest row), timed per optimizer step.

    python finetune_torch.py MODEL_DIR DATASET_DIR BATCH MAX_SEQ EPOCHS THREADS
"""

import csv
import json
import random
import statistics
import sys
import time

import torch
from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup


def rows(path):
    with open(path) as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def main():
    model_dir, data_dir = sys.argv[1], sys.argv[2]
    batch, max_seq, epochs, threads = (int(x) for x in sys.argv[3:7])
    torch.manual_seed(42)
    torch.set_num_threads(threads)
    train, test = rows(f"{data_dir}/train.csv"), rows(f"{data_dir}/test.csv")
    labels = sorted({lab for _, lab in train})
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    plain = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = (len(train) + batch - 1) // batch
    total = steps_per_epoch * epochs
    sched = get_linear_schedule_with_warmup(opt, int(total * 0.1 + 0.999), total)
    rng = random.Random(42)
    order = list(range(len(train)))
    times, tokens = [], []
    model.train()
    for _ in range(epochs):
        rng.shuffle(order)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            t0 = time.perf_counter()
            enc = tok([train[j][0] for j in idx], padding="longest", truncation=True, max_length=max_seq,
                      return_tensors="pt")
            y = torch.tensor([labels.index(train[j][1]) for j in idx])
            out = model(**enc, labels=y)
            out.loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            tokens.append(int(enc["input_ids"].numel()))
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test), 32):
            chunk = test[i:i + 32]
            enc = tok([t for t, _ in chunk], padding="longest", truncation=True, max_length=max_seq, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
            correct += sum(labels[p] == lab for p, (_, lab) in zip(pred, chunk))
    timed = times[2:]
    print(json.dumps({
        "engine": f"pytorch {torch.__version__}",
        "steps": len(times),
        "timed_steps": len(timed),
        "batch_size": batch,
        "max_seq_length": max_seq,
        "median_step_s": statistics.median(timed),
        "mean_step_s": statistics.fmean(timed),
        "mean_tokens_per_batch": statistics.fmean(tokens),
        "test_accuracy": correct / len(test),
        "threads": threads,
    }))


if __name__ == "__main__":
    main()
