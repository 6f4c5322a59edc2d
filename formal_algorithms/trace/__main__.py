"""``python -m formal_algorithms.trace`` prints algorithms.md's "Line index" table, made anew from
the pseudocode table and the code's ``# line`` comments."""

from .index import line_index_markdown

print(line_index_markdown())
