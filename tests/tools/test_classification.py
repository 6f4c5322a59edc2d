"""Classification on Algorithms 9 and 10 (formal_algorithms.variants.classification) and the
``finetune`` command.

The head and loss equations are checked against numpy float64 transcriptions of Algorithms 9
(lines 1-11) and 10 (lines 1-10) built from tests/paper_numpy.py's pieces; the training routines
by learning a tiny separable task.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import paper_numpy as P
import pytest
from params import perturbed

from formal_algorithms.cli.main import main
from formal_algorithms.paper.parameters import init_d_transformer, init_e_transformer
from formal_algorithms.practice.trainer import make_optimizer
from formal_algorithms.variants import classification as C

HP = dict(N_V=9, ell_max=8, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float64)


def np_e_features(x, theta, eps=1e-5):
    """Algorithm 9, lines 1-11."""
    X = P.embed(x, theta.W_e, theta.W_p)
    for l in theta.layers:
        X = X + P.mh_attention(X, X, l.W, np.ones((len(x), len(x)), bool))
        X = P.layer_norm_columns(X, l.gamma1, l.beta1, eps)
        X = X + P.n(l.W_mlp2) @ P.gelu(P.n(l.W_mlp1) @ X + P.n(l.b_mlp1)[:, None]) + P.n(
            l.b_mlp2)[:, None]  # fmt: skip
        X = P.layer_norm_columns(X, l.gamma2, l.beta2, eps)
    X = P.gelu(P.n(theta.W_f) @ X + P.n(theta.b_f)[:, None])
    return P.layer_norm_columns(X, theta.gamma, theta.beta, eps)


def np_d_features(x, theta, eps=1e-5):
    """Algorithm 10, lines 1-10."""
    X = P.embed(x, theta.W_e, theta.W_p)
    for l in theta.layers:
        Xt = P.layer_norm_columns(X, l.gamma1, l.beta1, eps)
        X = X + P.mh_attention(Xt, Xt, l.W, P.causal(len(x)))
        Xt = P.layer_norm_columns(X, l.gamma2, l.beta2, eps)
        X = X + P.n(l.W_mlp2) @ P.gelu(P.n(l.W_mlp1) @ Xt + P.n(l.b_mlp1)[:, None]) + P.n(
            l.b_mlp2)[:, None]  # fmt: skip
    return P.layer_norm_columns(X, theta.gamma, theta.beta, eps)


def classifier(kind, N_C=3, seed=0):
    init = init_e_transformer if kind == "e" else init_d_transformer
    theta = perturbed(init(jax.random.key(seed), **HP), seed + 1)
    params = C.init_classifier(jax.random.key(seed + 2), theta, N_C)
    return params._replace(b_c=params.b_c + 0.3 * jnp.arange(N_C))  # a non-zero bias


@pytest.mark.parametrize("kind", ["e", "d"])
def test_head_and_loss_follow_the_equations(kind):
    params = classifier(kind)
    x = np.array([7, 3, 1, 4, 1, 5])
    X = (np_e_features if kind == "e" else np_d_features)(x, params.theta)
    W_c, b_c = P.n(params.W_c), P.n(params.b_c)
    for pooling, h in (("token", X[:, 0] if kind == "e" else X[:, -1]), ("mean", X.mean(axis=1))):
        logits = W_c @ h + b_c
        np.testing.assert_allclose(
            C.classifier_logits(jnp.asarray(x), params, pooling=pooling), logits, atol=1e-10
        )
        log_p = logits - logits.max() - np.log(np.sum(np.exp(logits - logits.max())))
        for c in range(3):
            np.testing.assert_allclose(
                C.c_loss(params, jnp.asarray(x), c, pooling=pooling), -log_p[c], atol=1e-10
            )
        # Padded at the end with a validity mask: the logits of the unpadded sequence.
        x_pad = jnp.asarray(np.concatenate([x, [0, 0]]))
        valid = jnp.arange(8) < 6
        np.testing.assert_allclose(
            C.classifier_logits(x_pad, params, valid=valid, pooling=pooling), logits, atol=1e-10
        )


def separable_data(n, seed):
    """Class c ∈ {0, 1, 2}: sequences of 5-7 tokens drawn from c (probability ½), 3, 4, 5."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(n):
        c = i % 3
        ell = int(rng.integers(5, 8))
        data.append((rng.choice([c, c, c, 3, 4, 5], size=ell).astype(np.int32), c))
    return data


def test_per_sequence_and_minibatch_training_learn():
    train, test = separable_data(24, 0), separable_data(30, 1)
    params = classifier("d", seed=3)
    before = C.c_evaluate(params, test, pooling="mean")
    trained = C.c_training(train, params, N_epochs=8, eta=0.1, pooling="mean")
    loss, accuracy = C.c_evaluate(trained, test, pooling="mean")
    assert loss < 0.6 * before[0] and accuracy > 0.85, (before, loss, accuracy)

    params = classifier("e", seed=4)
    optimizer = make_optimizer(1e-2, N_steps=40, warmup_steps=5)
    trained, history = C.c_train(params, train, jax.random.key(5), optimizer=optimizer,
                                 N_steps=40, batch_size=8)  # fmt: skip
    assert history.shape == (40,) and history[-5:].mean() < 0.5 * history[:5].mean()
    assert C.c_evaluate(trained, test)[1] > 0.7  # chance: 1/3 (measured 0.8)


def test_bad_input_is_named():
    params = classifier("d")
    with pytest.raises(ValueError, match=r"Classification.*'data\[1\]\[1\] \(c_n\)'"):
        C.c_training([(np.array([1, 2]), 0), (np.array([1, 2]), 3)], params, N_epochs=1, eta=0.1)
    with pytest.raises(ValueError, match=r"Classification.*'N_C'"):
        C.init_classifier(jax.random.key(0), params.theta, 1)
    with pytest.raises(ValueError, match=r"Classification.*'params.W_c'"):
        C.c_evaluate(params._replace(W_c=params.W_c[:, :3]), [(np.array([1, 2]), 0)])
    with pytest.raises(ValueError, match=r"Classification.*'x' holds token ids \[99\]"):
        C.classifier_logits(jnp.array([1, 99]), params)
    with pytest.raises(ValueError, match=r"Classification.*'eta'"):
        C.c_training([(np.array([1, 2]), 0)], params, N_epochs=1, eta=float("inf"))
    with pytest.raises(ValueError, match=r"Classification.*'pooling'"):
        C.classifier_logits(jnp.array([1, 2]), params, pooling="max")


def test_finetune_command_tiny_run(tmp_path, capsys):
    out = tmp_path / "ft"
    status = main(["finetune", "--classes", "json,argparse", "--unlabelled", "shutil",
                   "--passage", "30", "--test-per-class", "6", "--labels", "2,4", "--seeds", "2",
                   "--pretrain-steps", "4", "--finetune-steps", "3", "--batch-size", "8",
                   "--d-e", "8", "--layers", "1", "--heads", "2", "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert status == 0, text
    assert "labels/class |       pretrained |     from scratch" in text
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == {"pretrained", "scratch"}
    assert [len(v) for v in results["accuracy"]["scratch"].values()] == [2, 2]
    assert (out / "finetune.png").stat().st_size > 1000
    # The BERT route: an ETransformer pretrained with Algorithm 12, the head on its bos column.
    status = main(["finetune", "--classes", "json,argparse", "--unlabelled", "", "--body", "e",
                   "--pooling", "token", "--passage", "14", "--test-per-class", "4",
                   "--labels", "2", "--seeds", "1", "--pretrain-steps", "2", "--finetune-steps",
                   "2", "--batch-size", "4", "--d-e", "8", "--layers", "1", "--heads", "2",
                   "--out", str(tmp_path / "ft_e")])  # fmt: skip
    text = capsys.readouterr().out
    assert status == 0 and "ETransformer (Algorithm 9)" in text and "bos" in text, text
    assert json.loads((tmp_path / "ft_e" / "results.json").read_text())["body"] == "e"
    for argv, message in (
        (["--labels", "0"], "--labels must be comma-separated integers >= 1"),
        (["--classes", "json,json"], "--classes must name each package once"),
        (["--classes", "json"], "--classes must name at least 2 packages"),
    ):
        with pytest.raises(SystemExit, match="2"):
            main(["finetune", *argv, "--out", str(out)])
        assert message in capsys.readouterr().err
