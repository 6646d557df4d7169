"""`attnlab ...`: parse, call the library, print. Errors a user caused print one line, exit 2."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

import attnlab
from attnlab.attention import available
from attnlab.errors import AttnlabError
from attnlab.layers import FEEDFORWARD, NORMS, POSITIONAL
from attnlab.models import MODELS


def _info() -> dict:
    threads = torch.get_num_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "attnlab": attnlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "cpu_threads": threads,
        "attention": {name: caps.as_dict() for name, caps in available().items()},
        "positional": list(POSITIONAL),
        "feedforward": list(FEEDFORWARD),
        "norms": list(NORMS),
        "models": sorted(MODELS),
    }


def cmd_info(args) -> int:
    info = _info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"attnlab {info['attnlab']}  torch {info['torch']}  python {info['python']}  "
          f"device {info['device']} ({info['cpu_threads']} threads)")
    print("attention mechanisms:")
    for name, caps in available().items():
        print(f"  {name:<10} {caps.summary()}")
    print(f"positional encodings: {', '.join(info['positional'])}")
    print(f"feed-forward: {', '.join(info['feedforward'])}   norms: {', '.join(info['norms'])}")
    print(f"models: {', '.join(info['models'])}")
    return 0


def cmd_demo(args) -> int:
    """A forward pass of every architecture with every mechanism that fits it, on random ids."""
    torch.manual_seed(0)
    B, T, V = 2, 64, 100
    src = torch.randint(V, (B, T))
    cases = []
    for mech, _caps in available().items():
        options = {"window": 16} if mech == "local" else {}
        common = dict(vocab_size=V, d_model=64, n_heads=4, n_layers=2, attention=mech,
                      attention_options=options)
        cases.append(("gpt", mech, lambda c=common: MODELS["gpt"][0](
            MODELS["gpt"][1](**c))(src)))
        cases.append(("encoder", mech, lambda c=common: MODELS["encoder"][0](
            MODELS["encoder"][1](num_classes=3, **c))(src)))
        cases.append(("seq2seq", mech, lambda c=common: MODELS["seq2seq"][0](
            MODELS["seq2seq"][1](**c))(src, src[:, : T // 2])))
    print(f"forward pass of each architecture x mechanism (batch {B}, {T} tokens, d_model 64):")
    for model, mech, run in cases:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = run()
        ms = (time.perf_counter() - t0) * 1e3
        ok = "ok" if torch.isfinite(out).all() else "NON-FINITE"
        print(f"  {model:<8} {mech:<7} -> {tuple(out.shape)!s:<16} {ms:7.1f} ms  {ok}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"attnlab {attnlab.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="version, device and the registries")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("demo", help="a forward pass of every architecture and mechanism")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AttnlabError as e:
        print(f"attnlab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
