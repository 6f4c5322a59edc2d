"""The catalogue of bad input: every public entry point raises ValueError/TypeError naming the
algorithm (or function), the argument and what was expected, instead of a silent result.
(The command line's own one-line errors are in tests/test_cli.py.)"""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms.paper import inference as inf
from formal_algorithms.paper import training
from formal_algorithms.paper.tokenization import CharTokenizer
from formal_algorithms.practice import cache, trainer
from formal_algorithms.practice.checkpoint import save_checkpoint

key = jax.random.key(0)
HP = dict(N_V=9, ell_max=6, H=2, d_e=4, d_mlp=8)
D = fa.init_d_transformer(key, L=1, **HP)
E = fa.init_e_transformer(key, L=1, **HP)
ED = fa.init_ed_transformer(key, L_enc=1, L_dec=1, **HP)
W = fa.init_mh_attention(key, 2, 4, 4, 2, 2, 4)
x = jnp.asarray([1, 2, 3])
X = jnp.ones((4, 3))

CATALOGUE = [
    # Algorithms 1-7
    (
        "token id ≥ N_V",
        lambda: fa.token_embedding(9, D.W_e),
        ValueError,
        r"token_embedding \(Algorithm 1\): argument 'v' = 9 is outside \[0, 9\)",
    ),
    (
        "negative position",
        lambda: fa.positional_embedding(-1, D.W_p),
        ValueError,
        r"positional_embedding \(Algorithm 2\): argument 't' = -1",
    ),
    (
        "float position",
        lambda: fa.positional_embedding(jnp.asarray(1.0), D.W_p),
        TypeError,
        r"Algorithm 2\): argument 't' must be an integer index",
    ),
    (
        "tokens outside vocabulary",
        lambda: fa.embed(jnp.asarray([3, 12]), D.W_e, D.W_p),
        ValueError,
        r"embed \(eq. 1\): argument 'x' holds token ids \[12\] outside \[0, N_V = 9\)",
    ),
    (
        "non-integer tokens",
        lambda: fa.embed(jnp.asarray([0.0, 1.0]), D.W_e, D.W_p),
        TypeError,
        r"embed \(eq. 1\): argument 'x' must hold integer token ids, got dtype float",
    ),
    (
        "token matrix",
        lambda: fa.embed(jnp.ones((2, 2), int), D.W_e, D.W_p),
        ValueError,
        r"argument 'x' must be a 1-D token sequence",
    ),
    (
        "too long for W_p",
        lambda: fa.embed(jnp.zeros(7, int), D.W_e, D.W_p),
        ValueError,
        r"argument 'x' has length 7 > ell_max = 6",
    ),
    (
        "empty sequence",
        lambda: fa.embed(jnp.zeros(0, int), D.W_e, D.W_p),
        ValueError,
        r"argument 'x' is empty",
    ),
    (
        "mask of wrong shape",
        lambda: fa.mh_attention(X, X, W, jnp.ones((3, 4), bool)),
        ValueError,
        r"mh_attention \(Algorithm 5\): argument 'Mask' has shape \(3, 4\), expected \(3, 3\)",
    ),
    (
        "mask of wrong dtype",
        lambda: fa.attention(X, X, W.head(0), jnp.full((3, 3), 0.5)),
        TypeError,
        r"attention \(Algorithm 4\): argument 'Mask' must be boolean or 0/1",
    ),
    (
        "context of wrong width",
        lambda: fa.mh_attention(X, jnp.ones((5, 3)), W),
        ValueError,
        r"Algorithm 5\): argument 'Z' has shape \(5, 3\), expected \(4, \*\)",
    ),
    (
        "layer norm width",
        lambda: fa.layer_norm(jnp.ones(3), jnp.ones(4), jnp.zeros(4)),
        ValueError,
        r"layer_norm \(Algorithm 6\): argument 'e' has shape \(3,\), expected \(4,\) to match",
    ),
    (
        "unembedding width",
        lambda: fa.unembedding(jnp.ones(5), D.W_u),
        ValueError,
        r"unembedding \(Algorithm 7\): argument 'e' has shape \(5,\)",
    ),
    (
        "odd d_e sinusoid",
        lambda: fa.paper_sinusoidal_W_p(5, 4),
        ValueError,
        r"paper_sinusoidal_W_p: argument 'd_e' = 5 must be even",
    ),
    # Algorithms 8-10 and θ
    (
        "Alg 10 token id",
        lambda: fa.d_transformer(jnp.asarray([0, 9]), D),
        ValueError,
        r"DTransformer \(Algorithm 10\): argument 'x' holds token ids \[9\]",
    ),
    (
        "Alg 9 too long",
        lambda: fa.e_transformer(jnp.zeros(8, int), E),
        ValueError,
        r"ETransformer \(Algorithm 9\): argument 'x' has length 8 > ell_max = 6",
    ),
    (
        "Alg 8 empty context",
        lambda: fa.ed_transformer(jnp.zeros(0, int), x, ED),
        ValueError,
        r"EDTransformer \(Algorithm 8\): argument 'z' is empty",
    ),
    (
        "θ leaf of wrong shape",
        lambda: fa.d_transformer(x, D._replace(beta=jnp.zeros(5))),
        ValueError,
        r"DTransformer \(Algorithm 10\): argument 'theta.beta' has shape \(5,\), expected \(4,\)",
    ),
    (
        "θ with a missing field",
        lambda: fa.d_transformer(x, D._replace(layers=(D.layers[0]._replace(W=None),))),
        TypeError,
        r"DTransformer \(Algorithm 10\): argument 'theta.layers\[0\].W' must be a MHAttention",
    ),
    (
        "θ of another algorithm",
        lambda: fa.check_params({"W_e": 1}),
        TypeError,
        r"argument 'theta' must be",
    ),
    (
        "H does not divide d_e",
        lambda: fa.init_d_transformer(key, N_V=9, ell_max=6, L=1, H=3, d_e=4, d_mlp=8),
        ValueError,
        r"init_d_transformer \(Algorithm 10\): argument 'H' = 3 does not divide d_e = 4",
    ),
    # Algorithms 11-13 and the trainer
    (
        "η = 0",
        lambda: training.d_training([x], D, N_epochs=1, eta=0.0),
        ValueError,
        r"DTraining \(Algorithm 13\): argument 'eta' \(η\) must be a finite number > 0, got 0.0",
    ),
    (
        "η = inf",
        lambda: training.ed_training([(x, x)], ED, N_epochs=1, eta=math.inf),
        ValueError,
        r"EDTraining \(Algorithm 11\): argument 'eta' \(η\) must be a finite number > 0, got inf",
    ),
    (
        "p_mask = 1",
        lambda: training.e_training([x], E, key, N_epochs=1, eta=0.1, p_mask=1.0),
        ValueError,
        r"ETraining \(Algorithm 12\): argument 'p_mask' must be in the open interval \(0, 1\), got 1.0",
    ),
    (
        "negative epochs",
        lambda: training.d_training([x], D, N_epochs=-1, eta=0.1),
        ValueError,
        r"DTraining \(Algorithm 13\): argument 'N_epochs' must be an integer >= 0, got -1",
    ),
    (
        "seq2seq data not pairs",
        lambda: training.ed_training([x], ED, N_epochs=1, eta=0.1),
        ValueError,
        r"EDTraining \(Algorithm 11\): argument 'data\[0\]' must be a pair",
    ),
    (
        "training token out of range",
        lambda: training.d_training([jnp.asarray([1, 99])], D, N_epochs=1, eta=0.1),
        ValueError,
        r"DTraining \(Algorithm 13\): argument 'data\[0\]' holds token ids \[99\]",
    ),
    (
        "float tokens in the loss",
        lambda: training.d_loss(D, jnp.asarray([1.0, 2.0])),
        TypeError,
        r"DTraining \(Algorithm 13\): argument 'x' must hold integer token ids",
    ),
    (
        "batch size 0",
        lambda: trainer.train(D, [x], key, optimizer=optax.sgd(0.1), N_steps=1, batch_size=0),
        ValueError,
        r"argument 'batch_size' must be an integer >= 1, got 0",
    ),
    # Algorithms 14-15
    (
        "τ < 0",
        lambda: inf.d_inference(x, D, key, ell_gen=2, tau=-1.0),
        ValueError,
        r"DInference \(Algorithm 14\): argument 'tau' = -1.0 must be in \[0, inf\]",
    ),
    (
        "τ = NaN",
        lambda: inf.d_inference(x, D, key, ell_gen=2, tau=math.nan),
        ValueError,
        r"DInference \(Algorithm 14\): argument 'tau' = nan",
    ),
    (
        "ℓ_gen < 0",
        lambda: inf.d_inference(x, D, key, ell_gen=-1),
        ValueError,
        r"DInference \(Algorithm 14\): argument 'ell_gen' = -1 must be at least 0",
    ),
    (
        "prompt + ℓ_gen > ℓ_max",
        lambda: inf.d_inference(x, D, key, ell_gen=5),
        ValueError,
        r"DInference \(Algorithm 14\): argument 'ell_gen' = 5 with a prompt of length 3 .* > ell_max = 6",
    ),
    (
        "cached τ < 0",
        lambda: cache.d_inference_cached(x, D, key, ell_gen=2, tau=-1.0),
        ValueError,
        r"DInference \(Algorithm 14\): argument 'tau'",
    ),
    (
        "Alg 15 τ < 0",
        lambda: inf.ed_inference(x, ED, key, tau=-2.0),
        ValueError,
        r"EDInference \(Algorithm 15\): argument 'tau' = -2.0",
    ),
    (
        "Alg 15 length guard",
        lambda: inf.ed_inference(x, ED, key, max_length=100),
        ValueError,
        r"EDInference \(Algorithm 15\): argument 'max_length' = 100 > ell_max \+ 1",
    ),
    # tokenization and checkpoints
    (
        "unknown character",
        lambda: CharTokenizer.from_text("abc").encode("abz"),
        ValueError,
        r"CharTokenizer.encode: argument 'text' contains the character 'z'",
    ),
    (
        "empty corpus",
        lambda: CharTokenizer.from_text(""),
        ValueError,
        r"CharTokenizer.from_text: argument 'text' is empty",
    ),
    (
        "checkpoint of a non-θ",
        lambda: save_checkpoint("/nonexistent/x.safetensors", {"a": 1}),
        TypeError,
        r"save_checkpoint: argument 'theta' must be θ of Algorithm 8, 9 or 10",
    ),
]


@pytest.mark.parametrize(
    "call, error, message", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 25


_X, _W1, _b1, _W2, _b2 = (
    jnp.ones((4, 3)),
    jnp.ones((5, 4)),
    jnp.ones(5),
    jnp.ones((4, 5)),
    jnp.ones(4),
)


@pytest.mark.parametrize(
    "args, argument",
    [
        ((_X[0], _W1, _b1, _W2, _b2, fa.relu), "X"),  # a vector, not a matrix of columns
        ((_X, _W1.T, _b1, _W2, _b2, fa.relu), "W_1"),  # (d_e, d_mlp): transposed
        ((_X, _W1, _b2, _W2, _b2, fa.relu), "b_1"),
        ((_X, _W1, _b1, _W2.T, _b2, fa.relu), "W_2"),
        ((_X, _W1, _b1, _W2, _b1, fa.relu), "b_2"),
        ((_X, _W1, _b1, _W2, _b2, "relu"), "activation"),
    ],
)
def test_the_mlp_names_its_bad_argument(args, argument):
    from formal_algorithms.paper.architectures import mlp

    error = TypeError if argument == "activation" else ValueError
    with pytest.raises(error, match=rf"^mlp \(the MLP of Algorithms 8-10\): argument '{argument}'"):
        mlp(*args)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda W: fa.token_embedding(1, W), "token_embedding \\(Algorithm 1\\): argument 'W_e'"),
        (
            lambda W: fa.positional_embedding(1, W),
            "positional_embedding \\(Algorithm 2\\): argument 'W_p'",
        ),
        (
            lambda W: fa.embed(jnp.asarray([1]), W, jnp.ones((3, 4))),
            "embed \\(eq. 1\\): argument 'W_e'",
        ),
        (lambda W: fa.unembedding(jnp.ones(4), W), "unembedding \\(Algorithm 7\\): argument 'W_u'"),
    ],
)
@pytest.mark.parametrize("dtype", [jnp.int32, bool])
def test_an_embedding_matrix_of_integers_or_booleans_is_refused(call, name, dtype):
    """Integer ids gathered from an integer W_e would embed ids as ids, silently."""
    with pytest.raises(TypeError, match=f"^{name} must hold floating-point numbers"):
        call(jnp.ones((3, 4), dtype))
