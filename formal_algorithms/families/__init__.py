"""Today's model families as the paper's algorithms with documented line substitutions
(docs/variants.md, "Model families"): :mod:`.llama` (Algorithm 10), :mod:`.bert` and
:mod:`.albert` (Algorithm 9);
:mod:`.qwen2`, :mod:`.mistral`, :mod:`.gpt_neox` (Algorithm 10; docs/families.md)."""
