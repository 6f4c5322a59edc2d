"""The optimiser update every training step ends with, written once for the literal step
(:func:`.trainer.train_step`) and the fast one (:func:`.fast.train_step_fast`): each says only
how its batch's :class:`~..paper.training.TokenStats` are computed.

``optax`` (the ``train`` extra) is imported when a step runs, so the core package keeps
importing without it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..paper.training import TokenStats


class StepStats(NamedTuple):
    """What one training step saw: the batch's summed ``loss``, ``n_targets``, ``n_correct`` (as
    :class:`~..paper.training.TokenStats`) and the global norm of the gradient."""

    loss: jax.Array
    n_targets: jax.Array
    n_correct: jax.Array
    grad_norm: jax.Array


def reduce_loss(stats: TokenStats, reduction: str):
    """The loss a step descends: the mean over the batch's targets, or their ``"sum"``."""
    if reduction == "mean":
        return stats.loss / jnp.maximum(stats.n_targets, 1)
    return stats.loss


def optimizer_step(stats_of, theta, opt_state, optimizer, reduction):
    """The gradient of the ``reduction`` of ``stats_of(θ)`` (a :class:`TokenStats`), one
    ``optimizer`` update, and the gradient's norm in the stats: ``(θ, opt_state, loss, stats)``."""
    import optax  # the train extra

    def loss(th):
        stats = stats_of(th)
        return reduce_loss(stats, reduction), stats

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(theta)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    stats = StepStats(*stats, optax.tree.norm(grads))
    return optax.apply_updates(theta, updates), opt_state, value, stats
