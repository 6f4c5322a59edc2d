"""formal_algorithms: the 15 algorithms of "Formal Algorithms for Transformers" (Phuong & Hutter,
2022, arXiv:2207.09238) as pure JAX functions, in the paper's column orientation.

The table of contents is the paper's: see ``algorithms.md`` for each algorithm's function, its
line-by-line map and every departure from the printed text.
"""

from .paper.architectures import (
    d_transformer,
    d_transformer_logits,
    e_transformer,
    e_transformer_logits,
    ed_decode_logits,
    ed_decoder_layer,
    ed_encode,
    ed_transformer,
    ed_transformer_logits,
    key_padding_mask,
    mlp,
    post_ln_layer,
    pre_ln_layer,
    unembedding_matrix,
)
from .paper.attention import (
    AttentionParams,
    MHAttentionParams,
    attention,
    bidirectional_mask,
    causal_mask,
    init_attention,
    init_mh_attention,
    mh_attention,
    single_query_attention,
    unidirectional_mask,
)
from .paper.embeddings import (
    embed,
    init_embeddings,
    paper_sinusoidal_W_p,
    positional_embedding,
    token_embedding,
    unembedding,
    vaswani_sinusoidal_W_p,
)
from .paper.functions import gelu, gelu_tanh, log_softmax, relu, softmax
from .paper.inference import d_inference, ed_inference, sample_token, special_tokens
from .paper.normalisation import (
    EPS,
    init_layer_norm,
    layer_norm,
    layer_norm_columns,
    rms_norm,
    rms_norm_columns,
)
from .paper.parameters import (
    DecoderLayer,
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    Layer,
    init_d_transformer,
    init_e_transformer,
    init_ed_transformer,
)
from .paper.tokenization import CharTokenizer
from .paper.training import (
    d_loss,
    d_training,
    draw_mask,
    e_loss,
    e_training,
    ed_loss,
    ed_training,
    mask_tokens,
)
from .paper.validation import check_params, hyperparameters
from .practice.cache import (
    d_inference_cached,
    d_inference_cached_batch,
    ed_inference_cached,
    ed_inference_cached_batch,
)

# The trace (a tool, above the layers it records) is the one tool named at the top: ``fa.trace`` is
# the function. Binding it after the import keeps it so: the import system sets the attribute
# ``trace`` to the subpackage only when it first loads it, which is here.
from .trace import Trace, trace  # noqa: E402  (after the layers it imports)

__version__ = "0.2.0"

__all__ = sorted(
    name for name in dir() if not name.startswith("_") and name not in {"paper", "practice"}
)

# The submodules of the flat layout before 0.2 (``fa.trainer``, ``from formal_algorithms import
# cache``) resolve to their new homes on first use; nothing heavy is imported until then.
_MOVED = {
    **{m: "paper" for m in ("architectures", "attention", "embeddings", "functions", "inference",
                            "initialisation", "normalisation", "shapes", "tokenization",
                            "training")},
    **{m: "practice" for m in ("bpe", "cache", "checkpoint", "fast", "parallel", "trainer")},
}  # fmt: skip


def __getattr__(name):
    if name in _MOVED:
        import importlib

        return importlib.import_module(f"{__name__}.{_MOVED[name]}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
