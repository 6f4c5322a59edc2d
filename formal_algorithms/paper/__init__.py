"""Layer 1, the paper itself (§3-7): its 15 algorithms as pure JAX functions, line by line.

Nothing here imports from :mod:`formal_algorithms.practice` or from the tools; every module is a
section of the paper (embeddings, attention, normalisation, architectures, training, inference,
tokenization) plus the shared input checks, shapes and initialisation they use.
"""
