"""Prompts: the A1111 prompt language (syntax.py), prompts to embeddings per step
(conditioning.py), negative presets and styles (presets.py), {a|b} variants and __wildcards__
(wildcards.py)."""
