"""A swapped model keeps the train / eval mode of the model it came
from, and weights the new mechanism cannot take are one AttnlabError (not a load_state_dict
RuntimeError that the CLI would print as a traceback)."""

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig
from attnlab.models.swap import with_attention


def test_swap_keeps_the_mode_of_the_model_it_came_from():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_len=16,
                          dropout=0.5)).eval()
    idx = torch.randint(0, 20, (2, 10))
    swapped = with_attention(model, "full", {"impl": "eager"}).model
    assert not swapped.training and not any(m.training for m in swapped.modules())
    with torch.no_grad():  # dropout 0.5 would move the logits in training mode
        torch.testing.assert_close(swapped(idx), model(idx), atol=1e-5, rtol=1e-5)
    assert with_attention(model.train(), "local", {"window": 4}).model.training


def test_a_swap_whose_weights_have_another_shape_is_one_clear_error():
    enc = Encoder(EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_len=32,
                                attention="linformer",
                                attention_options={"seq_len": 32, "k": 4}))
    with pytest.raises(AttnlabError, match=r"attention 'linformer' needs .* of shape"):
        with_attention(enc, "linformer", {"seq_len": 32, "k": 8})
    same = with_attention(enc, "linformer", {"seq_len": 32, "k": 4})
    for name, tensor in enc.state_dict().items():  # the projections E, F carried over too
        torch.testing.assert_close(same.model.state_dict()[name], tensor)
    assert same.new == [] and same.dropped == []
