"""Writes the benchmark corpus: 256 sentences of 5-60 words from a fixed
vocabulary and seed (the same file on every machine).

    python3 scripts/worker/make-corpus.py OUT.txt
"""
import random
import sys

rng = random.Random(20261128)
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will "
         "model endpoint tenant worker embedding vector inference latency throughput cache revision "
         "commit hub token request batch queue server client network storage memory thread engine "
         "sentence language question answer document search ranking similar meaning train data "
         "quickly slowly carefully really almost always never often new old large small fast good "
         "river mountain city market music history science garden kitchen winter summer morning").split()
lines = []
for _ in range(256):
    n = rng.randint(5, 60)
    s = " ".join(rng.choice(words) for _ in range(n))
    lines.append(s[0].upper() + s[1:] + rng.choice([".", "?", "!", "."]))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
