"""In-context learning of a pretrained causal LM: k-shot classification by label likelihood
(Brown et al., 2020, "Language Models are Few-Shot Learners").

A prompt is k demonstrations and the query, each written with one template, joined by a
separator:

    Review: <shot 1>\\nSentiment: positive\\n\\nReview: <shot 2>\\nSentiment: negative\\n\\n
    Review: <query>\\nSentiment:

and the predicted label is the label word with the highest log-probability after the prompt.

Choices (each documented because the numbers depend on it):
- Label words take the whitespace the template puts before `{label}` ("Sentiment: {label}" ->
  " positive"); with that leading space they must be single tokens (byte-level BPE vocabularies
  hold " positive", " Europe" whole). A word of several tokens is an error by default, since
  summed log-probabilities favour short words; `multi_token=True` allows them and scores the
  sum of their tokens' log-probs.
- Each prompt piece (a demonstration, or the query) is tokenized on its own, the separator at
  its start, and the prompt's tokens are the concatenation. For byte-level BPE this equals
  tokenizing the whole prompt string whenever pieces begin with whitespace and end without
  (true of the default templates), and it makes the demonstrations an exact token prefix of
  every query's prompt: their KV cache is computed once per draw and shared by all queries.
- One draw = one random set of k demonstrations (without replacement from the training pool,
  not class-balanced, in random order), used for every query, as in Zhao et al. (2021); the
  spread over draws is the sensitivity to which shots were picked. k = 0 has one prompt only.
- No calibration: the scores are raw log-probabilities (contextual calibration, Zhao et al.
  2021, would subtract the label prior seen with a content-free input).
"""

from __future__ import annotations

import copy
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from attnlab.errors import AttnlabError, did_you_mean
from attnlab.files import read_text_file


@dataclass
class LabelledSet:
    """Labelled texts: a pool to draw demonstrations from and queries to classify.

    Args:
        name: what to call it in reports.
        pool_texts, pool_labels: the demonstrations' pool (labels index `label_names`).
        query_texts, query_labels: the evaluation queries.
        label_names: class names as the data give them.
    """

    name: str
    pool_texts: list[str]
    pool_labels: list[int]
    query_texts: list[str]
    query_labels: list[int]
    label_names: list[str]


@dataclass(frozen=True)
class ICLTask:
    """A named labelled set with its default prompt format."""

    template: str
    labels: tuple[str, ...]
    description: str


#: named sets for `attnlab icl --data NAME`
ICL_TASKS = {
    "sentiment": ICLTask("Review: {text}\nSentiment: {label}", ("negative", "positive"),
                         "VADER movie-review sentences, binary (attnlab.data.sentiment)"),
    "continents": ICLTask("Country: {text}\nContinent: {label}",
                          ("Africa", "Asia", "Europe", "America"),
                          "100 countries -> 4 continents (attnlab.data.continents)"),
}


def _split(name: str, texts: list[str], labels: list[int], names: list[str], *,
           limit: int | None, seed: int) -> LabelledSet:
    """Seeded random `limit` rows (at most half; default 200) as queries, the rest the pool."""
    if not texts:
        raise AttnlabError(f"labelled set {name} is empty; give at least 2 labelled rows")
    order = np.random.default_rng(seed).permutation(len(texts))
    n_query = min(limit or 200, len(texts) // 2) if len(texts) > 1 else 0
    if n_query < 1:
        raise AttnlabError(f"labelled set {name} has {len(texts)} row(s); it needs at least 2 "
                           f"(queries and a pool of demonstrations)")
    q, p = order[:n_query], order[n_query:]
    return LabelledSet(name, [texts[i] for i in p], [labels[i] for i in p],
                       [texts[i] for i in q], [labels[i] for i in q], names)


def read_labelled_file(path: Path) -> tuple[list[str], list[str]]:
    """(texts, label strings) of a JSONL file ({"text": ..., "label": ...} per line) or a CSV
    file with a header row holding `text` and `label` columns."""
    raw = read_text_file(path, "the labelled file")
    texts, labels = [], []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(raw.splitlines())
        if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
            raise AttnlabError(f"{path}: the CSV header must name columns 'text' and 'label', "
                               f"got {reader.fieldnames}")
        rows = [(r["text"], r["label"], i + 2) for i, r in enumerate(reader)]
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise AttnlabError(f"{path} line {i} is not JSON; give one "
                                   f'{{"text": ..., "label": ...}} object per line') from None
            if not isinstance(obj, dict) or "text" not in obj or "label" not in obj:
                raise AttnlabError(f'{path} line {i} needs keys "text" and "label"')
            rows.append((obj["text"], obj["label"], i))
    else:
        raise AttnlabError(f"{path}: give a .jsonl or .csv file of text,label rows")
    for text, label, line in rows:
        if not isinstance(text, str) or label is None or isinstance(label, (dict, list)):
            raise AttnlabError(f"{path} line {line}: text must be a string and label a string "
                               f"or an integer")
        texts.append(text)
        labels.append(str(label))
    return texts, labels


def load_labelled(source: str | Path, label_words: list[str] | None = None, *,
                  limit: int | None = None, seed: int = 0) -> LabelledSet:
    """A named set (`ICL_TASKS`) or a user file, split into a demonstration pool and queries.

    Args:
        source: `sentiment`, `continents`, or a .jsonl / .csv path of text,label rows. A file's
            label is either one of `label_words` or an integer index into them.
        label_words: the words the model is asked to say, one per class (a file needs them).
        limit: most queries (default 200 for sentiment, drawn from its test split, 50 for
            continents; a file gives at most half its rows, default 200); the rest of a file or
            of continents is the demonstration pool, sentiment's is its training split.
        seed: which queries are picked.
    """
    path = Path(source).expanduser()
    if str(source) == "sentiment":
        from attnlab.data.sentiment import load_sentiment

        data = load_sentiment(quiet=True)
        rng = np.random.default_rng(seed)
        test = rng.permutation(len(data.texts["test"]))[: limit or 200]
        return LabelledSet("sentiment", list(data.texts["train"]),
                           data.labels["train"].tolist(),
                           [data.texts["test"][i] for i in test],
                           data.labels["test"][test].tolist(), list(data.label_names))
    if str(source) == "continents":
        from attnlab.data.continents import CONTINENTS, load_continents

        texts, names = load_continents()
        classes = list(CONTINENTS)
        return _split("continents", texts, [classes.index(n) for n in names], classes,
                      limit=limit or 50, seed=seed)
    if not path.is_file():
        raise AttnlabError(f"no labelled set '{source}'{did_you_mean(str(source), ICL_TASKS)}; "
                           f"give one of {', '.join(ICL_TASKS)} or a .jsonl/.csv file")
    if not label_words:
        raise AttnlabError(f"{path}: give the label words (--labels a,b,...) for a file")
    texts, raw = read_labelled_file(path)
    labels = []
    for i, value in enumerate(raw):
        if value in label_words:
            labels.append(label_words.index(value))
        elif value.lstrip("-").isdigit() and 0 <= int(value) < len(label_words):
            labels.append(int(value))
        else:
            raise AttnlabError(f"{path} row {i + 1}: label '{value}' is neither one of "
                               f"{', '.join(label_words)} nor an index 0..{len(label_words) - 1}")
    return _split(str(path), texts, labels, list(label_words), limit=limit, seed=seed)


@dataclass(frozen=True)
class PromptFormat:
    """How one example becomes text.

    Args:
        template: contains `{text}` then `{label}` once each, e.g. "Review: {text}\\nSentiment:
            {label}". Text after `{label}` ends each demonstration.
        separator: between demonstrations and before the query.
    """

    template: str
    separator: str = "\n\n"

    def __post_init__(self):
        for slot in ("{text}", "{label}"):
            if self.template.count(slot) != 1:
                raise AttnlabError(f"template must contain {slot} exactly once, got "
                                   f"{self.template!r}")
        if self.template.index("{text}") > self.template.index("{label}"):
            raise AttnlabError(f"template must put {{text}} before {{label}}, got "
                               f"{self.template!r}")

    def demonstration(self, text: str, word: str) -> str:
        return self.template.replace("{text}", text).replace("{label}", word)

    def query(self, text: str) -> tuple[str, str]:
        """(query text up to the label, whitespace the template puts before the label)."""
        head = self.template[: self.template.index("{label}")].replace("{text}", text)
        stripped = head.rstrip(" ")
        return stripped, head[len(stripped):]


def _special_prefix(tokenizer) -> list[int]:
    """Ids a tokenizer puts before any text (a bos token), [] for most."""
    return list(tokenizer.encode(""))


def encode_piece(tokenizer, text: str, *, first: bool) -> list[int]:
    """Ids of one prompt piece; only the first piece keeps the tokenizer's bos token."""
    ids, special = list(tokenizer.encode(text)), _special_prefix(tokenizer)
    if not first and special and ids[: len(special)] == special:
        ids = ids[len(special):]
    return ids


def label_token_ids(tokenizer, words: list[str], lead: str, *,
                    multi_token: bool = False) -> list[list[int]]:
    """Token ids of each label word as it follows the prompt (`lead` + word).

    Raises `AttnlabError` for a word that is not a single token (unless `multi_token`), or
    two words that encode to the same tokens (a word whose tokens begin another's is fine:
    each is scored as its whole sequence).
    """
    out = []
    for word in words:
        ids = encode_piece(tokenizer, lead + word, first=False)
        if not ids:
            raise AttnlabError(f"label word {word!r} encodes to no tokens")
        if len(ids) > 1 and not multi_token:
            raise AttnlabError(f"label word {lead + word!r} is {len(ids)} tokens, not a single "
                               f"token; pick a one-token word, or score whole words with "
                               f"multi-token labels (--multi-token)")
        out.append(ids)
    if len({tuple(i) for i in out}) < len(out):
        raise AttnlabError(f"label words {', '.join(words)} do not all encode differently")
    return out


def _expand_cache(cache, n: int):
    """A copy of a batch-1 KV cache repeated to `n` rows (the original stays untouched)."""
    cache = copy.deepcopy(cache)
    cache.reorder(torch.zeros(n, dtype=torch.long, device=cache[0][0].k.device))
    return cache


@torch.no_grad()
def score_labels(model, prefix: list[int], queries: list[list[int]],
                 candidates: list[list[int]], *, batch_size: int = 16) -> torch.Tensor:
    """log p(candidate | prefix + query) for every query and candidate, summed over the
    candidate's tokens: (N, C).

    The prefix (the demonstrations) runs once; its KV cache is repeated for each batch of
    queries. With one-token candidates a row is a query and one forward scores every
    candidate; otherwise a row is query + candidate. Rows are right-padded: under causal
    attention padding after a token never changes it.

    Args:
        model: attnlab's `GPT` (`new_cache`, `forward_features(idx, cache=)`,
            `forward_head`).
        prefix: ids shared by every prompt ([] for none).
        queries: each query's ids (nonempty), continuing `prefix`.
        candidates: each label's ids.
        batch_size: rows per forward.
    """
    device = next(model.parameters()).device
    single = all(len(c) == 1 for c in candidates)
    cache = None
    if prefix:
        cache = model.new_cache()
        model(torch.tensor([prefix], device=device), cache=cache)
    # rows: (ids, query index, candidate index or -1 for all, position of the first label)
    rows = []
    for qi, q in enumerate(queries):
        if single:
            rows.append((q, qi, -1, len(q) - 1))
        else:
            rows.extend((q + c[:-1], qi, ci, len(q) - 1) for ci, c in enumerate(candidates))
    scores = torch.zeros(len(queries), len(candidates), dtype=torch.float64)
    first_ids = torch.tensor([c[0] for c in candidates], device=device)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(len(r[0]) for r in chunk)
        pad = chunk[0][0][0]  # any valid id; padded positions are never read
        x = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in chunk], device=device)
        c = _expand_cache(cache, len(chunk)) if cache is not None else None
        h = model.forward_features(x, cache=c)  # (b, width, d)
        # the head and the softmax only where a label token is predicted: most positions of a
        # row are the query's text
        n_read = [1 if ci < 0 else len(candidates[ci]) for _, _, ci, _ in chunk]
        b_idx = torch.tensor([b for b, n in enumerate(n_read) for _ in range(n)], device=device)
        p_idx = torch.tensor([at + j for (_, _, _, at), n in zip(chunk, n_read, strict=True)
                              for j in range(n)], device=device)
        logp = F.log_softmax(model.forward_head(h[b_idx, p_idx]).double(), dim=-1)  # (n, V)
        row = 0
        for (_, qi, ci, _), n in zip(chunk, n_read, strict=True):
            if ci < 0:
                scores[qi] = logp[row, first_ids].cpu()
            else:
                ids = torch.tensor(candidates[ci], device=device)
                scores[qi, ci] = logp[torch.arange(row, row + n, device=device), ids].sum().cpu()
            row += n
    return scores


@torch.no_grad()
def score_labels_naive(model, prompt: list[int], candidates: list[list[int]]) -> torch.Tensor:
    """Reference twin of `score_labels` for one prompt: a full forward per candidate, (C,)."""
    device = next(model.parameters()).device
    out = []
    for cand in candidates:
        x = torch.tensor([prompt + cand], device=device)
        logp = F.log_softmax(model(x).double(), dim=-1)[0]  # (T, V)
        out.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cand)))
    return torch.tensor(out, dtype=torch.float64)


@dataclass
class ICLResult:
    """Accuracy of k-shot prompting at each k over several draws of the demonstrations."""

    task: str
    model: str
    template: str
    separator: str
    labels: list[str]
    shots: list[int]
    queries: int
    pool: int
    accuracy: dict[int, list[float]] = field(default_factory=dict)  # k -> one per draw
    chance: float = 0.0
    majority: float = 0.0

    def mean(self, k: int) -> float:
        return float(np.mean(self.accuracy[k]))

    def std(self, k: int) -> float:
        return float(np.std(self.accuracy[k]))

    def to_dict(self) -> dict:
        return {"task": self.task, "model": self.model, "template": self.template,
                "separator": self.separator, "labels": self.labels, "shots": self.shots,
                "queries": self.queries, "pool": self.pool, "chance": self.chance,
                "majority": self.majority,
                "accuracy": {str(k): v for k, v in self.accuracy.items()},
                "mean": {str(k): self.mean(k) for k in self.shots},
                "std": {str(k): self.std(k) for k in self.shots}}

    @classmethod
    def from_dict(cls, d: dict) -> ICLResult:
        """The result `to_dict` wrote (JSON keys of k are strings)."""
        return cls(d["task"], d["model"], d["template"], d["separator"], d["labels"],
                   d["shots"], d["queries"], d["pool"],
                   {int(k): v for k, v in d["accuracy"].items()}, d["chance"], d["majority"])

    def table(self) -> str:
        """Markdown table: k, mean accuracy, std over draws, min, max."""
        lines = ["| k | accuracy (mean) | std over draws | min | max | draws |",
                 "|---:|---:|---:|---:|---:|---:|"]
        for k in self.shots:
            a = self.accuracy[k]
            lines.append(f"| {k} | {self.mean(k):.3f} | {self.std(k):.3f} | {min(a):.3f} | "
                         f"{max(a):.3f} | {len(a)} |")
        return "\n".join(lines)


def icl_accuracy(model, tokenizer, data: LabelledSet, *, template: str,
                 label_words: list[str], separator: str = "\n\n",
                 shots: tuple[int, ...] = (0, 1, 2, 4, 8, 16), draws: int = 5, seed: int = 0,
                 multi_token: bool = False, batch_size: int = 16, progress: bool = True,
                 model_name: str = "") -> ICLResult:
    """k-shot accuracy of `model` on `data` at each k in `shots`, over `draws` random draws of
    the demonstrations.

    Args:
        model: a causal LM (attnlab `GPT`), in eval mode.
        tokenizer: its tokenizer (`encode`).
        data: pool and queries (`load_labelled`).
        template, separator: the `PromptFormat`.
        label_words: one word per class of `data`.
        shots: the k values.
        draws: demonstration sets per k (k = 0 has one prompt and is run once).
        seed: seeds the draws.
        multi_token: allow label words of several tokens (scores summed).
        batch_size: query rows per forward.
        progress: a tqdm bar over (k, draw).
        model_name: recorded in the result.
    """
    fmt = PromptFormat(template, separator)
    if len(label_words) != len(data.label_names):
        raise AttnlabError(f"{len(label_words)} label words for {len(data.label_names)} classes "
                           f"({', '.join(data.label_names)}); give one word per class")
    if len(set(label_words)) != len(label_words):
        raise AttnlabError(f"label words repeat: {', '.join(label_words)}")
    if draws < 1 or not shots or min(shots) < 0:
        raise AttnlabError("need draws >= 1 and shot counts k >= 0")
    if max(shots) > len(data.pool_texts):
        raise AttnlabError(f"k = {max(shots)} shots exceed the {len(data.pool_texts)} "
                           f"examples of the demonstration pool; lower --shots")
    if not data.query_texts:
        raise AttnlabError(f"labelled set {data.name} has no queries")
    lead = fmt.query("")[1]
    candidates = label_token_ids(tokenizer, label_words, lead, multi_token=multi_token)
    gold = np.asarray(data.query_labels)
    counts = np.bincount(gold, minlength=len(label_words))
    result = ICLResult(data.name, model_name, template, separator, list(label_words),
                       list(shots), len(gold), len(data.pool_texts),
                       chance=1.0 / len(label_words), majority=float(counts.max() / len(gold)))
    jobs = [(k, d) for k in shots for d in range(1 if k == 0 else draws)]
    max_len = getattr(getattr(model, "config", None), "max_len", None)
    for k, d in tqdm(jobs, desc=f"icl {data.name}", disable=not progress):
        rng = np.random.default_rng([seed, k, d])
        picked = rng.choice(len(data.pool_texts), size=k, replace=False)
        prefix: list[int] = []
        for i, j in enumerate(picked):
            text = (separator if i else "") + fmt.demonstration(
                data.pool_texts[j], label_words[data.pool_labels[j]])
            prefix += encode_piece(tokenizer, text, first=i == 0)
        queries = [encode_piece(tokenizer, (separator if k else "") + fmt.query(t)[0],
                                first=k == 0) for t in data.query_texts]
        # what the model is fed: a label's last token is only predicted, never an input
        longest = len(prefix) + max(map(len, queries)) + max(map(len, candidates)) - 1
        if max_len is not None and longest > max_len:
            raise AttnlabError(f"a {k}-shot prompt is {longest} tokens, over the model's "
                               f"max_len {max_len}; use fewer shots")
        scores = score_labels(model, prefix, queries, candidates, batch_size=batch_size)
        correct = scores.argmax(-1).numpy() == gold
        result.accuracy.setdefault(k, []).append(float(correct.mean()))
    return result


def plot_icl(results: list[ICLResult], out: str | Path, *, title: str = "") -> Path:
    """Accuracy against k (mean, with a band of one std over draws and every draw as a dot),
    chance as a dotted line, one panel per result."""
    from attnlab.viz.plotting import figure
    from attnlab.viz.plotting import save as save_png

    fig, axes = figure(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        x = np.arange(len(r.shots))  # k on an even grid: 0, 1, 2, 4, 8, 16
        mean = np.array([r.mean(k) for k in r.shots])
        std = np.array([r.std(k) for k in r.shots])
        ax.plot(x, mean, "o-", label="mean over draws")
        ax.fill_between(x, mean - std, mean + std, alpha=0.25, label="+- 1 std")
        for xi, k in zip(x, r.shots, strict=True):
            ax.plot([xi] * len(r.accuracy[k]), r.accuracy[k], ".", color="gray", alpha=0.6)
        ax.axhline(r.chance, color="gray", ls=":", lw=1, label="chance")
        ax.axhline(r.majority, color="gray", ls="--", lw=1, label="majority class")
        ax.set_xticks(x, [str(k) for k in r.shots])
        ax.set(xlabel="k (demonstrations)", ylabel="accuracy",
               title=f"{r.task} ({r.queries} queries)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_png(fig, out, title=title)
