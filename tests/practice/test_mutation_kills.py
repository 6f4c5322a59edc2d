"""Behaviours of the practical forms (cache, fast) that a sampled mutation run found unpinned
(docs/mutation.md, tools/mutate.py): each test fails on a one-token change of the code that the
rest of the suite let pass.

- a single-token cache step writes the same keys and values as the block prefill (the key bias's
  sign cancels in the softmax when every key takes the same path, so only the cache shows it);
- a cross-attention cache for another number of decoder layers is refused by name;
- malformed θ reaching the cached generations and the batch-as-columns forms is refused by the
  public function's algorithm, naming the leaf (not later by a layer norm's ``X``);
- the cached generations' default temperature is 1; a new length bucket traces exactly once;
- (seed 707) ``init_kv_cache`` takes θ's dtype unless given one; ``compiled_count`` and
  ``tree_shardings`` refuse an unknown choice by name;
- (seed 909) the cache's ``position_mask`` is its definition, with and without a window.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from params import assert_no_vanishing_terms, perturbed

import formal_algorithms as fa
from formal_algorithms.practice import cache, fast, parallel

# Shapes of their own, so that the trace counts below see no executable of another test.
D_HP = dict(N_V=9, ell_max=7, L=2, H=2, d_e=6, d_mlp=10)
ED_HP = dict(N_V=9, ell_max=7, L_enc=1, L_dec=2, H=2, d_e=6, d_mlp=10)
ALG14, ALG15 = r"DInference \(Algorithm 14\)", r"EDInference \(Algorithm 15\)"


@pytest.fixture(scope="module")
def d_theta():
    theta = fa.init_d_transformer(jax.random.key(0), **D_HP, dtype=jnp.float64)
    theta = perturbed(theta._replace(W_e=20 * theta.W_e, W_p=20 * theta.W_p), 1)
    assert_no_vanishing_terms(theta)
    return theta


@pytest.fixture(scope="module")
def ed_theta():
    theta = fa.init_ed_transformer(jax.random.key(2), **ED_HP, dtype=jnp.float64)
    return perturbed(theta._replace(W_e=20 * theta.W_e, W_p=20 * theta.W_p), 3)


def _wrong_gamma(layers, field):
    """The layers with the first one's ``field`` (a γ) one entry too long."""
    first = layers[0]
    bad = jnp.concatenate([getattr(first, field), jnp.ones(1, getattr(first, field).dtype)])
    return (first._replace(**{field: bad}), *layers[1:])


def test_single_token_steps_write_the_cache_the_block_prefill_writes(d_theta):
    """Prefill 3 tokens as a block, then 3 single-token steps: the cached keys and values (with
    their biases) and the logits equal those of one 6-token block and of the full forward."""
    x = jnp.asarray([3, 1, 4, 1, 5, 8])
    empty = cache.init_kv_cache(d_theta)
    block_logits, block = cache.d_cached_logits(x, 0, d_theta, empty)
    logits, stepped = cache.d_cached_logits(x[:3], 0, d_theta, empty)
    columns = [logits]
    for t in range(3, 6):
        logits, stepped = cache.d_cached_logits(x[t : t + 1], t, d_theta, stepped)
        columns.append(logits)
    for a, b in zip((*stepped.K, *stepped.V), (*block.K, *block.V), strict=True):
        np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=0, atol=1e-12)
    full = fa.d_transformer_logits(x, d_theta)
    np.testing.assert_allclose(np.concatenate(columns, axis=1), full, rtol=0, atol=1e-12)
    np.testing.assert_allclose(block_logits, full, rtol=0, atol=1e-12)


def test_a_cross_cache_of_another_depth_is_refused(ed_theta):
    z, x = jnp.asarray([1, 2, 3]), jnp.asarray([ED_HP["N_V"] - 2])
    shallow = ed_theta._replace(dec=ed_theta.dec[:1])
    cross = cache.ed_cross_cache(fa.ed_encode(z, shallow), shallow)
    with pytest.raises(
        ValueError, match=r"ed_cached_logits.*'cross' has shapes.*L_dec = 2 decoder"
    ):
        cache.ed_cached_logits(x, 0, ed_theta, cache.init_kv_cache(ed_theta), cross)


def test_malformed_theta_is_named_by_the_cached_generations(d_theta, ed_theta):
    key, keys = jax.random.key(0), jax.random.split(jax.random.key(0), 2)
    bad_d = d_theta._replace(layers=_wrong_gamma(d_theta.layers, "gamma1"))
    bad_ed = ed_theta._replace(dec=_wrong_gamma(ed_theta.dec, "gamma3"))
    with pytest.raises(ValueError, match=ALG14 + r": argument 'theta\.layers\[0\]\.gamma1'"):
        fa.d_inference_cached(jnp.arange(3), bad_d, key, ell_gen=2)
    with pytest.raises(ValueError, match=ALG14 + r": argument 'theta\.layers\[0\]\.gamma1'"):
        fa.d_inference_cached_batch([jnp.arange(3), jnp.arange(2)], bad_d, keys, ell_gen=2)
    with pytest.raises(ValueError, match=ALG15 + r": argument 'theta\.dec\[0\]\.gamma3'"):
        fa.ed_inference_cached(jnp.arange(3), bad_ed, key)
    with pytest.raises(ValueError, match=ALG15 + r": argument 'theta\.dec\[0\]\.gamma3'"):
        fa.ed_inference_cached_batch([jnp.arange(3), jnp.arange(2)], bad_ed, keys)


def test_malformed_theta_is_named_by_the_batch_as_columns_forms(d_theta, ed_theta):
    xs = jnp.asarray([[1, 2, 3], [4, 5, 6]])
    bad_d = d_theta._replace(layers=_wrong_gamma(d_theta.layers, "gamma2"))
    with pytest.raises(
        ValueError, match=r"DTransformer \(Algorithm 10\): argument 'theta\.layers\[0\]\.gamma2'"
    ):
        fast.d_transformer_logits_batch(xs, bad_d)
    bad_ed = ed_theta._replace(enc=_wrong_gamma(ed_theta.enc, "gamma1"))
    with pytest.raises(
        ValueError, match=r"EDTransformer \(Algorithm 8\): argument 'theta\.enc\[0\]\.gamma1'"
    ):
        fast.ed_transformer_logits_batch(xs, xs, bad_ed, z_valid=jnp.ones((2, 3), bool))
    E_HP = dict(N_V=9, ell_max=7, L=1, H=2, d_e=6, d_mlp=10)
    e_theta = fa.init_e_transformer(jax.random.key(4), **E_HP, dtype=jnp.float64)
    bad_e = e_theta._replace(layers=_wrong_gamma(e_theta.layers, "gamma1"))
    with pytest.raises(
        ValueError, match=r"ETransformer \(Algorithm 9\): argument 'theta\.layers\[0\]\.gamma1'"
    ):
        fast.e_transformer_logits_batch(xs, bad_e)


def test_the_cached_generations_default_temperature_is_one(d_theta, ed_theta):
    """τ left out samples as τ = 1, not as another τ (which gives other tokens for some key)."""
    keys = jax.random.split(jax.random.key(7), 6)
    prompt, z = jnp.asarray([2, 0, 5]), jnp.asarray([1, 2, 3])
    d = lambda key, **kw: np.asarray(fa.d_inference_cached(prompt, d_theta, key, ell_gen=4, **kw))  # noqa: E731
    ed = lambda key, **kw: np.asarray(fa.ed_inference_cached(z, ed_theta, key, **kw))  # noqa: E731
    for f in (d, ed):
        for key in keys:
            np.testing.assert_array_equal(f(key), f(key, tau=1.0))
        assert any(not np.array_equal(f(k, tau=1.0), f(k, tau=2.0)) for k in keys)
    batch = lambda **kw: np.asarray(  # noqa: E731
        fa.d_inference_cached_batch([prompt] * len(keys), d_theta, keys, ell_gen=4, **kw)
    )
    np.testing.assert_array_equal(batch(), batch(tau=1.0))
    assert not np.array_equal(batch(tau=1.0), batch(tau=2.0))
    contexts = [z] * len(keys)
    ed_batch = lambda **kw: fa.ed_inference_cached_batch(contexts, ed_theta, keys, **kw)  # noqa: E731
    same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))  # noqa: E731
    assert same(ed_batch(), ed_batch(tau=1.0)) and not same(ed_batch(tau=1.0), ed_batch(tau=2.0))


def test_a_new_length_bucket_traces_exactly_once(d_theta, ed_theta):
    """compiled_count counts executables: the first generation with θ of new shapes traces once (zero
    would mean the counter is dead and the compile-once tests cannot fail)."""
    theta = d_theta._replace(W_p=jnp.concatenate([d_theta.W_p, d_theta.W_p[:, :2]], axis=1))
    before = cache.compiled_count("d_generate")
    fa.d_inference_cached(jnp.asarray([1, 2]), theta, jax.random.key(0), ell_gen=2)
    assert cache.compiled_count("d_generate") == before + 1
    theta = ed_theta._replace(W_p=jnp.concatenate([ed_theta.W_p, ed_theta.W_p[:, :2]], axis=1))
    before = cache.compiled_count("ed_generate")
    fa.ed_inference_cached(jnp.asarray([1, 2]), theta, jax.random.key(0))
    assert cache.compiled_count("ed_generate") == before + 1


def test_cached_generation_lengths_at_the_edges(d_theta):
    """ℓ_gen = 1 gives one token (the first of a longer run: a run is a prefix of any longer one
    with the same key); ℓ_gen = ℓ_max from a one-token prompt (more tokens than d_e = 6) equals
    the literal Algorithm 14 token for token."""
    key, x = jax.random.key(3), jnp.asarray([4])
    longer = np.asarray(fa.d_inference_cached(x, d_theta, key, ell_gen=3))
    one = np.asarray(fa.d_inference_cached(x, d_theta, key, ell_gen=1))
    np.testing.assert_array_equal(one, longer[:1])
    ell_max = D_HP["ell_max"]
    np.testing.assert_array_equal(
        fa.d_inference_cached(x, d_theta, key, ell_gen=ell_max),
        fa.d_inference(x, d_theta, key, ell_gen=ell_max),
    )


def test_the_cached_generations_take_python_lists(d_theta, ed_theta):
    key = jax.random.key(4)
    np.testing.assert_array_equal(
        fa.ed_inference_cached([1, 2, 3], ed_theta, key),
        fa.ed_inference_cached(jnp.asarray([1, 2, 3]), ed_theta, key),
    )
    np.testing.assert_array_equal(
        fa.d_inference_cached([1, 2], d_theta, key, ell_gen=2),
        fa.d_inference_cached(jnp.asarray([1, 2]), d_theta, key, ell_gen=2),
    )


def test_the_cached_generations_name_the_step_and_sequence_that_had_no_distribution(
    d_theta, ed_theta
):
    """Seed 606's survivor (cache-1baab0): the cached forms' message says where the first step
    without a distribution is, and in a batch which sequence; a NaN leaf of θ is named."""
    key, x, y = jax.random.key(5), jnp.asarray([1, 2]), jnp.asarray([3])
    d = d_theta._replace(gamma=d_theta.gamma.at[0].set(jnp.nan))
    ed = ed_theta._replace(W_e=ed_theta.W_e.at[0, 0].set(jnp.nan))
    keys = jax.random.split(key, 2)
    calls = [
        (lambda: cache.d_inference_cached(x, d, key, ell_gen=2), "step 0,", "theta.gamma"),
        (lambda: cache.d_inference_cached_batch([x, y], d, keys, ell_gen=2),
         "step 0 of sequence 0,", "theta.gamma"),
        (lambda: cache.ed_inference_cached(x, ed, key, max_length=3), "step 1,", "theta.W_e"),
        (lambda: cache.ed_inference_cached_batch([x, y], ed, keys, max_length=3),
         "step 1 of sequence 0,", "theta.W_e"),
    ]  # fmt: skip
    for call, where, leaf in calls:
        with pytest.raises(ValueError, match=r"argument 'theta' gave logits with NaN") as info:
            call()
        assert f"infinities at {where} so there is no" in str(info.value), info.value
        assert str(info.value).endswith(f"{leaf} is not finite"), info.value


def test_embed_names_a_w_e_that_is_not_a_matrix():
    """Seed 606's survivor (embeddings-75bbfb): eq. 1's W_e checked as a matrix by embed itself
    (a vector of d_e entries would otherwise pass the row-count check and gather garbage)."""
    W_p = jnp.ones((4, 8))
    for W_e in (jnp.ones(4), jnp.ones((4, 9, 1))):
        with pytest.raises(ValueError, match=r"embed \(eq. 1\): argument 'W_e' must be a matrix"):
            fa.embed(jnp.asarray([1, 2]), W_e, W_p)


# ------------------------------------------------------------- fresh seed 707 (issue 26)


@pytest.mark.parametrize("kind", ["d", "ed"])
def test_init_kv_cache_defaults_to_theta_s_dtype_and_honours_a_given_one(d_theta, ed_theta, kind):
    """An empty cache of θ's float32 leaves is float32 (not JAX's default float64, with x64 on);
    a given dtype is every array's dtype; the shapes are (H, ℓ_max, d_attn) keys and
    (H, ℓ_max, d_mid) values, one per decoder layer, all zero."""
    theta64 = d_theta if kind == "d" else ed_theta
    L = D_HP["L"] if kind == "d" else ED_HP["L_dec"]
    H, ell_max, d_head = 2, 7, 3  # d_attn = d_mid = d_e / H
    theta32 = jax.tree.map(lambda a: a.astype(jnp.float32), theta64)
    for theta, kw, expected in (
        (theta32, {}, np.float32),
        (theta64, {}, np.float64),
        (theta64, dict(dtype=jnp.float32), np.float32),
        (theta32, dict(dtype=jnp.bfloat16), jnp.bfloat16),
    ):
        empty = cache.init_kv_cache(theta, **kw)
        assert len(empty.K) == len(empty.V) == L
        for a in (*empty.K, *empty.V):
            assert a.dtype == np.dtype(expected) and a.shape == (H, ell_max, d_head)
            assert not np.any(np.asarray(a, np.float32))


def test_every_choice_argument_of_the_practical_forms_refuses_an_unknown_choice_by_name():
    """``compiled_count``'s ``form`` and ``tree_shardings``' ``param_sharding``: an unknown name is
    refused with the list of choices (not a KeyError or a silent fallback); each choice works."""
    with pytest.raises(
        ValueError,
        match=r"^compiled_count: argument 'form' = 'generate' is not one of \['d_generate', 'ed_generate'\]$",
    ):
        cache.compiled_count("generate")
    for form in ("d_generate", "ed_generate"):
        n = cache.compiled_count(form)
        assert type(n) is int and n >= 0
    mesh, tree = parallel.data_mesh(), dict(W=jnp.ones((4, 2)))
    with pytest.raises(
        ValueError,
        match=r"^tree_shardings: argument 'param_sharding' must be one of \('replicated', 'fsdp', 'megatron'\), got 'sharded'$",
    ):
        parallel.tree_shardings(mesh, tree, "sharded")
    for choice in ("replicated", "fsdp"):
        assert isinstance(
            parallel.tree_shardings(mesh, tree, choice)["W"], jax.sharding.NamedSharding
        )
    # the trainer refuses it under its own name, before anything is compiled or placed
    theta = fa.init_d_transformer(jax.random.key(0), N_V=9, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
    with pytest.raises(
        ValueError, match=r"^data_parallel_train.*: argument 'param_sharding' must be one of"
    ):
        parallel.data_parallel_train(
            theta,
            [[1, 2, 3]],
            jax.random.key(1),
            optimizer=optax.sgd(0.1),
            N_steps=1,
            batch_size=1,
            param_sharding="sharded",
        )


def test_the_cache_s_position_mask_is_its_definition_with_and_without_a_window():
    """Seed 909 (the kind of ``attention-8e98c8``, a mask form with no value test):
    ``position_mask(T, positions, w)`` is ``Mask[t_z, j] = [[t_z ≤ positions[j]]]`` over the T
    stored rows, and with a window w also ``[[positions[j] − t_z < w]]``, computed here entry by
    entry in plain Python for positions out of order, repeated and at both ends."""
    from formal_algorithms.practice.kv_attention import position_mask

    for T in (1, 3, 5):
        for positions in ([0], [T - 1], [2, 0, 4, 4, 1][: T + 1], list(range(T))):
            positions = [min(p, T - 1) for p in positions]
            for window in (None, 1, 2, T + 1):
                expected = [
                    [t <= p and (window is None or p - t < window) for p in positions]
                    for t in range(T)
                ]
                mask = position_mask(T, jnp.asarray(positions), window)
                assert mask.dtype == jnp.bool_ and mask.shape == (T, len(positions))
                np.testing.assert_array_equal(mask, np.asarray(expected, bool))


def test_the_mean_loss_of_a_batch_with_no_target_is_zero_with_a_finite_gradient():
    """Seed 1111 (``update-ed062c``): a batch can hold no target (an MLM draw that masks nothing,
    every row padding), and its mean is the empty mean, taken as 0, not 0 / 0 = NaN. Its
    derivative in the summed loss is finite (1 / max(0, 1)), so θ's gradient, 0 with no target,
    stays 0 rather than 0 · ∞. The sum reduction is the sum whatever the count."""
    from formal_algorithms.paper.training import TokenStats
    from formal_algorithms.practice.update import reduce_loss

    def mean(loss):
        return reduce_loss(TokenStats(loss, jnp.int32(0), jnp.int32(0)), "mean")

    assert float(mean(jnp.float32(0.0))) == 0.0
    assert float(jax.grad(mean)(jnp.float32(0.0))) == 1.0
    stats = TokenStats(jnp.float32(6.0), jnp.int32(4), jnp.int32(1))
    assert float(reduce_loss(stats, "mean")) == 1.5
    assert float(reduce_loss(stats, "sum")) == 6.0
