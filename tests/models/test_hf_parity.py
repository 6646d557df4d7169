"""attnlab's GPT against Hugging Face GPT-2 and LLaMA on identical (random) weights.

Nothing is downloaded: the Hugging Face models are built from tiny configs with random weights,
re-drawn at a larger scale than their default init so attention is far from uniform and a wrong
mask, position or head grouping moves the logits well beyond the tolerance.
"""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from attnlab.interop import gpt_from_hf
from attnlab.models import GPTConfig

V, D, H, H_KV, L, N_POS = 97, 64, 4, 2, 2, 32
ATOL = RTOL = 1e-4

@torch.no_grad()
def redraw_(hf: nn.Module) -> None:
    """Random weights of a useful scale: unit embeddings, matrices ~ N(0, 1.5 / in), norm
    scales ~ 1 +- 0.2, biases ~ 0.1."""
    for name, p in hf.named_parameters():
        if "wte" in name or "wpe" in name or "embed_tokens" in name:
            p.normal_(0.0, 1.0)
        elif "norm" in name or ".ln_" in name:
            p.copy_(1.0 + 0.2 * torch.randn_like(p) if name.endswith("weight")
                    else 0.1 * torch.randn_like(p))
        elif p.dim() == 2:
            fan_in = p.shape[0] if "c_" in name else p.shape[1]  # Conv1D is (in, out)
            p.normal_(0.0, (1.5 / fan_in) ** 0.5)
        else:
            p.normal_(0.0, 0.1)


# ---------------------------------------------------------------------------------------------
# GPT-2


def gpt2_pair():
    torch.manual_seed(0)
    hf_cfg = GPT2Config(vocab_size=V, n_positions=N_POS, n_embd=D, n_layer=L, n_head=H,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-3, bos_token_id=V - 1,
                        eos_token_id=V - 1, tie_word_embeddings=True)
    hf_cfg._attn_implementation = "eager"
    hf = GPT2LMHeadModel(hf_cfg).eval()
    redraw_(hf)
    assert hf.lm_head.weight is hf.transformer.wte.weight
    cfg = GPTConfig(vocab_size=V, d_model=D, n_heads=H, n_layers=L, max_len=N_POS,
                    positional="learned", activation="gelu_tanh", norm="layernorm",
                    norm_eps=hf_cfg.layer_norm_epsilon, norm_first=True, final_norm=True,
                    tie_embeddings=True, bias=True)
    model = gpt_from_hf(hf_cfg.to_dict(), hf.state_dict()).eval()
    assert model.config == cfg  # the HF config maps onto exactly this attnlab config
    assert model.head.weight is model.tok_emb.weight  # tied, like hf.lm_head
    return model, hf


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_pair()


def test_gpt2_logits_match(gpt2):
    model, hf = gpt2
    idx = torch.randint(V, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert theirs.std() > 0.5  # a scale at which a wrong part is visible
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)


def test_gpt2_logits_match_with_right_padding(gpt2):
    model, hf = gpt2
    idx = torch.randint(V, (3, 16), generator=torch.Generator().manual_seed(2))
    lengths = [16, 11, 5]
    keep = torch.arange(16)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) True = real
    idx = idx.masked_fill(~keep, 0)
    with torch.no_grad():
        ours = model(idx, key_padding_mask=keep)
        theirs = hf(idx, attention_mask=keep.long()).logits
        alone = [hf(idx[b:b + 1, :n]).logits[0] for b, n in enumerate(lengths)]
    for b, n in enumerate(lengths):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(ours[b, :n], alone[b], atol=ATOL, rtol=RTOL)


def left_padded(T, lengths, seed):
    """Token ids left-padded to T, the keep mask (True = real) and each row's own positions."""
    idx = torch.randint(V, (len(lengths), T), generator=torch.Generator().manual_seed(seed))
    keep = torch.arange(T)[None, :] >= T - torch.tensor(lengths)[:, None]
    positions = (keep.long().cumsum(1) - 1).clamp(min=0)
    return idx.masked_fill(~keep, 0), keep, positions


def test_gpt2_left_padding_with_positions_matches(gpt2):
    model, hf = gpt2
    T, lengths = 14, [14, 9, 3]
    idx, keep, positions = left_padded(T, lengths, seed=6)
    with torch.no_grad():
        ours = model(idx, key_padding_mask=keep, positions=positions)
        theirs = hf(idx, attention_mask=keep.long(), position_ids=positions).logits
        alone = [hf(idx[b:b + 1, T - n:]).logits[0] for b, n in enumerate(lengths)]
    for b, n in enumerate(lengths):
        torch.testing.assert_close(ours[b, T - n:], theirs[b, T - n:], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(ours[b, T - n:], alone[b], atol=ATOL, rtol=RTOL)


def test_gpt2_greedy_decoding_with_kv_cache_matches_full_recompute(gpt2):
    model, hf = gpt2
    prompt = torch.randint(V, (2, 5), generator=torch.Generator().manual_seed(3))
    seq = prompt
    cache = model.new_cache()
    new_tokens = 10
    with torch.no_grad():
        logits = model(prompt, cache=cache)[:, -1]
        for step in range(new_tokens):
            full = hf(seq).logits[:, -1]  # HF recomputes the whole sequence each step
            torch.testing.assert_close(logits, full, atol=ATOL, rtol=RTOL)
            ours_next, hf_next = logits.argmax(-1), full.argmax(-1)
            assert torch.equal(ours_next, hf_next), f"step {step}: {ours_next} vs {hf_next}"
            seq = torch.cat([seq, ours_next[:, None]], dim=1)
            if step < new_tokens - 1:
                logits = model(ours_next[:, None], cache=cache)[:, -1]
    assert seq.shape == (2, 5 + new_tokens)
    assert cache.seen == 5 + new_tokens - 1
    assert seq[:, 5:].unique().numel() > 1  # decoding actually went somewhere


# ---------------------------------------------------------------------------------------------
# LLaMA


def llama_pair():
    torch.manual_seed(0)
    hf_cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=96, num_hidden_layers=L,
                         num_attention_heads=H, num_key_value_heads=H_KV,
                         max_position_embeddings=N_POS, rms_norm_eps=1e-3,
                         rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                         attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                         attention_dropout=0.0, bos_token_id=1, eos_token_id=2)
    hf_cfg._attn_implementation = "eager"
    hf = LlamaForCausalLM(hf_cfg).eval()
    redraw_(hf)
    cfg = GPTConfig(vocab_size=V, d_model=D, n_heads=H, n_kv_heads=H_KV, n_layers=L,
                    d_ff=hf_cfg.intermediate_size, max_len=N_POS, positional="rope",
                    rope_theta=hf_cfg.rope_parameters["rope_theta"], norm="rmsnorm",
                    norm_eps=hf_cfg.rms_norm_eps, activation="swiglu", bias=False,
                    norm_first=True, final_norm=True, tie_embeddings=False)
    model = gpt_from_hf(hf_cfg.to_dict(), hf.state_dict()).eval()
    assert model.config == cfg  # the HF config maps onto exactly this attnlab config
    return model, hf


@pytest.fixture(scope="module")
def llama():
    return llama_pair()


def test_llama_config_is_grouped_query(llama):
    model, _ = llama
    attn = model.stack.blocks[0].self_attn
    assert attn.n_kv_heads == H_KV < attn.n_heads == H
    assert attn.k_proj.weight.shape == (H_KV * D // H, D)
    assert model.head.weight is not model.tok_emb.weight


def test_llama_logits_match(llama):
    model, hf = llama
    idx = torch.randint(V, (3, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert theirs.std() > 0.5
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("chunks", [(6, *[1] * 10), (1, 4, 1, 7, 3)], ids=["prompt+1s", "mixed"])
def test_llama_kv_cached_steps_match_full_sequence(llama, chunks):
    model, hf = llama
    T = sum(chunks)
    idx = torch.randint(V, (2, T), generator=torch.Generator().manual_seed(5))
    cache = model.new_cache()
    pieces, start = [], 0
    with torch.no_grad():
        for n in chunks:
            assert cache.seen == start
            pieces.append(model(idx[:, start:start + n], cache=cache))
            start += n
        stepped = torch.cat(pieces, dim=1)
        full = hf(idx).logits
    assert stepped.shape == full.shape == (2, T, V)
    torch.testing.assert_close(stepped, full, atol=ATOL, rtol=RTOL)


def test_llama_left_padded_batch_then_cached_steps_match_rows_alone(llama):
    """A left-padded prompt batch with per-row positions, continued token by token from the KV
    cache, gives every row the logits Hugging Face gives that row alone, unpadded."""
    model, hf = llama
    T, lengths, steps = 10, [10, 6, 2], 5
    idx, keep, positions = left_padded(T, lengths, seed=7)
    more = torch.randint(V, (len(lengths), steps), generator=torch.Generator().manual_seed(8))
    cache = model.new_cache()
    with torch.no_grad():
        logits = [model(idx, key_padding_mask=keep, positions=positions, cache=cache)]
        pos = positions[:, -1:]
        for s in range(steps):
            pos = pos + 1
            logits.append(model(more[:, s:s + 1], positions=pos, cache=cache))
        ours = torch.cat(logits, dim=1)  # (B, T + steps, V)
        for b, n in enumerate(lengths):
            row = torch.cat([idx[b, T - n:], more[b]])[None]
            torch.testing.assert_close(ours[b, T - n:], hf(row).logits[0], atol=ATOL, rtol=RTOL)
