"""Today's model families as the paper's algorithms with documented line substitutions
(docs/variants.md, "Model families"): :mod:`.llama` (Algorithm 10), :mod:`.bert` and
:mod:`.albert` (Algorithm 9)."""
