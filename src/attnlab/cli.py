"""`attnlab ...`: parse, call the library, print. Errors a user caused print one line, exit 2."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
import yaml

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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got '{text}'")
    return value


def read_value(raw: str, key: str):
    """A number as a number (YAML 1.1 would read '3e-4' as a string), else a YAML value."""
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise AttnlabError(f"--set {key}: cannot read value '{raw}'") from None


def parse_overrides(pairs: list[str]) -> dict:
    """['a=1', 'b.c=x'] -> {'a': 1, 'b': {'c': 'x'}}; values are read as YAML scalars."""
    out: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise AttnlabError(f"--set takes key=value, got '{pair}'")
        value = read_value(raw, key)
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AttnlabError(f"--set {key}: '{part}' is already set to a value")
        node[leaf] = value
    return out


def build_model(kind: str, overrides: dict):
    model_cls, config_cls = MODELS[kind]
    return model_cls(config_cls.from_dict(overrides))


def cmd_model(args) -> int:
    """Build a model from its config and report its size and cost."""
    model = build_model(args.kind, parse_overrides(args.set))
    c = model.config
    summary = {
        "model": args.kind,
        "config": c.to_dict(),
        "parameters": model.num_parameters(),
        "seq_len": args.seq_len,
        "forward_flops_per_token": model.flops_per_token(args.seq_len),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.kind}: {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads, "
          f"attention '{c.attention}' {c.attention_options or ''}, positional '{c.positional}'")
    print(f"parameters: {summary['parameters']:,}")
    print(f"forward FLOPs per token at length {args.seq_len}: "
          f"{summary['forward_flops_per_token']:,.0f} (training about 3x)")
    return 0


def cmd_demo(args) -> int:
    """A forward pass of every architecture with every registered mechanism, on random ids."""
    torch.manual_seed(0)
    B, T, V = 2, 64, 100
    src = torch.randint(V, (B, T))
    inputs = {"gpt": (src,), "encoder": (src,), "seq2seq": (src, src[:, : T // 2])}
    print(f"forward pass of each architecture x mechanism (batch {B}, {T} tokens, d_model 64):")
    for mech in available():
        options = {"window": 16} if mech == "local" else {}
        for kind, x in inputs.items():
            model = build_model(kind, dict(vocab_size=V, d_model=64, n_heads=4, n_layers=2,
                                           attention=mech, attention_options=options)).eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = model(*x)
            ms = (time.perf_counter() - t0) * 1e3
            ok = "ok" if torch.isfinite(out).all() else "NON-FINITE"
            print(f"  {kind:<8} {mech:<7} -> {tuple(out.shape)!s:<14} "
                  f"{model.num_parameters():>8,} params {ms:7.1f} ms  {ok}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"attnlab {attnlab.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="version, device and the registries")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("model", help="build a model from its config; print size and FLOPs")
    p.add_argument("kind", choices=sorted(MODELS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set attention=local --set "
                        "attention_options.window=64 (repeatable)")
    p.add_argument("--seq-len", type=positive_int, default=256, help="length for the FLOP estimate")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_model)
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
