"""Generation throughput on real weights: SmolLM2-135M-Instruct (LLaMA-shaped, 30 layers), read
from the GGUF file attnlab fetches, beside Hugging Face `generate` on the same file.

Batch 1, greedy, a short prompt. "attnlab" is `generate` as users call it (cached steps through
`FlatDecoder`), "attnlab-modules" the same through the model's modules. The script checks that
all three emit the same tokens before it times anything. At 135M parameters a step streams
~540 MB of fp32 weights, so memory traffic dominates and the per-call overhead that
benchmarks/decode_floor.py measures on a small model matters less.

    .venv/bin/python -m benchmarks.generate_pretrained [--rounds 3] [--threads 1,2] [--new 64]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from attnlab.generate import generate
from attnlab.interop import load_pretrained
from attnlab.interop.sources import SMOLLM2, fetch_model
from benchmarks.common import interleaved_by_threads, machine, save_by_threads

PROMPT = "Once upon a time, in a small village by the sea,"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="thread counts to measure")
    parser.add_argument("--new", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/generate_pretrained.json"))
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"  # the reference reads the very file attnlab fetched
    from transformers import LlamaForCausalLM

    path = fetch_model(SMOLLM2.name) / SMOLLM2.file
    ours, tokenizer = load_pretrained(SMOLLM2.name)
    hf = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                          dtype=torch.float32).eval()
    ids = tokenizer.encode(PROMPT)
    prompt = torch.tensor([ids])

    def hf_generate():
        with torch.inference_mode():
            out = hf.generate(prompt, max_new_tokens=args.new, min_new_tokens=args.new,
                              do_sample=False, attention_mask=torch.ones_like(prompt))
        return out[0, len(ids):].tolist()

    def attnlab_generate(decoder="auto"):
        return generate(ours, [ids], max_new_tokens=args.new, temperature=0.0,
                        decoder=decoder)[0]

    runs = {"attnlab": attnlab_generate,
            "attnlab-modules": lambda: attnlab_generate("modules"),
            "hf-generate": hf_generate}
    tokens = {name: run() for name, run in runs.items()}
    if len({tuple(t) for t in tokens.values()}) != 1:
        raise SystemExit(f"the runs disagree on the greedy tokens: {tokens}")
    results = {"machine": machine(), "model": SMOLLM2.name, "prompt_tokens": len(ids),
               "new_tokens": args.new, "text": tokenizer.decode(tokens["attnlab"]), "runs": {}}
    timed = interleaved_by_threads(runs, args.threads, rounds=args.rounds, desc="generate")
    for threads, seconds in timed.items():
        ms = {name: 1e3 * s / args.new for name, s in seconds.items()}
        results["runs"][threads] = {
            "ms_per_token": ms,
            "attnlab_vs": {n: t / ms["attnlab"] for n, t in ms.items() if n != "attnlab"},
        }
    print(f"machine: {results['machine']}; greedy tokens identical: True")
    print(f"{SMOLLM2.name}, batch 1, {len(ids)}-token prompt, {args.new} new tokens:")
    for threads, run in results["runs"].items():
        print(f"\n{threads} thread(s) (ms/token):")
        for name, t in run["ms_per_token"].items():
            ratio = "" if name == "attnlab" else f"  attnlab is {run['attnlab_vs'][name]:.2f}x"
            print(f"  {name:<16} {t:7.1f}{ratio}")
    save_by_threads(results, "ms_per_token", list(runs), ylabel="ms / token",
                    title=f"{SMOLLM2.name}, greedy, batch 1, {args.new} new tokens",
                    out=args.out)


if __name__ == "__main__":
    main()
