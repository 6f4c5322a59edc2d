"""The command-line program ``formal-algorithms``: :mod:`.main` parses and dispatches, one module per
command (``train``, ``sample``, ``attention``, ``seq2seq``, ``mlm``, ``benchmark``), shared parts in
:mod:`.common` and :mod:`.stream`."""

from .main import build_parser, main
from .stream import stream_d_inference

__all__ = ["build_parser", "main", "stream_d_inference"]
