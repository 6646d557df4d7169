"""With model.pooling left at its default, a text-classify run pools as its checkpoint does:
BERT's pooler (dense + tanh on [CLS]) where the folder has its weights, the mean over real
tokens where it has none (sentence-transformers folders saved without a pooler)."""

import torch
from transformers import BertModel

from attnlab.tasks.text_classify import TextClassificationRun, encode_texts, pad_batch
from tests.tasks.test_text_classify import (  # noqa: F401 (fixtures)
    bert_folder,
    home,
    ratings,
    run_cfg,
)


def test_default_pooling_follows_the_checkpoint(ratings, bert_folder, tmp_path):  # noqa: F811
    hf = BertModel.from_pretrained(bert_folder, attn_implementation="eager").eval()
    no_pooler = tmp_path / "no-pooler"
    BertModel(hf.config, add_pooling_layer=False).eval().save_pretrained(no_pooler)
    state = {k: v for k, v in hf.state_dict().items() if not k.startswith("pooler.")}
    model = BertModel(hf.config, add_pooling_layer=False)
    model.load_state_dict(state)
    model.save_pretrained(no_pooler)
    (no_pooler / "tokenizer.json").write_text((bert_folder / "tokenizer.json").read_text())
    for folder, want in ((bert_folder, "cls"), (no_pooler, "mean")):
        cfg = run_cfg(ratings, pretrained=str(folder))
        task, tok = TextClassificationRun().build(cfg, tmp_path / want, device="cpu",
                                                  dist=None, fresh=True)
        assert cfg.model.pooling == want
        x, mask = pad_batch(encode_texts(tok, ["a moving story .", "the cast exists"], 64),
                            tok.pad_id)
        with torch.no_grad():
            h = task.model.eval().forward_features(x, key_padding_mask=mask)
            pooled = task.model.forward_head(h, key_padding_mask=mask, pre_logits=True)
            out = hf(input_ids=x, attention_mask=mask.long())
        if want == "cls":
            torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=1e-5)
        else:
            m = mask[..., None].float()
            mean = (out.last_hidden_state * m).sum(1) / m.sum(1)
            torch.testing.assert_close(pooled, mean, atol=1e-5, rtol=1e-5)
