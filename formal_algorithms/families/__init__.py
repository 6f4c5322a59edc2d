"""Today's model families as the paper's algorithms with documented line substitutions
(docs/variants.md, "Model families"; docs/families.md): :mod:`.llama`, :mod:`.qwen2`,
:mod:`.mistral`, :mod:`.gemma`, :mod:`.gpt_neox`, :mod:`.opt`, :mod:`.phi` (Algorithm 10),
:mod:`.bert` and :mod:`.albert` (Algorithm 9), :mod:`.t5` and :mod:`.bart` (Algorithm 8); the
decoders' cached Algorithm 14 written once in :mod:`.decoding`; the atlases in :mod:`.atlas`."""
