"""Issue 18's catalogue: every bad input, in the library and on the command line, ends in a clear
error naming the algorithm (or the option, or the file) and the argument, never in a traceback or
a silent result. Each case asserts the exception type (for the command line: a non-zero exit
status and one line on stderr without "Traceback") and that the message names both. The command
line runs in-process (``cli.main(argv)``), so each case costs no JAX start-up; the cases fail in
the option checks, before any model is built, except the few that are about a run's failure.

Behaviour the docstrings promise at the edges (softmax of an all-−∞ column, lists taken as token
sequences, every checkpoint dtype read back bit-exact, the last good state of a run that diverges
or is interrupted) is tested at the end.
"""

import json
import math
import pathlib
import re
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms import cli
from formal_algorithms.paper.tokenization import CharTokenizer, pydoc_topics_text
from formal_algorithms.practice import trainer
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint

key = jax.random.key(0)
HP = dict(N_V=9, ell_max=6, H=2, d_e=4, d_mlp=8)
D = fa.init_d_transformer(key, L=1, **HP)
E = fa.init_e_transformer(key, L=1, **HP)
ED = fa.init_ed_transformer(key, L_enc=1, L_dec=1, **HP)
A1 = fa.init_attention(key, 4, 4, 2, 4)
W = fa.init_mh_attention(key, 2, 4, 4, 2, 2, 4)
x = jnp.asarray([1, 2, 3])
X = jnp.ones((4, 3))


def nan_params(theta):
    return jax.tree.map(lambda a: a * jnp.nan, theta)


# A θ of Algorithm 10 over 300 tokens whose most likely token is 299 (so that an 8-bit prompt
# dtype would wrap it): only the dtype check stands between the prompt and a wrong id.
BIG = fa.init_d_transformer(key, L=1, N_V=300, ell_max=6, H=2, d_e=4, d_mlp=8)
BIG = BIG._replace(W_u=jnp.zeros((300, 4)).at[299].set(100.0))
BIG_ED = fa.init_ed_transformer(key, L_enc=1, L_dec=1, N_V=300, ell_max=6, H=2, d_e=4, d_mlp=8)


class Case(NamedTuple):
    name: str
    call: object
    error: type
    who: str  # regex: the algorithm, function or option
    argument: str  # regex: the argument


LIBRARY = [
    # θ of another algorithm, or not a θ at all
    Case("Alg 10 given Alg 9's θ", lambda: fa.d_transformer(x, E), TypeError,
         r"DTransformer \(Algorithm 10\)", r"'theta' must be DTransformerParams"),
    Case("Alg 9 given Alg 10's θ", lambda: fa.e_transformer(x, D), TypeError,
         r"ETransformer \(Algorithm 9\)", r"'theta' must be ETransformerParams"),
    Case("Alg 8 given Alg 10's θ", lambda: fa.ed_transformer(x, x, D), TypeError,
         r"EDTransformer \(Algorithm 8\)", r"'theta'"),
    Case("Alg 14 given Alg 9's θ", lambda: fa.d_inference(x, E, key, ell_gen=1), TypeError,
         r"DInference \(Algorithm 14\)", r"'theta'"),
    Case("Alg 15 given Alg 10's θ", lambda: fa.ed_inference(x, D, key), TypeError,
         r"EDInference \(Algorithm 15\)", r"'theta'"),
    Case("cached Alg 14 given Alg 8's θ", lambda: fa.d_inference_cached(x, ED, key, ell_gen=1),
         TypeError, r"DInference \(Algorithm 14\)", r"'theta'"),
    Case("cached Alg 15 given Alg 9's θ", lambda: fa.ed_inference_cached(x, E, key), TypeError,
         r"EDInference \(Algorithm 15\)", r"'theta'"),
    Case("Alg 13 given Alg 9's θ", lambda: fa.d_training([x], E, N_epochs=1, eta=0.1),
         TypeError, r"DTraining \(Algorithm 13\)", r"'theta'"),
    Case("Alg 12 given Alg 10's θ",
         lambda: fa.e_training([x], D, key, N_epochs=1, eta=0.1, p_mask=0.2), TypeError,
         r"ETraining \(Algorithm 12\)", r"'theta'"),
    Case("Alg 11 given Alg 9's θ", lambda: fa.ed_training([(x, x)], E, N_epochs=1, eta=0.1),
         TypeError, r"EDTraining \(Algorithm 11\)", r"'theta'"),
    Case("d_loss given Alg 8's θ", lambda: fa.d_loss(ED, x), TypeError,
         r"DTraining \(Algorithm 13\)", r"'theta'"),
    Case("plain dict θ", lambda: fa.d_transformer(x, dict(D._asdict())), TypeError,
         r"DTransformer \(Algorithm 10\)", r"'theta' .*plain dict.*DTransformerParams\(\*\*theta\)"),
    Case("dict θ without W_u", lambda: fa.d_transformer(x, {"W_e": D.W_e}), TypeError,
         r"Algorithm 10", r"'theta' .*missing \['W_p', 'layers', 'gamma', 'beta', 'W_u'\]"),
    Case("plain tuple θ", lambda: fa.d_transformer(x, tuple(D)), TypeError,
         r"Algorithm 10", r"'theta' must be DTransformerParams .*got a tuple of 6 items"),
    Case("layers a list", lambda: fa.d_transformer(x, D._replace(layers=list(D.layers))),
         TypeError, r"Algorithm 10", r"'theta.layers' must be a tuple of Layer"),
    Case("γ missing", lambda: fa.d_transformer(x, D._replace(gamma=None)), TypeError,
         r"Algorithm 10", r"'theta.gamma' must be an array"),
    Case("attention parameters missing",
         lambda: fa.e_transformer(x, E._replace(layers=(E.layers[0]._replace(W=None),))),
         TypeError, r"Algorithm 9", r"'theta.layers\[0\].W' must be a MHAttentionParams"),
    Case("W_q without its head axis",
         lambda: fa.d_transformer(x, D._replace(layers=(D.layers[0]._replace(
             W=D.layers[0].W._replace(W_q=D.layers[0].W.W_q[0])),))),
         ValueError, r"Algorithm 10", r"'theta.layers\[0\].W.W_q' has shape \(2, 4\), expected 3"),
    Case("decoder layer where an encoder layer belongs",
         lambda: fa.ed_transformer(x, x, ED._replace(enc=ED.dec)), TypeError,
         r"EDTransformer \(Algorithm 8\)", r"'theta.enc\[0\]' must be a Layer"),
    Case("W_p of another width", lambda: fa.d_transformer(x, D._replace(W_p=jnp.ones((5, 6)))),
         ValueError, r"Algorithm 10", r"'theta.W_p' has shape \(5, 6\)"),
    Case("integer leaf", lambda: fa.d_transformer(x, D._replace(gamma=jnp.ones(4, int))),
         TypeError, r"Algorithm 10", r"'theta.gamma' has dtype int"),
    Case("check_params of a dict", lambda: fa.check_params({"W_e": 1}), TypeError,
         r"check_params", r"'theta' must be θ of Algorithm 8, 9 or 10"),
    Case("hyperparameters of a list", lambda: fa.hyperparameters([1]), TypeError,
         r"hyperparameters", r"'theta'"),
    # sampling: no distribution, bad τ, bad key
    Case("all −∞ logits", lambda: fa.sample_token(key, jnp.full(5, -jnp.inf), 1.0), ValueError,
         r"sample_token", r"'logits' hold -inf in every entry"),
    Case("NaN logits", lambda: fa.sample_token(key, jnp.zeros(5).at[2].set(jnp.nan), 0.5),
         ValueError, r"sample_token", r"'logits' hold NaN"),
    Case("+∞ logit", lambda: fa.sample_token(key, jnp.zeros(5).at[1].set(jnp.inf), 1.0),
         ValueError, r"sample_token", r"'logits' hold \+inf"),
    Case("NaN logits at τ = 0", lambda: fa.sample_token(key, jnp.full(5, jnp.nan), 0.0),
         ValueError, r"sample_token", r"'logits'"),
    Case("τ < 0", lambda: fa.sample_token(key, jnp.zeros(5), -1.0), ValueError,
         r"sample_token", r"'tau' = -1.0 must be in \[0, inf\]"),
    Case("τ NaN", lambda: fa.sample_token(key, jnp.zeros(5), math.nan), ValueError,
         r"sample_token", r"'tau'"),
    Case("logits a matrix", lambda: fa.sample_token(key, jnp.zeros((5, 2)), 1.0), ValueError,
         r"sample_token", r"'logits' must be one column"),
    Case("seed instead of key", lambda: fa.sample_token(0, jnp.zeros(5), 1.0), TypeError,
         r"sample_token", r"'key'"),
    Case("NaN θ in Alg 14", lambda: fa.d_inference(x, nan_params(D), key, ell_gen=2),
         ValueError, r"DInference \(Algorithm 14\)", r"'theta' .*NaN.*theta.W_e is not finite"),
    Case("NaN θ in cached Alg 14",
         lambda: fa.d_inference_cached(x, nan_params(D), key, ell_gen=2), ValueError,
         r"DInference \(Algorithm 14\)", r"'theta' .*step 0"),
    Case("NaN θ in batched Alg 14",
         lambda: fa.d_inference_cached_batch([x, x[:2]], nan_params(D),
                                             jax.random.split(key, 2), ell_gen=2),
         ValueError, r"DInference \(Algorithm 14\)", r"'theta' .*of sequence 0"),
    Case("NaN θ in Alg 15", lambda: fa.ed_inference(x, nan_params(ED), key), ValueError,
         r"EDInference \(Algorithm 15\)", r"'theta'"),
    Case("NaN θ in cached Alg 15", lambda: fa.ed_inference_cached(x, nan_params(ED), key),
         ValueError, r"EDInference \(Algorithm 15\)", r"'theta'"),
    Case("logits overflow", lambda: fa.d_inference(x, D._replace(
        W_u=jnp.full((9, 4), jnp.finfo(D.W_e.dtype).max), beta=jnp.ones_like(D.beta)), key,
        ell_gen=1),
         ValueError, r"DInference \(Algorithm 14\)", r"'theta' .*overflowed"),
    Case("uint8 prompt, N_V = 300",
         lambda: fa.d_inference(jnp.asarray([1, 2], jnp.uint8), BIG, key, ell_gen=2), TypeError,
         r"DInference \(Algorithm 14\)", r"'x' has dtype uint8.*N_V - 1 = 299"),
    Case("uint8 prompt, cached",
         lambda: fa.d_inference_cached(np.asarray([1, 2], np.uint8), BIG, key, ell_gen=2),
         TypeError, r"DInference \(Algorithm 14\)", r"'x' has dtype uint8"),
    Case("int8 prompts, batched",
         lambda: fa.d_inference_cached_batch([np.asarray([1], np.int8)], BIG, key[None],
                                             ell_gen=1),
         TypeError, r"DInference \(Algorithm 14\)", r"'prompts\[0\]' has dtype int8"),
    Case("uint8 context, Alg 15",
         lambda: fa.ed_inference(np.asarray([1, 2], np.uint8), BIG_ED, key), TypeError,
         r"EDInference \(Algorithm 15\)", r"'z' has dtype uint8"),
    Case("int8 context, cached Alg 15",
         lambda: fa.ed_inference_cached(np.asarray([1, 2], np.int8), BIG_ED, key), TypeError,
         r"EDInference \(Algorithm 15\)", r"'z' has dtype int8"),
    Case("ell_gen a float", lambda: fa.d_inference(x, D, key, ell_gen=1.5), TypeError,
         r"DInference \(Algorithm 14\)", r"'ell_gen'"),
    Case("max_length 1", lambda: fa.ed_inference(x, ED, key, max_length=1), ValueError,
         r"EDInference \(Algorithm 15\)", r"'max_length'"),
    Case("one key for two prompts",
         lambda: fa.d_inference_cached_batch([x, x], D, key, ell_gen=1), TypeError,
         r"DInference \(Algorithm 14\)", r"'keys'"),
    # masks, softmax, broadcasting
    Case("1-D mask in softmax", lambda: fa.softmax(jnp.ones((3, 2)), jnp.ones(2, bool)),
         ValueError, r"softmax \(eq. 2\)", r"'mask' has shape \(2,\)"),
    Case("(1, ℓ) mask in softmax", lambda: fa.softmax(jnp.ones((3, 2)), jnp.ones((1, 2), bool)),
         ValueError, r"softmax \(eq. 2\)", r"'mask'"),
    Case("integer scores", lambda: fa.softmax(jnp.ones((2, 2), int)), TypeError,
         r"softmax \(eq. 2\)", r"'A' must be a float"),
    Case("3-D scores", lambda: fa.softmax(jnp.ones((2, 2, 2))), TypeError, r"softmax",
         r"'A' must be a float vector or matrix"),
    Case("1-D mask in Alg 4", lambda: fa.attention(X, X, A1, jnp.ones(3, bool)), ValueError,
         r"attention \(Algorithm 4\)", r"'Mask' has shape \(3,\)"),
    Case("1-D mask in Alg 5", lambda: fa.mh_attention(X, X, W, jnp.ones(3, bool)), ValueError,
         r"mh_attention \(Algorithm 5\)", r"'Mask'"),
    Case("float mask values", lambda: fa.attention(X, X, A1, jnp.full((3, 3), 0.5)), TypeError,
         r"Algorithm 4", r"'Mask' must be boolean"),
    Case("W a dict", lambda: fa.attention(X, X, dict(A1._asdict())), TypeError,
         r"attention \(Algorithm 4\)", r"'W' must be AttentionParams"),
    Case("H heads to Alg 4", lambda: fa.attention(X, X, W), TypeError, r"Algorithm 4",
         r"'W' must be AttentionParams"),
    Case("one head to Alg 5", lambda: fa.mh_attention(X, X, A1), TypeError,
         r"mh_attention \(Algorithm 5\)", r"'W' must be MHAttentionParams"),
    Case("X a vector", lambda: fa.attention(jnp.ones(4), X, A1), ValueError, r"Algorithm 4",
         r"'X' must be a matrix"),
    Case("Z of another width", lambda: fa.attention(X, jnp.ones((5, 3)), A1), ValueError,
         r"Algorithm 4", r"'Z' has shape \(5, 3\)"),
    Case("β of length 1", lambda: fa.layer_norm(jnp.ones(4), jnp.ones(4), jnp.zeros(1)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'beta' has shape \(1,\)"),
    Case("γ of the wrong length", lambda: fa.layer_norm(jnp.ones(4), jnp.ones(3), jnp.zeros(4)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'gamma' has shape \(3,\)"),
    Case("e of the wrong length", lambda: fa.layer_norm(jnp.ones(3), jnp.ones(4), jnp.zeros(4)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'e' has shape \(3,\)"),
    Case("e a matrix", lambda: fa.layer_norm(X, jnp.ones(4), jnp.zeros(4)), ValueError,
         r"layer_norm \(Algorithm 6\)", r"'e' must be a vector"),
    Case("β of length 1, columns", lambda: fa.layer_norm_columns(X, jnp.ones(4), jnp.zeros(1)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'beta'"),
    Case("γ a scalar", lambda: fa.layer_norm_columns(X, jnp.ones(()), jnp.zeros(4)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'gamma' must be a vector"),
    Case("X a vector, columns", lambda: fa.layer_norm_columns(jnp.ones(4), jnp.ones(4),
                                                              jnp.zeros(4)),
         ValueError, r"layer_norm \(Algorithm 6\)", r"'X' must be a matrix"),
    Case("RMSnorm γ", lambda: fa.rms_norm(jnp.ones(4), jnp.ones(3)), ValueError, r"rms_norm",
         r"'gamma'"),
    Case("RMSnorm γ, columns", lambda: fa.rms_norm_columns(X, jnp.ones(1)), ValueError,
         r"rms_norm", r"'gamma'"),
    Case("padding mask a matrix", lambda: fa.key_padding_mask(jnp.ones((2, 2), bool), 3),
         ValueError, r"key_padding_mask", r"'valid'"),
    # sizes
    Case("N_V = 0", lambda: fa.init_d_transformer(key, L=1, **{**HP, "N_V": 0}), ValueError,
         r"init_d_transformer \(Algorithm 10\)", r"'N_V' = 0 must be at least 3"),
    Case("N_V = 2", lambda: fa.init_d_transformer(key, L=1, **{**HP, "N_V": 2}), ValueError,
         r"init_d_transformer", r"'N_V' = 2"),
    Case("N_V = 2, Alg 9", lambda: fa.init_e_transformer(key, L=1, **{**HP, "N_V": 2}),
         ValueError, r"init_e_transformer \(Algorithm 9\)", r"'N_V'"),
    Case("N_V = 1, Alg 8",
         lambda: fa.init_ed_transformer(key, L_enc=1, L_dec=1, **{**HP, "N_V": 1}), ValueError,
         r"init_ed_transformer \(Algorithm 8\)", r"'N_V'"),
    Case("d_e = 0", lambda: fa.init_d_transformer(key, L=1, **{**HP, "d_e": 0}), ValueError,
         r"init_d_transformer", r"'d_e' = 0"),
    Case("L = 0", lambda: fa.init_d_transformer(key, L=0, **HP), ValueError,
         r"init_d_transformer", r"'L' = 0"),
    Case("H = 0", lambda: fa.init_e_transformer(key, L=1, **{**HP, "H": 0}), ValueError,
         r"init_e_transformer", r"'H' = 0"),
    Case("d_mlp = 8.5", lambda: fa.init_d_transformer(key, L=1, **{**HP, "d_mlp": 8.5}),
         TypeError, r"init_d_transformer", r"'d_mlp' must be an integer"),
    Case("d_mlp = True", lambda: fa.init_d_transformer(key, L=1, **{**HP, "d_mlp": True}),
         TypeError, r"init_d_transformer", r"'d_mlp'"),
    Case("ell_max = 0", lambda: fa.init_d_transformer(key, L=1, **{**HP, "ell_max": 0}),
         ValueError, r"init_d_transformer", r"'ell_max'"),
    Case("d_f = -1", lambda: fa.init_e_transformer(key, L=1, d_f=-1, **HP), ValueError,
         r"init_e_transformer", r"'d_f'"),
    Case("no layers at all", lambda: fa.init_ed_transformer(key, L_enc=0, L_dec=0, **HP),
         ValueError, r"init_ed_transformer", r"'L_enc'"),
    Case("integer dtype", lambda: fa.init_d_transformer(key, L=1, dtype=jnp.int32, **HP),
         TypeError, r"init_d_transformer \(Algorithm 10\)", r"'dtype' must be a float dtype"),
    Case("one head of width 0", lambda: fa.init_attention(key, 4, 4, 0, 4), ValueError,
         r"init_attention", r"'d_attn'"),
    Case("no heads", lambda: fa.init_mh_attention(key, 0, 4, 4, 2, 2, 4), ValueError,
         r"init_mh_attention", r"'H'"),
    Case("no vocabulary", lambda: fa.init_embeddings(key, 0, 4, 6), ValueError,
         r"init_embeddings", r"'N_V'"),
    Case("unidirectional_mask(-3)", lambda: fa.unidirectional_mask(-3), ValueError,
         r"unidirectional_mask \(eq. 3\)", r"'ell' = -3"),
    Case("unidirectional_mask(2.5)", lambda: fa.unidirectional_mask(2.5), TypeError,
         r"unidirectional_mask", r"'ell'"),
    Case("bidirectional_mask(2, -1)", lambda: fa.bidirectional_mask(2, -1), ValueError,
         r"bidirectional_mask \(eq. 3\)", r"'ell_x'"),
    Case("special_tokens(2)", lambda: fa.special_tokens(2), ValueError, r"special_tokens",
         r"'N_V'"),
    Case("sinusoid of length 0", lambda: fa.paper_sinusoidal_W_p(4, 0), ValueError,
         r"paper_sinusoidal_W_p", r"'ell_max'"),
    Case("sinusoid of width -4", lambda: fa.vaswani_sinusoidal_W_p(-4, 3), ValueError,
         r"vaswani_sinusoidal_W_p", r"'d_e'"),
    # Algorithm 3 and the embeddings
    Case("Alg 3: e of the wrong width",
         lambda: fa.single_query_attention(jnp.ones(3), jnp.ones((4, 2)), A1), ValueError,
         r"single_query_attention \(Algorithm 3\)", r"'e' has shape \(3,\)"),
    Case("Alg 3: e_ctx a vector",
         lambda: fa.single_query_attention(jnp.ones(4), jnp.ones(4), A1), ValueError,
         r"Algorithm 3", r"'e_ctx' must be a matrix"),
    Case("Alg 3: e_ctx of the wrong width",
         lambda: fa.single_query_attention(jnp.ones(4), jnp.ones((5, 2)), A1), ValueError,
         r"Algorithm 3", r"'e_ctx' has shape \(5, 2\)"),
    Case("Alg 3: H heads", lambda: fa.single_query_attention(jnp.ones(4), jnp.ones((4, 2)), W),
         TypeError, r"Algorithm 3", r"'W' must be AttentionParams"),
    Case("Alg 3: e a matrix",
         lambda: fa.single_query_attention(jnp.ones((4, 1)), jnp.ones((4, 2)), A1), ValueError,
         r"Algorithm 3", r"'e'"),
    Case("Alg 1: W_e a vector", lambda: fa.token_embedding(0, jnp.ones(4)), ValueError,
         r"token_embedding \(Algorithm 1\)", r"'W_e' must be a matrix"),
    Case("Alg 2: W_p a vector", lambda: fa.positional_embedding(0, jnp.ones(4)), ValueError,
         r"positional_embedding \(Algorithm 2\)", r"'W_p'"),
    Case("eq. 1: W_p a vector", lambda: fa.embed(x, D.W_e, jnp.ones(4)), ValueError,
         r"embed \(eq. 1\)", r"'W_p'"),
    Case("Alg 7: e 3-D", lambda: fa.unembedding(jnp.ones((4, 2, 2)), D.W_u), ValueError,
         r"unembedding \(Algorithm 7\)", r"'e'"),
    # token sequences given as lists: taken as arrays everywhere, and checked as such
    Case("empty list", lambda: fa.d_transformer([], D), ValueError, r"Algorithm 10",
         r"'x' is empty"),
    Case("list of floats", lambda: fa.e_transformer([1.0, 2.0], E), TypeError, r"Algorithm 9",
         r"'x' must hold integer token ids"),
    Case("nested list", lambda: fa.d_transformer([[1, 2]], D), ValueError, r"Algorithm 10",
         r"'x' must be a 1-D token sequence"),
    Case("list out of the vocabulary", lambda: fa.d_loss(D, [1, 20]), ValueError,
         r"DTraining \(Algorithm 13\)", r"'x' holds token ids \[20\]"),
    Case("list too long for Alg 8", lambda: fa.ed_transformer([1] * 7, [1], ED), ValueError,
         r"EDTransformer \(Algorithm 8\)", r"'z' has length 7 > ell_max = 6"),
    # training and the optimiser
    Case("learning rate NaN", lambda: trainer.make_optimizer(math.nan, N_steps=10), ValueError,
         r"make_optimizer", r"'learning_rate'"),
    Case("learning rate -1", lambda: trainer.make_optimizer(-1.0, N_steps=10), ValueError,
         r"make_optimizer", r"'learning_rate' must be a finite number > 0"),
    Case("warmup -5", lambda: trainer.make_optimizer(1e-3, N_steps=10, warmup_steps=-5),
         ValueError, r"make_optimizer", r"'warmup_steps'"),
    Case("weight decay NaN",
         lambda: trainer.make_optimizer(1e-3, N_steps=10, weight_decay=math.nan), ValueError,
         r"make_optimizer", r"'weight_decay'"),
    Case("clip norm 0", lambda: trainer.make_optimizer(1e-3, N_steps=10, clip_norm=0.0),
         ValueError, r"make_optimizer", r"'clip_norm'"),
    Case("b2 = 1", lambda: trainer.make_optimizer(1e-3, N_steps=10, b2=1.0), ValueError,
         r"make_optimizer", r"'b2'"),
    Case("learning rate a string", lambda: trainer.make_optimizer("fast", N_steps=10),
         TypeError, r"make_optimizer", r"'learning_rate'"),
    Case("trainer given a dict θ",
         lambda: trainer.train(dict(D._asdict()), [x], key, optimizer=optax.sgd(0.1), N_steps=1),
         TypeError, r"train", r"'theta'"),
    Case("Alg 12 without a key",
         lambda: fa.e_training([x], E, None, N_epochs=1, eta=0.1, p_mask=0.2), TypeError,
         r"ETraining \(Algorithm 12\)", r"'key'"),
    Case("η = 0", lambda: fa.d_training([x], D, N_epochs=1, eta=0), ValueError,
         r"DTraining \(Algorithm 13\)", r"'eta'"),
    Case("optimizer missing", lambda: trainer.train(D, [x], key, optimizer=None, N_steps=1),
         TypeError, r"train \(DTraining \(Algorithm 13\)\)", r"'optimizer' must be an optax"),
    Case("activation a string", lambda: fa.d_transformer(x, D, activation="gelu"), TypeError,
         r"DTransformer \(Algorithm 10\)", r"'activation' must be a function"),
    Case("activation a string, Alg 8", lambda: fa.ed_transformer_logits(x, x, ED,
                                                                       activation="relu"),
         TypeError, r"EDTransformer \(Algorithm 8\)", r"'activation'"),
    Case("ε negative", lambda: fa.e_transformer(x, E, eps=-1.0), ValueError,
         r"ETransformer \(Algorithm 9\)", r"'eps' must be a finite number >= 0"),
    Case("ε a string", lambda: fa.layer_norm(jnp.ones(4), jnp.ones(4), jnp.zeros(4), "1e-5"),
         TypeError, r"layer_norm \(Algorithm 6\)", r"'eps'"),
    Case("ε NaN, RMSnorm", lambda: fa.rms_norm(jnp.ones(4), jnp.ones(4), math.nan), ValueError,
         r"rms_norm", r"'eps'"),
    Case("integer logits", lambda: fa.sample_token(key, jnp.arange(5), 1.0), TypeError,
         r"sample_token", r"'logits' must be one float column"),
    Case("nothing to evaluate", lambda: trainer.evaluate(D, []), ValueError,
         r"evaluate \(DTraining \(Algorithm 13\)\)", r"'data' is empty"),
    Case("integer embeddings", lambda: fa.mh_attention(jnp.ones((4, 3), int), X, W), TypeError,
         r"mh_attention \(Algorithm 5\)", r"'X' must hold floats"),
    Case("e a list", lambda: fa.layer_norm([1.0, 2.0], jnp.ones(2), jnp.zeros(2)), TypeError,
         r"layer_norm \(Algorithm 6\)", r"'e' must be a float array"),
    Case("W_u transposed", lambda: fa.unembedding(jnp.ones(4), D.W_u.T), ValueError,
         r"unembedding \(Algorithm 7\)", r"'e' .*W_u of shape \(4, 9\) \(N_V, d_e\)"),
    Case("init without a key", lambda: fa.init_d_transformer(None, L=1, **HP), TypeError,
         r"init_d_transformer \(Algorithm 10\)", r"'key' must be one jax.random key"),
    Case("init with a seed", lambda: fa.init_e_transformer(0, L=1, **HP), TypeError,
         r"init_e_transformer \(Algorithm 9\)", r"'key'"),
    Case("character outside the vocabulary", lambda: CharTokenizer.from_text("abc").encode("z"),
         ValueError, r"CharTokenizer.encode", r"'text' contains the character 'z'"),
]  # fmt: skip


# ------------------------------------------------------------------------------- checkpoints


def _header(path):
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _rewrite(path, out, edit, *, sign=True):
    """A copy of a checkpoint whose header ``edit(header)`` changed (the tensors unchanged), its
    SHA-256 made anew over the changed metadata when ``sign`` (a file another writer made, whose
    fields are then what is checked), left stale otherwise (a byte changed after writing)."""
    from formal_algorithms.practice import checkpoint

    header, data = _header(path)
    edit(header)
    meta = header["__metadata__"]
    if sign and "sha256" in meta:
        tensors = checkpoint._load_tensors(str(path), pathlib.Path(path).read_bytes())
        meta["sha256"] = checkpoint._digest(
            tensors, {k: v for k, v in meta.items() if k != "sha256"}
        )
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny language-model checkpoint (character tokenizer), its damaged copies, a corpus."""
    d = tmp_path_factory.mktemp("catalogue")
    theta = fa.init_d_transformer(key, N_V=8, ell_max=16, L=1, H=1, d_e=4, d_mlp=8)
    good = save_checkpoint(d / "lm.safetensors", theta, tokenizer=CharTokenizer(
        tuple("abcde")).to_dict(), extra={"activation": "gelu"})  # fmt: skip
    save_checkpoint(d / "nan.safetensors", nan_params(theta),
                    tokenizer=CharTokenizer(tuple("abcde")).to_dict())  # fmt: skip
    save_checkpoint(d / "ed.safetensors", ED)
    from formal_algorithms.cli.seq2seq import FAMILY

    save_checkpoint(d / "reversal.safetensors", ED, extra={"family": FAMILY})
    from safetensors.numpy import save_file

    save_file({"weight": np.zeros(3, np.float32)}, d / "foreign.safetensors")

    def bad_json(h):
        h["__metadata__"]["extra"] = "{oops"

    def no_digest(h):
        del h["__metadata__"]["sha256"]

    def unknown(h):
        h["__metadata__"]["architecture"] = "Mamba"

    _rewrite(good, d / "bad_json.safetensors", bad_json)
    _rewrite(good, d / "no_digest.safetensors", no_digest)
    _rewrite(good, d / "unknown.safetensors", unknown)

    def flipped_activation(h):  # issue 29: a stored field changed after writing, nothing else
        h["__metadata__"]["extra"] = h["__metadata__"]["extra"].replace("gelu", "relu")

    _rewrite(good, d / "edited.safetensors", flipped_activation, sign=False)
    (d / "text.txt").write_text(pydoc_topics_text()[:3000], encoding="utf-8")
    (d / "empty.txt").write_text(" \n", encoding="utf-8")
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00abc")
    (d / "a_file").write_text("x", encoding="utf-8")
    (d / "dir").mkdir()
    (d / "dir.png").mkdir()
    return d


CHECKPOINT_CASES = [
    Case("foreign safetensors (no metadata)", lambda d: load_checkpoint(d / "foreign.safetensors"),
         ValueError, r"load_checkpoint: argument 'path' = '.*foreign.safetensors'",
         r"not a formal_algorithms checkpoint \(no metadata"),
    Case("metadata JSON corrupt", lambda d: load_checkpoint(d / "bad_json.safetensors"),
         ValueError, r"'.*bad_json.safetensors'", r"metadata field 'extra' is not valid JSON"),
    Case("metadata edited after writing", lambda d: load_checkpoint(d / "edited.safetensors"),
         ValueError, r"'.*edited.safetensors'", r"is corrupted: its tensors and metadata"),
    Case("metadata field missing", lambda d: load_checkpoint(d / "no_digest.safetensors"),
         ValueError, r"'.*no_digest.safetensors'", r"no field 'sha256'"),
    Case("unknown architecture", lambda d: load_checkpoint(d / "unknown.safetensors"),
         ValueError, r"'.*unknown.safetensors'", r"field 'architecture' is 'Mamba'"),
    Case("a directory", lambda d: load_checkpoint(d / "dir"), IsADirectoryError,
         r"load_checkpoint: argument 'path' = '.*dir'", r"is a directory"),
    Case("a text file", lambda d: load_checkpoint(d / "text.txt"), ValueError,
         r"load_checkpoint: argument 'path' = '.*text.txt'", r"not a safetensors file"),
    Case("missing", lambda d: load_checkpoint(d / "none.safetensors"), FileNotFoundError,
         r"load_checkpoint: argument 'path' = '.*none.safetensors'", r"does not exist"),
    Case("string array", lambda d: save_checkpoint(d / "s.safetensors", D,
                                                   arrays={"names": np.asarray(["a"])}),
         TypeError, r"save_checkpoint", r"argument 'arrays': 'names' has dtype <U1"),
    Case("extra not JSON", lambda d: save_checkpoint(d / "s.safetensors", D, extra={"f": len}),
         TypeError, r"save_checkpoint", r"'extra' must be JSON-able"),
    Case("extra a list", lambda d: save_checkpoint(d / "s.safetensors", D, extra=[1, 2]),
         TypeError, r"save_checkpoint", r"'extra' must be a dict or None, got list"),
    Case("path a directory", lambda d: save_checkpoint(d / "dir", D), IsADirectoryError,
         r"save_checkpoint", r"'path' '.*dir' is a directory"),
    Case("θ a dict", lambda d: save_checkpoint(d / "s.safetensors", dict(D._asdict())),
         TypeError, r"save_checkpoint", r"'theta'"),
]  # fmt: skip


@pytest.mark.parametrize("case", LIBRARY, ids=[c.name for c in LIBRARY])
def test_library(case):
    with pytest.raises(case.error) as info:
        case.call()
    message = str(info.value)
    assert re.search(case.who, message), message
    assert re.search(case.argument, message), message


@pytest.mark.parametrize("case", CHECKPOINT_CASES, ids=[c.name for c in CHECKPOINT_CASES])
def test_checkpoint(case, files):
    with pytest.raises(case.error) as info:
        case.call(files)
    message = str(info.value)
    assert re.search(case.who, message), message
    assert re.search(case.argument, message), message


# ---------------------------------------------------------------------------- the command line

TINY = ["--d-e", "8", "--layers", "1", "--heads", "2", "--batch-size", "2", "--steps", "2"]


def run_cli(capsys, *argv):
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit:  # the parser refused an option: status 2, pointing to --help
        code = exit.code
    return code, capsys.readouterr().err


def train(d, *args):
    return ("train", "--text", d / "text.txt", "--out", d / "out", "--ell-max", "16", *TINY, *args)


def seq2seq(*args):
    return ("seq2seq", *TINY, "--train-size", "8", "--test-size", "2", "--max-len", "3", *args)


def mlm(d, *args):
    return ("mlm", "--text", d / "text.txt", "--out", d / "mlm", *TINY, "--ell-max", "8", *args)


def lm(d, command="sample", checkpoint="lm.safetensors", *args):
    return (command, "--checkpoint", d / checkpoint, *args)


# (name, argv from the fixture directory, who: the option or file, what: the complaint)
COMMAND_LINE = [
    ("--lr nan", lambda d: train(d, "--lr", "nan"), r"--lr", r"finite number > 0, got nan"),
    ("--lr -1", lambda d: train(d, "--lr", "-1"), r"--lr", r"> 0, got -1"),
    ("--lr 0", lambda d: train(d, "--lr", "0"), r"--lr", r"> 0"),
    ("--lr inf", lambda d: train(d, "--lr", "inf"), r"--lr", r"finite"),
    ("--weight-decay nan", lambda d: train(d, "--weight-decay", "nan"), r"--weight-decay",
     r"finite number >= 0"),
    ("--weight-decay -1", lambda d: train(d, "--weight-decay", "-1"), r"--weight-decay", r">= 0"),
    ("--warmup -5", lambda d: train(d, "--warmup", "-5"), r"--warmup", r"at least 0, got -5"),
    ("--d-mlp 0", lambda d: train(d, "--d-mlp", "0"), r"--d-mlp", r"at least 1"),
    ("--d-mlp -3", lambda d: train(d, "--d-mlp", "-3"), r"--d-mlp", r"at least 1"),
    ("--d-e 0", lambda d: train(d, "--d-e", "0"), r"--d-e", r"at least 1"),
    ("--layers 0", lambda d: train(d, "--layers", "0"), r"--layers", r"at least 1"),
    ("--heads 0", lambda d: train(d, "--heads", "0"), r"--heads", r"at least 1"),
    ("--heads 3 with --d-e 8", lambda d: train(d, "--heads", "3"), r"--heads 3",
     r"does not divide --d-e 8"),
    ("--batch-size 0", lambda d: train(d, "--batch-size", "0"), r"--batch-size", r"at least 1"),
    ("--steps 0", lambda d: train(d, "--steps", "0"), r"--steps", r"at least 1"),
    ("--ell-max 1", lambda d: train(d, "--ell-max", "1"), r"--ell-max", r"at least 2"),
    ("--sample-length 0", lambda d: train(d, "--sample-length", "0"), r"--sample-length",
     r"at least 1"),
    ("--temperature -1", lambda d: train(d, "--temperature", "-1"), r"--temperature", r"\[0, inf\]"),
    ("--temperature nan", lambda d: train(d, "--temperature", "nan"), r"--temperature",
     r"in \[0, inf\].*got nan"),
    ("--seed -1", lambda d: train(d, "--seed", "-1"), r"--seed", r"at least 0"),
    ("--eval-every 0", lambda d: train(d, "--eval-every", "0"), r"--eval-every", r"at least 1"),
    ("--early-stop 0", lambda d: train(d, "--early-stop", "0"), r"--early-stop", r"at least 1"),
    ("--vocab-size 2 with bpe", lambda d: train(d, "--tokenizer", "bpe", "--vocab-size", "2"),
     r"--vocab-size", r"at least 259"),
    ("--d-e huge", lambda d: train(d, "--d-e", "100000000"), r"--d-e 100000000",
     r"GiB of memory"),
    ("--out a file", lambda d: train(d, "--out", d / "a_file"), r"--out '.*a_file'",
     r"is a file, not a directory"),
    ("--out below a file", lambda d: train(d, "--out", d / "a_file" / "run"), r"--out",
     r"not a writable directory"),
    ("--text missing", lambda d: train(d, "--text", d / "none.txt"), r"--text file '.*none.txt'",
     r"does not exist"),
    ("--text a directory", lambda d: train(d, "--text", d / "dir"), r"--text", r"directory"),
    ("--text empty", lambda d: train(d, "--text", d / "empty.txt"), r"--text file", r"is empty"),
    ("--text not UTF-8", lambda d: train(d, "--text", d / "binary.txt"), r"--text file",
     r"not UTF-8"),
    ("--prompt not encodable", lambda d: train(d, "--prompt", "日本"), r"--prompt '日本'",
     r"character '日'.*not in the vocabulary"),
    ("sample: --checkpoint missing", lambda d: lm(d, checkpoint="none.safetensors"),
     r"--checkpoint file '.*none.safetensors'", r"does not exist"),
    ("sample: --checkpoint a directory", lambda d: lm(d, checkpoint="dir"), r"--checkpoint",
     r"is a directory"),
    ("sample: foreign safetensors", lambda d: lm(d, checkpoint="foreign.safetensors"),
     r"checkpoint '.*foreign.safetensors'", r"not a formal_algorithms checkpoint"),
    ("sample: a text file", lambda d: lm(d, checkpoint="text.txt"), r"'.*text.txt'",
     r"not a safetensors file"),
    ("sample: metadata corrupt", lambda d: lm(d, checkpoint="bad_json.safetensors"),
     r"'.*bad_json.safetensors'", r"metadata field 'extra'"),
    ("sample: an EDTransformer", lambda d: lm(d, checkpoint="ed.safetensors"),
     r"'.*ed.safetensors'", r"not a DTransformer"),
    ("sample: --length 0", lambda d: lm(d, "sample", "lm.safetensors", "--length", "0"),
     r"--length", r"at least 1"),
    ("sample: --temperature -1",
     lambda d: lm(d, "sample", "lm.safetensors", "--temperature", "-1"), r"--temperature",
     r"in \[0, inf\]"),
    ("sample: --prompt not encodable", lambda d: lm(d, "sample", "lm.safetensors", "--prompt",
                                                    "xyz"),
     r"error: --prompt 'xyz' contains the character 'x'", r"not in the vocabulary$"),
    ("sample: --num-samples 0",
     lambda d: lm(d, "sample", "lm.safetensors", "--num-samples", "0"), r"--num-samples",
     r"at least 1"),
    ("sample: --top-k -1", lambda d: lm(d, "sample", "lm.safetensors", "--top-k", "-1"),
     r"--top-k", r"at least 0"),
    ("sample: --top-p 0", lambda d: lm(d, "sample", "lm.safetensors", "--top-p", "0"),
     r"--top-p", r"in \(0, 1\], got 0.0"),
    ("sample: NaN parameters", lambda d: lm(d, "sample", "nan.safetensors", "--length", "3"),
     r"DInference \(Algorithm 14\)", r"'theta' .*NaN"),
    ("attention: foreign safetensors",
     lambda d: lm(d, "attention", "foreign.safetensors"), r"'.*foreign.safetensors'",
     r"not a formal_algorithms checkpoint"),
    ("attention: --out a directory",
     lambda d: lm(d, "attention", "lm.safetensors", "--out", d / "dir.png"),
     r"--out '.*dir.png'", r"is a directory"),
    ("attention: --out not a .png", lambda d: lm(d, "attention", "lm.safetensors", "--out",
                                                 d / "heads.jpg"), r"--out", r"\.png file .*'.*heads\.jpg'"),
    ("attention: --prompt too long",
     lambda d: lm(d, "attention", "lm.safetensors", "--prompt", "a" * 40), r"--prompt",
     r"ell_max = 16"),
    ("attention: --prompt not encodable",
     lambda d: lm(d, "attention", "lm.safetensors", "--prompt", "?"),
     r"error: --prompt '\?' contains the character '\?'", r"not in the vocabulary$"),
    ("sample: --stop ''", lambda d: lm(d, "sample", "lm.safetensors", "--stop", ""), r"--stop",
     r"is empty"),
    ("sample: a seq2seq --prompt too long",
     lambda d: lm(d, "sample", "reversal.safetensors", "--prompt", " ".join(["1"] * 40)),
     r"--prompt has 40 symbols", r"reads at most \d+$"),
    ("attention: --prompt ''", lambda d: lm(d, "attention", "lm.safetensors", "--prompt", ""),
     r"--prompt", r"is empty"),
    ("attention: the default prompt not encodable", lambda d: lm(d, "attention", "lm.safetensors"),
     r"error: the default prompt 'The object is a function.'", r"character 'T'"),
    ("seq2seq: --examples beyond --test-size", lambda d: seq2seq("--examples", "3"),
     r"--examples 3", r"more than the 2 held-out pairs \(--test-size\)"),
    ("trace: --prompt not encodable",
     lambda d: ("trace", "--checkpoint", d / "lm.safetensors", "--prompt", "xyz"),
     r"error: --prompt 'xyz' contains the character 'x'", r"not in the vocabulary$"),
    ("seq2seq: --test-size 0", lambda d: seq2seq("--test-size", "0"), r"--test-size",
     r"at least 1"),
    ("seq2seq: --train-size 0", lambda d: seq2seq("--train-size", "0"), r"--train-size",
     r"at least 1"),
    ("seq2seq: --examples -1", lambda d: seq2seq("--examples", "-1"), r"--examples",
     r"at least 0"),
    ("seq2seq: --symbols 0", lambda d: seq2seq("--symbols", "0"), r"--symbols", r"at least 1"),
    ("seq2seq: --max-len 0", lambda d: seq2seq("--max-len", "0"), r"--max-len", r"at least 1"),
    ("seq2seq: --lr nan", lambda d: seq2seq("--lr", "nan"), r"--lr", r"finite"),
    ("seq2seq: --out a file", lambda d: seq2seq("--out", d / "a_file"), r"--out", r"a file"),
    ("mlm: --p-mask nan", lambda d: mlm(d, "--p-mask", "nan"), r"--p-mask", r"\(0, 1\)"),
    ("mlm: --p-mask 1", lambda d: mlm(d, "--p-mask", "1"), r"--p-mask", r"\(0, 1\)"),
    ("mlm: --test-size 0", lambda d: mlm(d, "--test-size", "0"), r"--test-size", r"at least 1"),
    ("mlm: --ell-max 0", lambda d: mlm(d, "--ell-max", "0"), r"--ell-max", r"at least 2"),
    ("mlm: --text missing", lambda d: mlm(d, "--text", d / "none.txt"), r"--text",
     r"does not exist"),
]  # fmt: skip


@pytest.mark.parametrize("case", COMMAND_LINE, ids=[c[0] for c in COMMAND_LINE])
def test_command_line(case, files, capsys):
    _, argv, who, what = case
    code, err = run_cli(capsys, *argv(files))
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("formal-algorithms: error: "), err
    # a single option out of range is the parser's error (status 2, pointing to --help); what
    # depends on several options, files or the model is the command's (status 1)
    parser_error = re.search(r"\(see: formal-algorithms \w+ --help\)$", lines[0])
    assert code == (2 if parser_error else 1) and "Traceback" not in err, err
    assert re.search(who, lines[0]) and re.search(what, lines[0]), lines[0]


USAGE = [
    (("train", "--lr", "abc"), r"argument --lr: invalid float value: 'abc' \(see: "
     r"formal-algorithms train --help\)"),
    (("train", "--steps", "1.5"), r"argument --steps: invalid int value: '1.5'"),
    (("sample", "--nope", "1"), r"unrecognized arguments: --nope 1"),
    (("traine",), r"argument COMMAND: invalid choice: 'traine'"),
    ((), r"the following arguments are required: COMMAND"),
    (("train", "--tokenizer", "word"), r"argument --tokenizer: invalid choice: 'word'"),
]  # fmt: skip


@pytest.mark.parametrize("argv, pattern", USAGE, ids=[" ".join(a) or "nothing" for a, _ in USAGE])
def test_usage_errors_are_one_line_with_status_2(argv, pattern, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and "usage:" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("formal-algorithms: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_the_catalogue_holds_over_a_hundred_cases():
    assert len(LIBRARY) + len(CHECKPOINT_CASES) + len(COMMAND_LINE) + len(USAGE) >= 100


# ------------------------------------------------------ the command line's guard, failing runs


def one_line(code, err, expected_code, pattern):
    """One line of the program's own on stderr (a training run's progress bar may precede it)."""
    assert code == expected_code and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("formal-algorithms")]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    assert re.search(pattern, lines[0]), err
    return lines[0]


def test_benchmark_without_the_interop_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails as if not installed
    code, err = run_cli(capsys, "benchmark", "--quick", "--repeats", "1")
    one_line(code, err, 1, r"'benchmark' needs the optional package 'torch'.*"
             r"formal_algorithms\[interop\]")  # fmt: skip


@pytest.mark.parametrize(
    "raised, pattern",
    [
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9e12 bytes"),
         r"error: out of memory .*choose smaller --d-e, --layers, --batch-size or --ell-max"),
        (MemoryError(), r"error: out of memory"),
        (RuntimeError("something unforeseen"),
         r"error: unexpected RuntimeError: something unforeseen \(set FORMAL_ALGORITHMS_TRACEBACK"),
        (KeyError("W_e"), r"error: unexpected KeyError: 'W_e'"),
        (OSError(27, "File too large", "runs/x/model.safetensors"),
         r"error: writing 'runs/x/model.safetensors': File too large \(the disk, or the file-size "
         r"limit, is full\); free some space or choose another --out$"),
        (OSError(28, "No space left on device"), r"error: writing a file: No space left on device"),
    ],
)  # fmt: skip
def test_unexpected_errors_are_one_line_too(raised, pattern, monkeypatch, capsys):
    from formal_algorithms.cli import seq2seq as seq2seq_cmd

    def boom(args):
        raise raised

    monkeypatch.setattr(seq2seq_cmd, "reversal_pairs", lambda *a, **k: boom(a))
    code, err = run_cli(capsys, *seq2seq())
    one_line(code, err, 1, pattern)


def _failing_train(error_type):
    """A stand-in for the trainer's train that fails after two good steps, carrying them."""

    def train(theta, data, key, *, optimizer, opt_state=None, start_step=0, **kw):
        opt_state = optimizer.init(theta) if opt_state is None else opt_state
        history = np.asarray([2.5, 2.4], np.float32)
        if error_type is trainer.NonFiniteError:
            raise trainer.NonFiniteError("train: step 3 gave loss nan", step=start_step + 3,
                                         theta=theta, opt_state=opt_state, history=history,
                                         completed=start_step + 2)  # fmt: skip
        raise trainer.TrainingInterrupted("train: interrupted", completed=start_step + 2,
                                          theta=theta, opt_state=opt_state, history=history)  # fmt: skip

    return train


@pytest.mark.parametrize("error_type", [trainer.NonFiniteError, trainer.TrainingInterrupted])
def test_a_failing_train_run_saves_a_resumable_checkpoint(error_type, files, tmp_path,
                                                          monkeypatch, capsys):  # fmt: skip
    monkeypatch.setattr(trainer, "train", _failing_train(error_type))
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train(files, "--out", out, "--steps", "4"))
    if error_type is trainer.NonFiniteError:
        line = one_line(code, err, 1, r"error: training diverged at step 3 .*the parameters "
                        r"after step 2 are saved in .*model.safetensors .*--resume")  # fmt: skip
    else:
        line = one_line(code, err, 130, r"^formal-algorithms: interrupted after step 2; the "
                        r"parameters after step 2 are saved in .*model.safetensors")  # fmt: skip
    assert f"train --resume {out}" in line
    checkpoint = load_checkpoint(out / "model.safetensors")
    assert checkpoint.extra["step"] == 2 and checkpoint.extra["opt_state_saved"]
    assert checkpoint.extra["status"] in ("diverged", "interrupted")
    np.testing.assert_array_equal(checkpoint.arrays["loss_history"], np.float32([2.5, 2.4]))


def test_ctrl_c_between_segments_saves_the_last_whole_segment(files, tmp_path, monkeypatch,
                                                              capsys):  # fmt: skip
    """Ctrl-C during the held-out evaluation after a segment of training: the segment is kept."""

    def segment(theta, data, key, *, optimizer, N_steps, opt_state=None, start_step=0, **kw):
        opt_state = optimizer.init(theta) if opt_state is None else opt_state
        return theta, np.full(N_steps - start_step, 2.0, np.float32), opt_state

    def evaluate(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", segment)
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    out = tmp_path / "run"
    code, err = run_cli(capsys, *train(files, "--out", out, "--steps", "4", "--eval-every", "3"))
    one_line(code, err, 130, r"interrupted after step 3; the parameters after step 3 are saved")
    checkpoint = load_checkpoint(out / "model.safetensors")
    assert checkpoint.extra["step"] == 3 and len(checkpoint.arrays["loss_history"]) == 3


def test_a_failing_seq2seq_run_saves_its_state(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(trainer, "train", _failing_train(trainer.TrainingInterrupted))
    code, err = run_cli(capsys, *seq2seq("--out", tmp_path / "s2s"))
    line = one_line(code, err, 130, r"interrupted after step 2; .* saved in .*model.safetensors")
    assert f"seq2seq --resume {tmp_path / 's2s'}" in line
    checkpoint = load_checkpoint(tmp_path / "s2s" / "model.safetensors")
    assert checkpoint.architecture == "EDTransformer" and checkpoint.extra["step"] == 2
    assert checkpoint.extra["status"] == "interrupted" and checkpoint.extra["opt_state_saved"]


# --------------------------------------------------------------- behaviour at documented edges


def test_softmax_of_an_all_minus_infinity_column_is_zeros_with_zero_gradient():
    A = jnp.asarray([[-jnp.inf, 1.0], [-jnp.inf, 2.0]])
    P = fa.softmax(A)
    expected_col = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_array_equal(np.asarray(P[:, 0]), [0.0, 0.0])
    np.testing.assert_allclose(np.asarray(P[:, 1]), expected_col, rtol=1e-6)
    grad = jax.grad(lambda a: fa.softmax(a)[0, 1])(A)
    assert np.isfinite(np.asarray(grad)).all() and (np.asarray(grad[:, 0]) == 0).all()
    assert np.isnan(np.asarray(fa.softmax(jnp.asarray([[jnp.nan], [0.0]])))).all()  # NaN stays


def test_a_list_is_a_token_sequence_everywhere():
    tokens = [1, 2, 3]
    as_array = jnp.asarray(tokens)
    np.testing.assert_array_equal(fa.d_transformer(tokens, D), fa.d_transformer(as_array, D))
    np.testing.assert_array_equal(fa.e_transformer(tokens, E), fa.e_transformer(as_array, E))
    np.testing.assert_array_equal(fa.ed_transformer(tokens, tokens, ED),
                                  fa.ed_transformer(as_array, as_array, ED))  # fmt: skip
    assert float(fa.d_loss(D, tokens)) == float(fa.d_loss(D, as_array))
    np.testing.assert_array_equal(fa.d_inference(tokens, D, key, ell_gen=2),
                                  fa.d_inference(as_array, D, key, ell_gen=2))  # fmt: skip


def test_sampling_under_jit_marks_a_missing_distribution_with_minus_one():
    """Inside jit the values cannot be checked: the token is -1, which the callers report."""
    sample = jax.jit(fa.sample_token)
    assert int(sample(key, jnp.full(5, -jnp.inf), 1.0)) == -1
    assert int(sample(key, jnp.full(5, jnp.nan), 0.0)) == -1
    assert 0 <= int(sample(key, jnp.zeros(5), 1.0)) < 5


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16, ml_dtypes.float8_e4m3fn]
)
def test_every_dtype_save_checkpoint_writes_is_read_back_bit_exact(dtype, tmp_path):
    theta = jax.tree.map(lambda a: (a * 3).astype(dtype), D)
    arrays = {"u8": np.arange(5, dtype=np.uint8), "b": np.asarray([True, False]),
              "i64": np.asarray([-(2**40)]), "bf": np.asarray([1.5], ml_dtypes.bfloat16)}  # fmt: skip
    state = optax.adam(1e-3).init(theta)
    path = save_checkpoint(tmp_path / "c.safetensors", theta, opt_state=state, arrays=arrays)
    back = load_checkpoint(path, opt_state_template=state)
    for a, b in zip(jax.tree_util.tree_leaves((theta, state)),
                    jax.tree_util.tree_leaves((back.theta, back.opt_state)), strict=True):  # fmt: skip
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    for name, a in arrays.items():
        b = back.arrays[name]
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def leaves_equal(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


def test_a_run_keeps_its_last_good_state_when_it_diverges_or_is_interrupted():
    theta = fa.init_d_transformer(key, N_V=9, ell_max=6, L=1, H=1, d_e=4, d_mlp=4)
    data = [np.asarray([1, 2, 3, 4]), np.asarray([5, 6, 7]), np.asarray([2, 2, 1])]
    kw = dict(N_steps=4, batch_size=1, shuffle=False)
    # A NaN learning rate makes θ NaN after step 1 while step 1's loss is finite; step 2's loss
    # is NaN. The last good θ is then the initial one, not step 1's NaN one.
    with pytest.raises(trainer.NonFiniteError) as info:
        trainer.train(theta, data, key, optimizer=optax.sgd(math.nan), **kw)
    error = info.value
    assert error.step == 2 and error.completed == 0 and len(error.history) == 0
    assert trainer.all_finite(error.theta)
    assert leaves_equal(error.theta, theta)

    def interrupt(step, loss, stats):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(trainer.TrainingInterrupted) as info:
        trainer.train(theta, data, key, optimizer=optax.sgd(0.1), callback=interrupt, **kw)
    error = info.value
    assert isinstance(error, KeyboardInterrupt) and error.completed == 2
    assert len(error.history) == 2
    again, _ = trainer.train(theta, data, key, optimizer=optax.sgd(0.1), **{**kw, "N_steps": 2})
    assert leaves_equal(error.theta, again)  # exactly the state after step 2


def test_a_gguf_of_another_architecture_is_named_with_its_file(tmp_path):
    import gguf  # the test extra installs it

    path = str(tmp_path / "gpt2.gguf")
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    from formal_algorithms.interop.gguf import read_llama_gguf

    with pytest.raises(ValueError, match=rf"read_llama_gguf: argument 'path': '{path}' holds "
                       r"architecture 'gpt2', expected 'llama'"):  # fmt: skip
        read_llama_gguf(path)


def test_gguf_paths_dtypes_and_damaged_files_are_named(tmp_path):
    """Issue 29's held-back catalogue: a path that is not a file, an integer dtype, a file cut
    short, and a tokenizer asked of a file that holds none: each names the function, the argument
    and the file."""
    import gguf  # the test extra installs it

    from formal_algorithms.interop.gguf import gguf_tokenizer, read_llama_gguf

    whole, cut, other = tmp_path / "tiny.gguf", tmp_path / "cut.gguf", tmp_path / "text.gguf"
    writer = gguf.GGUFWriter(str(whole), "llama")
    writer.add_block_count(0)
    writer.add_head_count(1)
    writer.add_tensor("token_embd.weight", np.ones((50, 40), np.float32))
    writer.add_tensor("output_norm.weight", np.ones(40, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cut.write_bytes(whole.read_bytes()[:-4000])
    other.write_bytes(b"not a GGUF at all " * 8)
    cases = [
        (lambda: read_llama_gguf(None), TypeError, r"'path' must be a file path, got NoneType"),
        (lambda: read_llama_gguf(tmp_path), IsADirectoryError, r"'path': .* is a directory"),
        (lambda: read_llama_gguf(whole, dtype=jnp.int32), TypeError, r"'dtype' must be a float"),
        (lambda: read_llama_gguf(cut), ValueError, rf"'path': '{cut}' is not a readable GGUF"),
        (lambda: gguf_tokenizer(other), ValueError, rf"'path': .*'{other}'.*GGUF magic"),
        (lambda: gguf_tokenizer(whole), ValueError, rf"'path': .*'{whole}'.*stating tokenizer"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert str(info.value).startswith(("read_llama_gguf", "gguf_tokenizer")), info.value


def test_sample_says_when_the_model_reads_a_window_of_the_prompt(files, capsys):
    """Issue 29: a prompt longer than the model's window is read as bos and its latest tokens
    (algorithms.md, "The command line's sampling"); the command says so instead of doing it
    silently, and is silent when the whole prompt fits."""
    code, err = run_cli(capsys, *lm(files, "sample", "lm.safetensors", "--prompt", "abcde" * 4,
                                    "--length", "1"))  # fmt: skip
    assert code == 0, err
    assert "(the prompt is 20 tokens; this model reads bos and the last 14 of them)" in err
    code, err = run_cli(capsys, *lm(files, "sample", "lm.safetensors", "--prompt", "abcde",
                                    "--length", "1"))  # fmt: skip
    assert code == 0 and "this model reads" not in err, err
