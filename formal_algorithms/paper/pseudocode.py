"""The paper's pseudocode, line by line: one table that the trace (:mod:`formal_algorithms.trace`)
prints beside every recorded value and that algorithms.md's "Line index" is generated from, so the
two cannot drift (tests/tools/test_trace.py compares them).

Adapted from [PH22] (M. Phuong and M. Hutter, *Formal Algorithms for Transformers*,
arXiv:2207.09238, CC BY 4.0): the symbols and line numbers are the paper's; the 1-based indices
are the paper's too (code is 0-based, see algorithms.md's conventions).

``PSEUDOCODE[algorithm][line]`` is the text of that line; ``algorithm`` is 1-15 or an equation
(``"eq. 1"``). ``TITLES[algorithm]`` is its name in the paper. A line that opens a loop names the
loop variable first (``for l = 1, …, L``); :func:`loop_variable` reads it back for the trace.
"""

from __future__ import annotations

import re

TITLES: dict[int | str, str] = {
    "eq. 1": "token and positional embedding",
    1: "Token embedding",
    2: "Positional embedding",
    3: "Basic single-query attention",
    4: "Ṽ ← Attention(X, Z | W_qkv, Mask)",
    5: "Ṽ ← MHAttention(X, Z | W, Mask)",
    6: "ê ← layer_norm(e | γ, β)",
    7: "Unembedding",
    8: "P ← EDTransformer(z, x | θ)",
    9: "P ← ETransformer(x | θ)",
    10: "P ← DTransformer(x | θ)",
    11: "θ̂ ← EDTraining({(z_n, x_n)}, θ)",
    12: "θ̂ ← ETraining({x_n}, θ)",
    13: "θ̂ ← DTraining({x_n}, θ)",
    14: "y ← DInference(x, θ̂)",
    15: "x̂ ← EDInference(z, θ̂)",
}

_ENCODER_LAYER = {
    5: "X ← X + MHAttention(X | W_l, Mask ≡ 1)",
    6: "for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ_l^1, β_l^1)",
    7: "X ← X + W_mlp2^l GELU(W_mlp1^l X + b_mlp1^l 1ᵀ) + b_mlp2^l 1ᵀ",
    8: "for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ_l^2, β_l^2)",
}
_EMBED = {
    1: "ℓ ← length(x)",
    2: "for t ∈ [ℓ]: e_t ← W_e[:, x[t]] + W_p[:, t]",
    3: "X ← [e_1, e_2, …, e_ℓ]",
}
_TRAINING_LOOPS = {1: "for i = 1, 2, …, N_epochs do", 2: "for n = 1, 2, …, N_data do"}

PSEUDOCODE: dict[int | str, dict[int, str]] = {
    "eq. 1": {1: "e = W_e[:, x[t]] + W_p[:, t]"},
    1: {1: "return e = W_e[:, v]"},
    2: {1: "return e_p = W_p[:, ℓ]"},
    3: {
        1: "q ← W_q e + b_q",
        2: "∀t: k_t ← W_k e_t + b_k",
        3: "∀t: v_t ← W_v e_t + b_v",
        4: "∀t: α_t = exp(qᵀk_t/√d_attn) / Σ_u exp(qᵀk_u/√d_attn)",
        5: "return ṽ = Σ_{t=1}^{T} α_t v_t",
    },
    4: {
        1: "Q ← W_q X + b_q 1ᵀ",
        2: "K ← W_k Z + b_k 1ᵀ",
        3: "V ← W_v Z + b_v 1ᵀ",
        4: "S ← Kᵀ Q",
        5: "∀t_z, t_x: if ¬Mask[t_z, t_x] then S[t_z, t_x] ← −∞",
        6: "return Ṽ = V · softmax(S / √d_attn)",
    },
    5: {
        1: "for h ∈ [H] do",
        2: "Y^h ← Attention(X, Z | W_qkv^h, Mask)",
        3: "Y ← [Y^1; Y^2; …; Y^H]",
        4: "return Ṽ = W_o Y + b_o 1ᵀ",
    },
    6: {
        1: "m ← Σ_{i=1}^{d_e} e[i] / d_e",
        2: "v ← Σ_{i=1}^{d_e} (e[i] − m)² / d_e",
        3: "return ê = (e − m)/√v ⊙ γ + β",
    },
    7: {1: "return p = softmax(W_u e)"},
    8: {
        1: "ℓ_z ← length(z)",
        2: "for t ∈ [ℓ_z]: e_t ← W_e[:, z[t]] + W_p[:, t]",
        3: "Z ← [e_1, e_2, …, e_ℓ_z]",
        4: "for l = 1, 2, …, L_enc do",
        5: "Z ← Z + MHAttention(Z | W_l^enc, Mask ≡ 1)",
        6: "for t ∈ [ℓ_z]: Z[:, t] ← layer_norm(Z[:, t] | γ_l^1, β_l^1)",
        7: "Z ← Z + W_mlp2^l ReLU(W_mlp1^l Z + b_mlp1^l 1ᵀ) + b_mlp2^l 1ᵀ",
        8: "for t ∈ [ℓ_z]: Z[:, t] ← layer_norm(Z[:, t] | γ_l^2, β_l^2)",
        9: "end",
        10: "ℓ_x ← length(x)",
        11: "for t ∈ [ℓ_x]: e_t ← W_e[:, x[t]] + W_p[:, t]",
        12: "X ← [e_1, e_2, …, e_ℓ_x]",
        13: "for l = 1, 2, …, L_dec do",
        14: "X ← X + MHAttention(X | W_l^dec, Mask[t, t'] ≡ [[t ≤ t']])",
        15: "for t ∈ [ℓ_x]: X[:, t] ← layer_norm(X[:, t] | γ_l^3, β_l^3)",
        16: "X ← X + MHAttention(X, Z | W_l^e/d, Mask ≡ 1)",
        17: "for t ∈ [ℓ_x]: X[:, t] ← layer_norm(X[:, t] | γ_l^4, β_l^4)",
        18: "X ← X + W_mlp4^l ReLU(W_mlp3^l X + b_mlp3^l 1ᵀ) + b_mlp4^l 1ᵀ",
        19: "for t ∈ [ℓ_x]: X[:, t] ← layer_norm(X[:, t] | γ_l^5, β_l^5)",
        20: "end",
        21: "return P = softmax(W_u X)",
    },
    9: {
        **_EMBED,
        4: "for l = 1, 2, …, L do",
        **_ENCODER_LAYER,
        9: "end",
        10: "X ← GELU(W_f X + b_f 1ᵀ)",
        11: "for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ, β)",
        12: "return P = softmax(W_u X)",
    },
    10: {
        **_EMBED,
        4: "for l = 1, 2, …, L do",
        5: "for t ∈ [ℓ]: X̃[:, t] ← layer_norm(X[:, t] | γ_l^1, β_l^1)",
        6: "X ← X + MHAttention(X̃ | W_l, Mask[t, t'] = [[t ≤ t']])",
        7: "for t ∈ [ℓ]: X̃[:, t] ← layer_norm(X[:, t] | γ_l^2, β_l^2)",
        8: "X ← X + W_mlp2^l GELU(W_mlp1^l X̃ + b_mlp1^l 1ᵀ) + b_mlp2^l 1ᵀ",
        9: "end",
        10: "for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ, β)",
        11: "return P = softmax(W_u X)",
    },
    11: {
        **_TRAINING_LOOPS,
        3: "ℓ ← length(x_n)",
        4: "P(θ) ← EDTransformer(z_n, x_n | θ)",
        5: "loss(θ) = −Σ_{t=1}^{ℓ−1} log P(θ)[x_n[t+1], t]",
        6: "θ ← θ − η·∇loss(θ)",
        7: "end",
        8: "end",
        9: "return θ̂ = θ",
    },
    12: {
        **_TRAINING_LOOPS,
        3: "ℓ ← length(x_n)",
        4: "for t = 1, 2, …, ℓ do",
        5: "x̃_n[t] ← mask_token or x_n[t] randomly",
        6: "end",
        7: "T̃ ← {t ∈ [ℓ] : x̃_n[t] = mask_token}",
        8: "P(θ) ← ETransformer(x̃_n | θ)",
        9: "loss(θ) = −Σ_{t∈T̃} log P(θ)[x_n[t], t]",
        10: "θ ← θ − η·∇loss(θ)",
        11: "end",
        12: "end",
        13: "return θ̂ = θ",
    },
    13: {
        **_TRAINING_LOOPS,
        3: "ℓ ← length(x_n)",
        4: "P(θ) ← DTransformer(x_n | θ)",
        5: "loss(θ) = −Σ_{t=1}^{ℓ−1} log P(θ)[x_n[t+1], t]",
        6: "θ ← θ − η·∇loss(θ)",
        7: "end",
        8: "end",
        9: "return θ̂ = θ",
    },
    14: {
        1: "ℓ ← length(x)",
        2: "for i = 1, 2, …, ℓ_gen do",
        3: "P ← DTransformer(x | θ̂)",
        4: "p ← P[:, ℓ + i − 1]",
        5: "sample a token y from q ∝ p^{1/τ}",
        6: "x ← [x, y]",
        7: "end",
        8: "return y = x[ℓ+1 : ℓ+ℓ_gen]",
    },
    15: {
        1: "x̂ ← [bos_token]",
        2: "y ← 0",
        3: "while y ≠ eos_token do",
        4: "P ← EDTransformer(z, x̂ | θ̂)",
        5: "p ← P[:, length(x̂)]",
        6: "sample a token y from q ∝ p^{1/τ}",
        7: "x̂ ← [x̂, y]",
        8: "end",
        9: "return x̂",
    },
}

#: Loops without a variable in the paper get one here, counted from 1 (Algorithm 15's ``while``).
WHILE_VARIABLE = "i"


def loop_variable(algorithm: int | str, line: int) -> str | None:
    """The loop variable that ``line`` of ``algorithm`` opens (``"l"`` for ``for l = 1, …, L``),
    :data:`WHILE_VARIABLE` for a ``while``, ``None`` if the line opens no loop."""
    text = PSEUDOCODE.get(algorithm, {}).get(line, "")
    if text.startswith("while "):
        return WHILE_VARIABLE
    match = re.match(r"for (\w+) (?:=|∈)", text)
    return match.group(1) if match and text.endswith(" do") else None


def text(algorithm: int | str, lines: tuple[int, ...]) -> str:
    """The pseudocode of one line, or of a range joined by ``; ``."""
    table = PSEUDOCODE.get(algorithm, {})
    return "; ".join(table[n] for n in lines if n in table)


def label(algorithm: int | str) -> str:
    """``"Algorithm 10"`` or ``"eq. 1"``."""
    return f"Algorithm {algorithm}" if isinstance(algorithm, int) else str(algorithm)
