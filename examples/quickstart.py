"""Embed a token sequence (eq. 1) and run multi-head causal self-attention (Algorithm 5) on it,
then the whole of Algorithm 10. Run: python examples/quickstart.py"""

import jax
import jax.numpy as jnp

import formal_algorithms as fa

key_e, key_w, key_theta = jax.random.split(jax.random.key(0), 3)
N_V, ell_max, d_e, H = 16, 8, 12, 3

# Eq. 1: X[:, t] = W_e[:, x[t]] + W_p[:, t], one token per column.
W_e, _ = fa.init_embeddings(key_e, N_V, d_e, ell_max)
W_p = fa.paper_sinusoidal_W_p(d_e, ell_max)  # the paper's hard-coded sinusoid
x = jnp.array([3, 1, 4, 1, 5, 9])
X = fa.embed(x, W_e, W_p)  # (d_e, ℓ) = (12, 6)

# Algorithm 5 with the unidirectional mask of eq. 3: Mask[t_z, t_x] = [[t_z ≤ t_x]].
W = fa.init_mh_attention(key_w, H=H, d_x=d_e, d_z=d_e, d_attn=4, d_mid=4, d_out=d_e)
Mask = fa.unidirectional_mask(x.shape[0])
V_tilde = fa.mh_attention(X, X, W, Mask)  # (d_out, ℓ_x) = (12, 6)
print("X:", X.shape, " MHAttention(X | W, causal):", V_tilde.shape)
print("Mask (rows t_z, columns t_x):\n", Mask.astype(int))

# Algorithm 10: column t of P is the model's distribution of x[t+1] given x[:t+1].
theta = fa.init_d_transformer(key_theta, N_V=N_V, ell_max=ell_max, L=2, H=H, d_e=d_e, d_mlp=48)
P = fa.d_transformer(x, theta)
print("P:", P.shape, " column sums:", P.sum(axis=0))
