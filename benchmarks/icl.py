"""In-context learning of SmolLM2-135M-Instruct: k-shot accuracy against k on two tasks.

Sentiment (VADER movie-review sentences, binary, 100 test queries, demonstrations from the
8,033 training sentences) and continents (country -> one of 4 continents, 50 queries, 50 in the
pool). k = 0, 1, 2, 4, 8, 16 with 5 random demonstration sets per k > 0, scored by the
log-probability of each label word after the prompt (`attnlab.tasks.icl`). About 15-20 minutes
on one CPU thread (the 16-shot sentiment prompts are ~550 tokens; the demonstrations' KV cache
is shared by every query of a draw).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.icl [--sentiment-limit 100] [--draws 5]
        [--tasks continents,sentiment] [--out docs/bench/icl.json]

Prints a markdown table per task; writes the JSON and a PNG beside it. Also checks, for every
query of one 16-shot draw, that the piecewise tokenization of the prompt equals tokenizing the
whole prompt string.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from attnlab.interop import load_pretrained
from attnlab.tasks.icl import (
    ICL_TASKS,
    ICLResult,
    PromptFormat,
    encode_piece,
    icl_accuracy,
    load_labelled,
    plot_icl,
)
from benchmarks.common import machine, save

MODEL = "SmolLM2-135M-Instruct"
SHOTS = (0, 1, 2, 4, 8, 16)


def tokenization_agreement(tokenizer, data, task, k: int = 16, seed: int = 0) -> float:
    """Share of queries whose piecewise prompt ids equal the whole prompt string's ids."""
    fmt, sep, words = PromptFormat(task.template), "\n\n", list(task.labels)
    picked = np.random.default_rng([seed, k, 0]).choice(len(data.pool_texts), k, replace=False)
    demos = [fmt.demonstration(data.pool_texts[j], words[data.pool_labels[j]]) for j in picked]
    prefix = []
    for i, d in enumerate(demos):
        prefix += encode_piece(tokenizer, (sep if i else "") + d, first=i == 0)
    same = 0
    for text in data.query_texts:
        query = sep + fmt.query(text)[0]
        ids = prefix + encode_piece(tokenizer, query, first=False)
        same += ids == list(tokenizer.encode(sep.join(demos) + query))
    return same / len(data.query_texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentiment-limit", type=int, default=100)
    parser.add_argument("--continents-limit", type=int, default=50)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--tasks", default="continents,sentiment",
                        help="which to run; the others' results already in --out are kept")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/icl.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_pretrained(MODEL)
    rows = json.loads(args.out.read_text())["tasks"] if args.out.is_file() else {}
    limits = {"continents": args.continents_limit, "sentiment": args.sentiment_limit}
    for name in args.tasks.split(","):
        limit = limits[name]
        task = ICL_TASKS[name]
        data = load_labelled(name, list(task.labels), limit=limit, seed=0)
        start = time.perf_counter()
        r = icl_accuracy(model, tokenizer, data, template=task.template,
                         label_words=list(task.labels), shots=SHOTS, draws=args.draws, seed=0,
                         model_name=MODEL)
        seconds = time.perf_counter() - start
        agree = tokenization_agreement(tokenizer, data, task)
        rows[name] = {**r.to_dict(), "seconds": seconds, "tokenization_agreement": agree}
        print(f"\n### {name}: {r.queries} queries, pool {r.pool}, chance {r.chance:.3f}, "
              f"majority {r.majority:.3f}, {seconds:.0f} s; piecewise == whole-string "
              f"tokenization for {agree:.1%} of 16-shot prompts\n")
        print(r.table(), flush=True)
        save({"machine": machine(), "model": MODEL, "tasks": rows}, args.out)  # after each
    results = [ICLResult.from_dict(rows[n]) for n in ("continents", "sentiment") if n in rows]
    png = plot_icl(results, args.out.with_suffix(".png"),
                   title=f"{MODEL}: k-shot accuracy (mean, +-1 std and each draw)")
    print(f"\nwrote {args.out} and {png}")


if __name__ == "__main__":
    main()
