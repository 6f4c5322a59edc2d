"""formal_algorithms: the 15 algorithms of "Formal Algorithms for Transformers" (Phuong & Hutter,
2022, arXiv:2207.09238) as pure JAX functions, in the paper's column orientation.

The table of contents is the paper's: see ``algorithms.md`` for each algorithm's function, its
line-by-line map and every departure from the printed text.
"""

from .architectures import (
    DecoderLayer,
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    Layer,
    check_params,
    d_transformer,
    d_transformer_logits,
    e_transformer,
    e_transformer_logits,
    ed_decode_logits,
    ed_decoder_layer,
    ed_encode,
    ed_transformer,
    ed_transformer_logits,
    hyperparameters,
    init_d_transformer,
    init_e_transformer,
    init_ed_transformer,
    key_padding_mask,
    mlp,
    post_ln_layer,
    pre_ln_layer,
    unembedding_matrix,
)
from .attention import (
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
from .cache import (
    d_inference_cached,
    d_inference_cached_batch,
    ed_inference_cached,
    ed_inference_cached_batch,
)
from .embeddings import (
    embed,
    init_embeddings,
    paper_sinusoidal_W_p,
    positional_embedding,
    token_embedding,
    unembedding,
    vaswani_sinusoidal_W_p,
)
from .functions import gelu, gelu_tanh, log_softmax, relu, softmax
from .inference import d_inference, ed_inference, sample_token, special_tokens
from .normalisation import (
    EPS,
    init_layer_norm,
    layer_norm,
    layer_norm_columns,
    rms_norm,
    rms_norm_columns,
)
from .tokenization import CharTokenizer
from .training import d_loss, d_training, e_loss, e_training, ed_loss, ed_training

__version__ = "0.1.0"
