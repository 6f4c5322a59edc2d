"""The PyTorch contenders: Hugging Face's GPT2LMHeadModel and torch.nn.Transformer with the same
sizes, forward and AdamW training step."""

from __future__ import annotations

from .common import LEARNING_RATE, WEIGHT_DECAY, tokens


def gpt2_model(cfg, **config):
    """A ``GPT2LMHeadModel`` of the benchmark's sizes ``cfg``, random weights (torch's RNG)."""
    import transformers

    sizes = dict(vocab_size=cfg["N_V"], n_positions=cfg["ell_max"], n_embd=cfg["d_e"])
    sizes.update(n_layer=cfg["L"], n_head=cfg["H"], n_inner=cfg["d_mlp"])
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes, **config))


def torch_gpt2(cfg, rng):
    import torch
    import transformers

    torch.manual_seed(0)
    model = gpt2_model(cfg, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    ids = torch.as_tensor(tokens(rng, cfg["batch"], cfg["ell_max"], cfg["N_V"]), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)

    def fwd():
        model.eval()
        with torch.no_grad():
            return model(ids).logits

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        model(ids, labels=ids).loss.backward()
        opt.step()

    return fwd, step, transformers.__version__


def torch_seq2seq(cfg, rng):
    """``torch.nn.Transformer`` (Post-LN, ReLU, as Algorithm 8) with Algorithm 8's embeddings and
    unembedding: token embedding, learned positions, a linear ``W_u``."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    d, ell, N_V = cfg["d_e"], cfg["ell_max"], cfg["N_V"]

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.W_e = nn.Embedding(N_V, d)
            self.W_p = nn.Parameter(0.02 * torch.randn(ell, d))
            self.core = nn.Transformer(
                d,
                cfg["H"],
                cfg["L_enc"],
                cfg["L_dec"],
                cfg["d_mlp"],
                dropout=0.0,
                batch_first=True,
            )
            self.W_u = nn.Linear(d, N_V, bias=False)

        def forward(self, z, x):
            n = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(n)
            Z = self.W_e(z) + self.W_p[: z.shape[1]]
            X = self.W_e(x) + self.W_p[:n]
            return self.W_u(self.core(Z, X, tgt_mask=mask, tgt_is_causal=True))

    model = Seq2Seq()
    z = torch.as_tensor(tokens(rng, cfg["batch"], ell, N_V), dtype=torch.long)
    x = torch.as_tensor(tokens(rng, cfg["batch"], ell, N_V), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    loss_fn = nn.CrossEntropyLoss()

    def fwd():
        model.eval()
        with torch.no_grad():
            model(z, x)

    def step():
        model.train()
        opt.zero_grad(set_to_none=True)
        logits = model(z, x)[:, :-1]
        loss_fn(logits.reshape(-1, N_V), x[:, 1:].reshape(-1)).backward()
        opt.step()

    return fwd, step
