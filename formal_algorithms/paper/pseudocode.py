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
from typing import NamedTuple

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


# ------------------------------------------------------------------ what each line's value is


class Value(NamedTuple):
    """What a pseudocode line produces: its symbol, its kind and its shape in the paper's
    orientation (symbols; ``None`` where the line leaves the shape open, e.g. a ``∀t`` line
    that the code may compute for one ``t`` or for all)."""

    name: str
    kind: str  # one of KINDS
    shape: tuple[str, ...] | None = None


#: The kinds of value, each with the invariant it implies (checked by ``trace.semantics``).
KINDS: dict[str, str] = {
    "array": "a float array, every entry finite",
    "masked": "a float array, finite except −∞ (exactly where the mask forbids)",
    "distribution": "a float array, entries ≥ 0, each column summing to 1",
    "log_distribution": "a float array ≤ 0 whose columns are log-probabilities (logsumexp 0)",
    "mask": "a boolean array",
    "token": "one integer token id ≥ 0",
    "tokens": "a 1-D integer array of token ids ≥ 0",
    "length": "an integer ≥ 0",
    "index": "a loop's integer index ≥ 1",
    "scalar": "one finite float",
    "params": "the parameters θ (a pytree of finite arrays)",
}

_EMBED_VALUES = {
    1: Value("ℓ", "length", ()),
    2: Value("e_t", "array", ("d_e",)),
    3: Value("X", "array", ("d_e", "ℓ")),
}
_LAYER = ("d_e", "ℓ")
_TRAINING_VALUES = {1: Value("i", "index", ()), 2: Value("n", "index", ())}

VALUES: dict[int | str, dict[int, Value]] = {
    "eq. 1": {1: Value("e", "array", None)},  # one column e_t, or all of them at once
    1: {1: Value("e", "array", ("d_e",))},
    2: {1: Value("e_p", "array", ("d_e",))},
    3: {
        1: Value("q", "array", ("d_attn",)),
        2: Value("k_t", "array", None),
        3: Value("v_t", "array", None),
        4: Value("α", "distribution", ("T",)),
        5: Value("ṽ", "array", ("d_out",)),
    },
    4: {
        1: Value("Q", "array", ("d_attn", "ℓ_x")),
        2: Value("K", "array", ("d_attn", "ℓ_z")),
        3: Value("V", "array", ("d_out", "ℓ_z")),
        4: Value("S", "array", ("ℓ_z", "ℓ_x")),
        5: Value("S", "masked", ("ℓ_z", "ℓ_x")),
        6: Value("Ṽ", "array", ("d_out", "ℓ_x")),
    },
    5: {
        1: Value("h", "index", ()),
        2: Value("Y^h", "array", ("d_mid", "ℓ_x")),
        3: Value("Y", "array", ("H·d_mid", "ℓ_x")),
        4: Value("Ṽ", "array", ("d_out", "ℓ_x")),
    },
    6: {
        1: Value("m", "array", None),
        2: Value("v", "array", None),
        3: Value("ê", "array", None),
    },
    7: {1: Value("p", "distribution", ("N_V",))},
    8: {
        1: Value("ℓ_z", "length", ()),
        2: Value("e_t", "array", ("d_e",)),
        3: Value("Z", "array", ("d_e", "ℓ_z")),
        4: Value("l", "index", ()),
        **{n: Value("Z", "array", ("d_e", "ℓ_z")) for n in (5, 6, 7, 8)},
        10: Value("ℓ_x", "length", ()),
        11: Value("e_t", "array", ("d_e",)),
        12: Value("X", "array", ("d_e", "ℓ_x")),
        13: Value("l", "index", ()),
        **{n: Value("X", "array", ("d_e", "ℓ_x")) for n in range(14, 20)},
        21: Value("P", "distribution", ("N_V", "ℓ_x")),
    },
    9: {
        **_EMBED_VALUES,
        4: Value("l", "index", ()),
        **{n: Value("X", "array", _LAYER) for n in (5, 6, 7, 8, 10, 11)},
        12: Value("P", "distribution", ("N_V", "ℓ")),
    },
    10: {
        **_EMBED_VALUES,
        4: Value("l", "index", ()),
        5: Value("X̃", "array", _LAYER),
        6: Value("X", "array", _LAYER),
        7: Value("X̃", "array", _LAYER),
        **{n: Value("X", "array", _LAYER) for n in (8, 10)},
        11: Value("P", "distribution", ("N_V", "ℓ")),
    },
    11: {
        **_TRAINING_VALUES,
        3: Value("ℓ", "length", ()),
        4: Value("P(θ)", "distribution", ("N_V", "ℓ")),
        5: Value("loss(θ)", "scalar", ()),
        6: Value("θ", "params"),
        9: Value("θ̂", "params"),
    },
    12: {
        **_TRAINING_VALUES,
        3: Value("ℓ", "length", ()),
        4: Value("t", "index", ()),
        5: Value("x̃_n[t]", "token", ()),
        7: Value("T̃", "mask", ("ℓ",)),  # as its indicator [[t ∈ T̃]]
        8: Value("P(θ)", "distribution", ("N_V", "ℓ")),
        9: Value("loss(θ)", "scalar", ()),
        10: Value("θ", "params"),
        13: Value("θ̂", "params"),
    },
    13: {
        **_TRAINING_VALUES,
        3: Value("ℓ", "length", ()),
        4: Value("P(θ)", "distribution", ("N_V", "ℓ")),
        5: Value("loss(θ)", "scalar", ()),
        6: Value("θ", "params"),
        9: Value("θ̂", "params"),
    },
    14: {
        1: Value("ℓ", "length", ()),
        2: Value("i", "index", ()),
        3: Value("P", "distribution", ("N_V", "ℓ")),
        4: Value("p", "distribution", ("N_V",)),
        5: Value("y", "token", ()),
        6: Value("x", "tokens", None),
        8: Value("y", "tokens", ("ℓ_gen",)),
    },
    15: {
        1: Value("x̂", "tokens", None),
        2: Value("y", "token", ()),
        3: Value("i", "index", ()),
        4: Value("P", "distribution", ("N_V", "ℓ_x")),
        5: Value("p", "distribution", ("N_V",)),
        6: Value("y", "token", ()),
        7: Value("x̂", "tokens", None),
        9: Value("x̂", "tokens", None),
    },
}

_LOGITS = Value("W_u X", "array", ("N_V", "ℓ"))
_LOG_P = {"log_P": Value("log P(θ)", "log_distribution", ("N_V", "ℓ"))}

#: The parts: values the code forms on the way to a line's own value (``# line N (part: name)``),
#: by (algorithm, line) and the name they are recorded under.
PARTS: dict[tuple[int | str, int], dict[str, Value]] = {
    (4, 6): {"A": Value("softmax(S/√d_attn)", "distribution", ("ℓ_z", "ℓ_x"))},
    # the attention branch alone, where a family sums it later (GPT-NeoX's parallel residual)
    (10, 6): {"attention": Value("MHAttention(X̃ | W_l)", "array", ("d_e", "ℓ"))},
    (7, 1): {"logits": Value("W_u e", "array", ("N_V",))},
    (8, 21): {"logits": Value("W_u X", "array", ("N_V", "ℓ_x"))},
    (9, 12): {"logits": _LOGITS},
    (10, 11): {"logits": _LOGITS},
    (11, 4): _LOG_P,
    (12, 8): _LOG_P,
    (13, 4): _LOG_P,
    (14, 3): {"logits": _LOGITS},
    (14, 5): {"q": Value("q", "distribution", ("N_V",))},
    (15, 4): {"logits": _LOGITS, "Z": Value("Z", "array", ("d_e", "ℓ_z"))},
    (15, 6): {"q": Value("q", "distribution", ("N_V",))},
}


def value(algorithm: int | str, line: int, part: str | None = None) -> Value | None:
    """The :class:`Value` that ``line`` of ``algorithm`` names (or its part ``part``)."""
    if part is not None:
        return PARTS.get((algorithm, line), {}).get(part)
    return VALUES.get(algorithm, {}).get(line)
