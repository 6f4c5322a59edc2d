"""Our contenders: the literal Algorithms 10 and 8 (vmapped) and their batch-as-columns fast forms,
forward and AdamW training step."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ..paper.architectures import d_transformer_logits, ed_transformer_logits
from ..paper.parameters import init_d_transformer, init_ed_transformer
from .common import LEARNING_RATE, WEIGHT_DECAY, tokens, xla_flops


def ours_d(cfg, rng, fast_path: bool = False):
    """Forward and training step of Algorithm 10 on a (B, ℓ) batch, and the compiled step's FLOPs.

    The literal form, ``jax.vmap`` of :func:`~.architectures.d_transformer_logits` and
    :func:`~.trainer.train_step`; or with ``fast_path`` :mod:`.fast`'s batch-as-columns form
    (equal results, tests/test_fast.py).
    """
    import optax

    from ..practice import fast, trainer

    hp = {k: v for k, v in cfg.items() if k != "batch"}
    theta = init_d_transformer(jax.random.key(0), **hp)
    x = jnp.asarray(tokens(rng, cfg["batch"], cfg["ell_max"], cfg["N_V"]))
    opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    batch = dict(x=x, valid=jnp.ones(x.shape, bool))
    state = dict(theta=theta, opt=opt.init(theta))
    if fast_path:
        forward = jax.jit(fast.d_transformer_logits_batch)
        train_step = functools.partial(fast.train_step_fast, optimizer=opt)
    else:
        forward = jax.jit(jax.vmap(d_transformer_logits, in_axes=(0, None)))
        train_step = functools.partial(trainer.train_step, p_mask=0.15, optimizer=opt)

    def fwd():
        forward(x, theta).block_until_ready()

    def step():
        state["theta"], state["opt"], loss, _ = train_step(state["theta"], state["opt"], batch)
        loss.block_until_ready()

    compiled = train_step.func.lower(theta, state["opt"], batch, **train_step.keywords).compile()
    return fwd, step, xla_flops(compiled)


def ours_ed(cfg, rng, fast_path: bool = False):
    """Forward and training step of Algorithm 8 on a batch of (z, x) pairs: the literal form
    (``jax.vmap`` of :func:`~.architectures.ed_transformer_logits`, :func:`~.trainer.train_step`)
    or with ``fast_path`` :mod:`.fast`'s batch-as-columns form."""
    import optax

    from ..practice import fast, trainer

    hp = {k: v for k, v in cfg.items() if k != "batch"}
    theta = init_ed_transformer(jax.random.key(0), **hp)
    B, ell = cfg["batch"], cfg["ell_max"]
    z = jnp.asarray(tokens(rng, B, ell, cfg["N_V"]))
    x = jnp.asarray(tokens(rng, B, ell, cfg["N_V"]))
    opt = optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    valid = jnp.ones((B, ell), bool)
    batch = dict(z=z, z_valid=valid, x=x, x_valid=valid)
    state = dict(theta=theta, opt=opt.init(theta))
    if fast_path:
        forward = jax.jit(
            lambda z, x, th: fast.ed_transformer_logits_batch(z, x, th, z_valid=valid)
        )
        train_step = functools.partial(fast.train_step_fast, optimizer=opt)
    else:
        forward = jax.jit(jax.vmap(ed_transformer_logits, in_axes=(0, 0, None)))
        train_step = functools.partial(trainer.train_step, p_mask=0.15, optimizer=opt)

    def fwd():
        forward(z, x, theta).block_until_ready()

    def step():
        state["theta"], state["opt"], loss, _ = train_step(state["theta"], state["opt"], batch)
        loss.block_until_ready()

    return fwd, step
