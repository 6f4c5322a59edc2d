"""fa.trace (issue 15): every recorded line's value equals an independent float64 numpy computation
over the paper's indices (tests/paper_numpy.py's primitives, head by head and layer by layer), the
records are addressed by the paper's algorithm, line and 1-based loop indices, and algorithms.md's
"Line index" is exactly what the code's `# line` comments say and what traces record.
"""

import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from paper_numpy import W_u, causal, embed, gelu, layer_norm_columns, n, relu, softmax_columns

import formal_algorithms as fa
from formal_algorithms.paper.pseudocode import PSEUDOCODE
from formal_algorithms.practice import cache
from formal_algorithms.trace import trace
from formal_algorithms.trace.index import index_file, line_index_markdown, package_files

EPS = 1e-5
ATOL = 1e-10


def perturbed(theta, seed=1, scale=0.3):
    """Every leaf moved off its initial value (biases ≠ 0, γ ≠ 1, β ≠ 0): no term can vanish."""
    leaves, tree = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    )  # fmt: skip


def heads(X, Z, W, Mask):
    """Algorithm 4 for every head h of Algorithm 5 in numpy: Q, K, V, S, A, Ṽ per h (0-based)."""
    out = []
    for h in range(W.W_q.shape[0]):
        Q = n(W.W_q[h]) @ X + n(W.b_q[h])[:, None]
        K = n(W.W_k[h]) @ Z + n(W.b_k[h])[:, None]
        V = n(W.W_v[h]) @ Z + n(W.b_v[h])[:, None]
        S = K.T @ Q
        A = np.zeros_like(S)
        for t_x in range(S.shape[1]):
            allowed = [t_z for t_z in range(S.shape[0]) if Mask[t_z, t_x]]
            w = np.exp(
                S[allowed, t_x] / math.sqrt(Q.shape[0])
                - S[allowed, t_x].max() / math.sqrt(Q.shape[0])
            )
            A[allowed, t_x] = w / w.sum()
        out.append(dict(Q=Q, K=K, V=V, S=S, A=A, Vt=V @ A))
    Y = np.concatenate([o["Vt"] for o in out], axis=0)
    return out, Y, n(W.W_o) @ Y + n(W.b_o)[:, None]


def assert_heads(tr, X, Z, W, Mask, **at):
    per_head, Y, out = heads(X, Z, W, Mask)
    for h, o in enumerate(per_head, 1):
        for line, key in ((1, "Q"), (2, "K"), (3, "V"), (4, "S")):
            np.testing.assert_allclose(tr.get(4, line, **at, h=h), o[key], atol=ATOL)
        masked = np.where(np.asarray(Mask, bool), o["S"], -np.inf)  # line 5: −∞ exactly there
        np.testing.assert_array_equal(np.isneginf(tr.get(4, 5, **at, h=h)), np.isneginf(masked))
        np.testing.assert_allclose(tr.get(4, 5, **at, h=h), masked, atol=ATOL)
        np.testing.assert_allclose(tr.get(4, 6, **at, h=h, name="A"), o["A"], atol=ATOL)
        np.testing.assert_allclose(tr.get(4, 6, **at, h=h), o["Vt"], atol=ATOL)
        np.testing.assert_allclose(tr.get(5, 2, **at, h=h), o["Vt"], atol=ATOL)
    np.testing.assert_allclose(tr.get(5, 3, **at), Y, atol=ATOL)
    np.testing.assert_allclose(tr.get(5, 4, **at), out, atol=ATOL)
    return out


@pytest.fixture(scope="module")
def d_theta():
    theta = fa.init_d_transformer(jax.random.key(0), N_V=11, ell_max=8, L=2, H=2, d_e=8, d_mlp=12, dtype=jnp.float64)  # fmt: skip
    return perturbed(theta)


X_TOKENS = np.array([1, 5, 2, 7, 3])


def test_algorithm_10_every_line_of_every_layer_and_head(d_theta):
    tr = trace(fa.d_transformer, jnp.asarray(X_TOKENS), d_theta)
    X = embed(X_TOKENS, d_theta.W_e, d_theta.W_p)
    np.testing.assert_allclose(tr.get(10, 3), X, atol=ATOL)
    for l, layer in enumerate(d_theta.layers, 1):
        assert tr.get(10, 4, l=l) == l  # the loop line records its index
        Xt = layer_norm_columns(X, layer.gamma1, layer.beta1, EPS)
        np.testing.assert_allclose(tr.get(10, 5, l=l), Xt, atol=ATOL)
        m, v = tr.find(6, 1, l=l)[0].value, tr.find(6, 2, l=l)[0].value  # Algorithm 6 of line 5
        np.testing.assert_allclose(np.ravel(m), X.mean(axis=0), atol=ATOL)
        np.testing.assert_allclose(np.ravel(v), ((X - X.mean(axis=0)) ** 2).mean(axis=0), atol=ATOL)
        X = X + assert_heads(tr, Xt, Xt, layer.W, causal(len(X_TOKENS)), l=l)
        np.testing.assert_allclose(tr.get(10, 6, l=l), X, atol=ATOL)
        Xt = layer_norm_columns(X, layer.gamma2, layer.beta2, EPS)
        np.testing.assert_allclose(tr.get(10, 7, l=l), Xt, atol=ATOL)
        X = X + n(layer.W_mlp2) @ gelu(n(layer.W_mlp1) @ Xt + n(layer.b_mlp1)[:, None]) + n(layer.b_mlp2)[:, None]  # fmt: skip
        np.testing.assert_allclose(tr.get(10, 8, l=l), X, atol=ATOL)
    X = layer_norm_columns(X, d_theta.gamma, d_theta.beta, EPS)
    np.testing.assert_allclose(tr.get(10, 10), X, atol=ATOL)
    np.testing.assert_allclose(tr.get(10, 11), softmax_columns(W_u(d_theta) @ X), atol=ATOL)
    np.testing.assert_allclose(tr.result, tr.get(10, 11))


def test_paths_name_the_nesting_and_indices(d_theta):
    tr = trace(fa.d_transformer, jnp.asarray(X_TOKENS), d_theta)
    (record,) = [r for r in tr.find(4, 4, l=2, h=1)]
    assert (
        record.path
        == "Algorithm 10 › line 6 (l=2) › Algorithm 5 › lines 1-2 (h=1) › Algorithm 4 › line 4"
    )
    assert record.pseudocode == PSEUDOCODE[4][4] and record.indices == {"l": 2, "h": 1}
    assert record.function == "attention" and "K.astype(c).T @ Q" in record.code
    with pytest.raises(KeyError, match="give h="):
        tr.get(4, 4, l=2)  # two heads: the error names the index that tells them apart
    # what misses is named: the algorithm, the line, or the index and the values recorded
    with pytest.raises(KeyError, match=r"argument 'algorithm' = 9: this trace recorded .*, not Algorithm 9"):  # fmt: skip
        tr.get(9, 5)
    with pytest.raises(ValueError, match=r"^Trace.get: argument 'line' = 99: Algorithm 10 recorded lines 1, 2, "):  # fmt: skip
        tr.get(10, 99)  # a KeyError and a ValueError, printed as its sentence (no quotes)
    with pytest.raises(KeyError, match=r"argument 'l' = 5: Algorithm 10 line 6 was recorded at l = 1, 2 \(1-based\)"):  # fmt: skip
        tr.get(10, 6, l=5)
    table = tr.table(4, 4, l=1)
    assert table.count("Algorithm 4 › line 4") == 2 and "(5, 5)" in table


def test_algorithm_9_and_algorithm_8(d_theta):
    theta = perturbed(fa.init_e_transformer(jax.random.key(2), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=12, d_f=6, dtype=jnp.float64))  # fmt: skip
    tr = trace(fa.e_transformer, jnp.asarray(X_TOKENS), theta)
    X = embed(X_TOKENS, theta.W_e, theta.W_p)
    ones = np.ones((5, 5), bool)
    layer = theta.layers[0]
    X = X + assert_heads(tr, X, X, layer.W, ones, l=1)
    np.testing.assert_allclose(tr.get(9, 5, l=1), X, atol=ATOL)
    X = layer_norm_columns(X, layer.gamma1, layer.beta1, EPS)
    np.testing.assert_allclose(tr.get(9, 6, l=1), X, atol=ATOL)
    X = X + n(layer.W_mlp2) @ gelu(n(layer.W_mlp1) @ X + n(layer.b_mlp1)[:, None]) + n(layer.b_mlp2)[:, None]  # fmt: skip
    np.testing.assert_allclose(tr.get(9, 7, l=1), X, atol=ATOL)
    X = layer_norm_columns(X, layer.gamma2, layer.beta2, EPS)
    np.testing.assert_allclose(tr.get(9, 8, l=1), X, atol=ATOL)
    X = gelu(n(theta.W_f) @ X + n(theta.b_f)[:, None])
    np.testing.assert_allclose(tr.get(9, 10), X, atol=ATOL)
    X = layer_norm_columns(X, theta.gamma, theta.beta, EPS)
    np.testing.assert_allclose(tr.get(9, 11), X, atol=ATOL)
    np.testing.assert_allclose(tr.get(9, 12), softmax_columns(W_u(theta) @ X), atol=ATOL)

    theta = perturbed(fa.init_ed_transformer(jax.random.key(3), N_V=11, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=8, d_mlp=12, dtype=jnp.float64))  # fmt: skip
    z, x = np.array([4, 2, 6]), np.array([8, 1, 3, 5])
    tr = trace(fa.ed_transformer, jnp.asarray(z), jnp.asarray(x), theta)
    Z = embed(z, theta.W_e, theta.W_p)
    np.testing.assert_allclose(tr.get(8, 3), Z, atol=ATOL)
    enc = theta.enc[0]
    Z = layer_norm_columns(Z + heads(Z, Z, enc.W, np.ones((3, 3), bool))[2], enc.gamma1, enc.beta1, EPS)  # fmt: skip
    np.testing.assert_allclose(tr.get(8, 6, l=1), Z, atol=ATOL)
    Z = (
        Z
        + n(enc.W_mlp2) @ relu(n(enc.W_mlp1) @ Z + n(enc.b_mlp1)[:, None])
        + n(enc.b_mlp2)[:, None]
    )
    Z = layer_norm_columns(Z, enc.gamma2, enc.beta2, EPS)
    np.testing.assert_allclose(tr.get(8, 8, l=1), Z, atol=ATOL)
    X = embed(x, theta.W_e, theta.W_p)
    np.testing.assert_allclose(tr.get(8, 12), X, atol=ATOL)
    dec = theta.dec[0]
    X = X + heads(X, X, dec.W_dec, causal(4))[2]
    np.testing.assert_allclose(tr.get(8, 14, l=1), X, atol=ATOL)
    X = layer_norm_columns(X, dec.gamma3, dec.beta3, EPS)
    np.testing.assert_allclose(tr.get(8, 15, l=1), X, atol=ATOL)
    X = X + heads(X, Z, dec.W_ed, np.ones((3, 4), bool))[2]
    np.testing.assert_allclose(tr.get(8, 16, l=1), X, atol=ATOL)
    X = layer_norm_columns(X, dec.gamma4, dec.beta4, EPS)
    X = (
        X
        + n(dec.W_mlp4) @ relu(n(dec.W_mlp3) @ X + n(dec.b_mlp3)[:, None])
        + n(dec.b_mlp4)[:, None]
    )
    np.testing.assert_allclose(tr.get(8, 18, l=1), X, atol=ATOL)
    X = layer_norm_columns(X, dec.gamma5, dec.beta5, EPS)
    np.testing.assert_allclose(tr.get(8, 19, l=1), X, atol=ATOL)
    np.testing.assert_allclose(tr.get(8, 21), softmax_columns(W_u(theta) @ X), atol=ATOL)


def _np_loss(theta, x):
    """Algorithm 13, line 5 in numpy: −Σ_t log P[x[t+1], t] from the numpy transcription."""
    from paper_numpy import d_transformer as np_d_transformer

    P = np_d_transformer(x, theta)
    return -sum(math.log(P[x[t + 1], t]) for t in range(len(x) - 1))


def test_algorithm_13_one_step_loss_and_update(d_theta):
    eta = 0.05
    tr = trace(fa.d_training, [jnp.asarray(X_TOKENS)], d_theta, N_epochs=1, eta=eta)
    assert tr.get(13, 1, i=1) == 1 and tr.get(13, 2, i=1, n=1) == 1
    loss = tr.get(13, 5, i=1, n=1)  # the loss line, recorded inside jax.grad as its value
    np.testing.assert_allclose(float(loss), _np_loss(d_theta, X_TOKENS), rtol=1e-10)
    updated = tr.get(13, 6, i=1, n=1)
    assert jax.tree.all(jax.tree.map(lambda a, b: np.allclose(a, b), updated, tr.result))
    # θ ← θ − η ∇loss: the step divided by −η is the gradient, checked by central differences of
    # the numpy loss in a few coordinates of W_e and of a layer's W_q.
    rng = np.random.default_rng(0)
    for get in (lambda t: t.W_e, lambda t: t.layers[1].W.W_q):
        old, new = n(get(d_theta)), n(get(updated))
        for idx in [tuple(rng.integers(0, s) for s in old.shape) for _ in range(3)]:
            h = 1e-6
            plus = get(d_theta).at[idx].add(h)
            minus = get(d_theta).at[idx].add(-h)
            target = get(d_theta)

            def swap(t, leaf, target=target):
                return jax.tree.map(lambda a: leaf if a is target else a, t)

            fd = (_np_loss(swap(d_theta, plus), X_TOKENS) - _np_loss(swap(d_theta, minus), X_TOKENS)) / (2 * h)  # fmt: skip
            np.testing.assert_allclose((old[idx] - new[idx]) / eta, fd, rtol=1e-5, atol=1e-7)


def test_algorithm_14_each_token_its_distribution_and_sample(d_theta):
    from paper_numpy import d_transformer as np_d_transformer

    prompt = jnp.asarray(X_TOKENS[:3])
    tau = 0.7
    tr = trace(fa.d_inference, prompt, d_theta, jax.random.key(7), ell_gen=3, tau=tau)
    y = np.asarray(tr.result)
    x = list(X_TOKENS[:3])
    assert tr.get(14, 1) == 3
    for i in (1, 2, 3):
        assert tr.get(14, 2, i=i) == i
        p = np_d_transformer(np.asarray(x), d_theta)[:, -1]
        np.testing.assert_allclose(tr.get(14, 4, i=i), p, atol=ATOL)  # lines 3-4: p, not logits
        q = p ** (1 / tau) / np.sum(p ** (1 / tau))  # line 5: q ∝ p^{1/τ}
        np.testing.assert_allclose(tr.get(14, 5, i=i, name="q"), q, atol=ATOL)
        assert int(tr.get(14, 5, i=i)) == y[i - 1]  # the sampled token is the returned one
        x.append(int(y[i - 1]))
        assert list(np.asarray(tr.get(14, 6, i=i))) == x
    assert list(np.asarray(tr.get(14, 8))) == list(y)


@pytest.mark.parametrize("tau", [0.0, math.inf])
def test_algorithm_14_line_5_at_the_limits_of_tau(d_theta, tau):
    """τ → 0: q is one-hot at the argmax of p (lowest index among ties); τ = ∞: q is uniform."""
    from paper_numpy import d_transformer as np_d_transformer

    prompt = jnp.asarray(X_TOKENS[:3])
    tr = trace(fa.d_inference, prompt, d_theta, jax.random.key(3), ell_gen=1, tau=tau)
    p = np_d_transformer(np.asarray(X_TOKENS[:3]), d_theta)[:, -1]
    q = np.asarray(tr.get(14, 5, i=1, name="q"))
    if tau == 0:
        np.testing.assert_array_equal(q, np.eye(p.shape[0])[np.argmax(p)])
        assert int(tr.get(14, 5, i=1)) == np.argmax(p)
    else:
        np.testing.assert_allclose(q, np.full(p.shape[0], 1 / p.shape[0]), atol=1e-15)


def test_algorithm_15_lines_5_and_6_are_p_and_q():
    from paper_numpy import ed_transformer as np_ed_transformer

    theta = perturbed(fa.init_ed_transformer(jax.random.key(2), N_V=11, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=8, d_mlp=12, dtype=jnp.float64))  # fmt: skip
    z = jnp.asarray([1, 2, 3, 4])
    tr = trace(fa.ed_inference, z, theta, jax.random.key(5), tau=0.5, max_length=3)
    x_hat = list(np.asarray(tr.result))
    for i in range(1, len(x_hat)):
        p = np_ed_transformer(np.asarray(z), np.asarray(x_hat[:i]), theta)[:, -1]
        np.testing.assert_allclose(tr.get(15, 5, i=i), p, atol=ATOL)
        np.testing.assert_allclose(tr.get(15, 6, i=i, name="q"), p**2 / np.sum(p**2), atol=ATOL)
        assert int(tr.get(15, 6, i=i)) == x_hat[i]


def test_the_last_line_of_algorithms_8_9_10_is_P_with_the_logits_a_named_part(d_theta):
    from paper_numpy import d_transformer as np_d_transformer

    x = jnp.asarray(X_TOKENS)
    tr = trace(fa.d_transformer, x, d_theta)
    P = np_d_transformer(np.asarray(X_TOKENS), d_theta)
    np.testing.assert_allclose(tr.get(10, 11), P, atol=ATOL)
    logits = np.asarray(tr.get(10, 11, name="logits"))
    assert [r.part for r in tr.find(10, 11)] == [True, False]
    np.testing.assert_allclose(softmax_columns(logits), P, atol=ATOL)
    assert logits.min() < 0  # logits, not probabilities


def test_get_refuses_0_based_and_negative_indices_and_trace_a_non_callable(d_theta):
    tr = trace(fa.d_transformer, jnp.asarray(X_TOKENS), d_theta)
    for bad in (dict(line=0), dict(line=4, l=0), dict(line=4, h=-1)):
        line = bad.pop("line")
        with pytest.raises(ValueError, match="1-based"):
            tr.get(4, line, **bad)
    with pytest.raises(ValueError, match="algorithm"):
        tr.get(0, 1)
    with pytest.raises(TypeError, match="trace: argument 'fn'.*callable.*int"):
        trace(42)
    with pytest.raises(FileNotFoundError, match="Trace.to_html: argument 'path'.*no-such-folder"):
        tr.to_html("/tmp/no-such-folder-fa/trace.html")


def test_the_cached_form_shows_the_cache_lines(d_theta):
    prompt = jnp.asarray(X_TOKENS[:3])
    tr = trace(fa.d_inference_cached, prompt, d_theta, jax.random.key(7), ell_gen=3, tau=1.0)
    literal = np.asarray(fa.d_inference(prompt, d_theta, jax.random.key(7), ell_gen=3, tau=1.0))
    assert list(np.asarray(tr.result)) == list(literal)
    assert [int(tr.get(14, 5, i=i)) for i in (1, 2)] == list(literal[:2])
    functions = {r.function for r in tr.records}
    assert {"_d_block", "attend", "step"} <= functions
    # Algorithm 4's weights for every head at once over the cache, recorded per head h: the step
    # feeds one column, whose weights are a distribution over the ℓ_max cache rows
    for h in (1, 2):
        A = tr.get(4, 6, name="A", i=1, l=1, h=h)
        assert A.shape == (8, 1)  # ℓ_max cache rows, the rows after position ℓ + i masked
        np.testing.assert_allclose(np.sum(A), 1.0, atol=1e-12)
        assert np.all(A[3 + 1 :] == 0)  # the prompt (3) and the token fed at step 1 only


def test_a_users_own_composition_is_traced():
    theta = fa.init_d_transformer(jax.random.key(0), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=16)

    def my_model(x):
        """Algorithm 10 with RMSnorm before the unembedding."""
        X = fa.embed(x, theta.W_e, theta.W_p)  # lines 1-3
        for layer in theta.layers:  # line 4
            X = fa.pre_ln_layer(X, layer, fa.unidirectional_mask(x.shape[0]), fa.gelu)  # lines 5-8
        return fa.softmax(theta.W_u @ fa.rms_norm_columns(X, theta.gamma))  # line 11

    tr = trace(my_model, jnp.asarray([1, 2, 3]))
    assert tr.find(10, 6, l=1) and tr.find(4, 4, l=1, h=2)
    np.testing.assert_allclose(tr.get(10, 11), tr.result)


def _reference_traces():
    d = fa.init_d_transformer(jax.random.key(0), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
    e = fa.init_e_transformer(jax.random.key(1), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
    ed = fa.init_ed_transformer(jax.random.key(2), N_V=11, ell_max=8, L_enc=1, L_dec=1, H=2, d_e=8, d_mlp=8)  # fmt: skip
    x, key = jnp.asarray([1, 2, 3]), jax.random.key(3)
    W1 = fa.init_attention(key, d_x=8, d_z=8, d_attn=4, d_out=8)
    runs = [
        (fa.token_embedding, 2, d.W_e),
        (fa.positional_embedding, 1, d.W_p),
        (fa.single_query_attention, jnp.ones(8), jnp.ones((8, 3)), W1),
        (fa.unembedding, jnp.ones(8), d.W_e.T),
        (fa.layer_norm, jnp.arange(8.0), jnp.ones(8), jnp.zeros(8)),
        (fa.d_transformer, x, d),
        (fa.e_transformer, x, e),
        (fa.ed_transformer, x, x, ed),
        (fa.d_loss, d, x),
        (fa.e_loss, e, jnp.asarray([1, 8, 3]), x),
        (fa.ed_loss, ed, x, x),
        (fa.d_training, [x], d, dict(N_epochs=1, eta=0.1)),
        (
            fa.e_training,
            [jnp.asarray([1, 2, 3, 4, 5, 6])],
            e,
            key,
            dict(N_epochs=1, eta=0.1, p_mask=0.5),
        ),  # fmt: skip
        (fa.ed_training, [(x, jnp.asarray([9, 1, 10]))], ed, dict(N_epochs=1, eta=0.1)),
        (fa.d_inference, x, d, key, dict(ell_gen=2)),
        (fa.ed_inference, x, ed, key, dict(max_length=3)),
        (cache.d_inference_cached, x, d, key, dict(ell_gen=3)),
        (cache.ed_inference_cached, x, ed, key, dict(max_length=3)),
    ]
    recorded = set()
    for fn, *args in runs:
        kwargs = args.pop() if isinstance(args[-1], dict) else {}
        for r in trace(fn, *args, **kwargs):
            recorded |= {
                (r.algorithm, line, _module(r.source) + "." + r.function) for line in r.lines
            }
    return recorded


def _module(source):
    return pathlib.Path(source.rsplit(":", 1)[0]).stem


def test_line_index_coverage_both_ways():
    """A line algorithms.md lists is recorded by a trace of the algorithms, and a recorded line
    of the paper's modules and the cache is listed (with the function that computed it)."""
    listed = set()
    for row in _index_rows():
        algorithm, line, _, code = row
        for name in re.findall(r"`([\w.]+)`", code):
            listed.add((algorithm, line, name))
    recorded = {
        r for r in _reference_traces() if r[2].split(".")[0] in {p.stem for p in package_files()}
    }
    assert not listed - recorded, f"listed but never recorded: {sorted(listed - recorded, key=str)}"
    assert not recorded - listed, f"recorded but not listed: {sorted(recorded - listed, key=str)}"


def _index_rows():
    text = (pathlib.Path(__file__).parents[2] / "algorithms.md").read_text()
    section = text.split("<!-- line-index:start -->")[1].split("<!-- line-index:end -->")[0]
    rows = []
    for line in section.strip().splitlines()[2:]:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        algorithm = int(cells[0]) if cells[0].isdigit() else cells[0]
        rows.append((algorithm, int(cells[1]), cells[2], cells[3]))
    return rows


def test_algorithms_md_line_index_is_generated_from_the_one_table():
    text = (pathlib.Path(__file__).parents[2] / "algorithms.md").read_text()
    section = text.split("<!-- line-index:start -->")[1].split("<!-- line-index:end -->")[0]
    assert section.strip() == line_index_markdown(), (
        "algorithms.md's Line index is stale: regenerate it with python -m formal_algorithms.trace"
    )
    pseudocode = {(a, line): t for a, line, t, _ in _index_rows()}
    assert pseudocode == {
        (a, k): f"`{t}`" for a, lines in PSEUDOCODE.items() for k, t in lines.items()
    }


def test_every_function_with_paper_lines_names_its_algorithm():
    for path in package_files():
        for index in index_file(str(path)).values():
            if index.statements:
                assert index.static, (
                    f"{path.name}:{index.name} has # line comments but no algorithm"
                )


def test_the_jax_internals_the_trace_reads_are_where_it_expects_them(monkeypatch):
    """trace/jax_internals.py is the one place that reads JAX's private tracers; its check
    passes on the installed JAX and fails, naming the JAX version, when they move."""
    from jax._src.interpreters import batching

    from formal_algorithms.trace import jax_internals

    jax_internals.check()
    monkeypatch.delattr(batching, "NotMapped")
    with pytest.raises(RuntimeError, match=rf"JAX {jax.__version__} has moved.*NotMapped"):
        jax_internals.check()
