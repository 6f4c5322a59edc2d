"""Layer 2, the paper's §8 in practice: the same algorithms made fast or practical, each proven
equal to the literal forms of :mod:`formal_algorithms.paper` (which it imports, never the reverse).

``fast`` (a batch as columns of one matrix), ``cache`` (key/value-cached inference), ``trainer``
(minibatch training with optax), ``parallel`` (data parallel over a device mesh), ``checkpoint``
(safetensors files) and ``bpe`` (a subword tokenizer).
"""
