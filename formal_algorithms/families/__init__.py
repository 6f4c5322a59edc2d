"""Today's model families as the paper's algorithms with documented line substitutions
(docs/variants.md, "Model families"; docs/families.md): :mod:`.llama`, :mod:`.qwen2`,
:mod:`.mistral`, :mod:`.gemma`, :mod:`.gpt_neox`, :mod:`.opt` (Algorithm 10), :mod:`.bert` and
:mod:`.albert` (Algorithm 9); their cached Algorithm 14 written once in :mod:`.decoding`."""
