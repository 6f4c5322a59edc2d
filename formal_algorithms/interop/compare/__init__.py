"""Where does a model depart from the paper? A line-by-line comparison (issues 16, 27).

:func:`compare` takes a Hugging Face ``GPT2LMHeadModel``, ``BertForMaskedLM``,
``LlamaForCausalLM``, ``Qwen2ForCausalLM`` or ``MistralForCausalLM`` (or a class of the user's own of one of these architectures), or a
``torch.nn.Transformer`` with the embeddings around it, and a token sequence, and

1. converts the model with this package's exact converters (:mod:`..gpt2`, :mod:`..bert`,
   :mod:`..torch_transformer`, ``families.llama_loading.llama_from_state_dict``, the Qwen2 and
   Mistral families' ``*_from_state_dict``);
2. runs the paper's algorithm on the converted θ under :func:`formal_algorithms.trace`
   (Algorithm 10 for GPT-2, Algorithm 9 with BERT's extras for BERT, Algorithm 10 with Llama's
   substitutions for Llama, Algorithm 8 for ``nn.Transformer``);
3. runs the model on the same tokens with forward hooks (:mod:`.capture`), reading the values
   its family's table names (:mod:`.families`: paper key ← module, input or output, transform);
4. aligns both on structured keys built from the trace's records (:mod:`.alignment`) and
   reports one row per line (:mod:`.report`): label | pseudocode | max abs | max rel error;
5. names the first line beyond tolerance and its first departing token position, the likely
   causes for that kind of line in that family (:mod:`.causes`) and the evidence
   (:mod:`.evidence`: checks computed on the captured values for this report).

A model equal to its conversion has every row within tolerance; a model whose *code* departs
from what its weights and configuration say departs at the first line that code touches. A line
is within tolerance when ``max |model − paper| ≤ tol · max(1, max |paper|)``
(:func:`tolerance_for`).
"""

from __future__ import annotations

import contextlib
import math

import jax
import numpy as np
import torch
from torch import nn

from ...paper.checks import check_eps, check_tokens, fail
from .alignment import Key, align, paper_values
from .causes import causes_for
from .evidence import Context, explain
from .families import CONTEXT, TABLES, family_for, model_type
from .report import TOLERANCES, Report, Row, tolerance_for, tolerance_note

__all__ = [
    "compare",
    "compare_batch",
    "compare_cached",
    "Report",
    "Row",
    "Key",
    "TABLES",
    "TOLERANCES",
    "tolerance_for",
    "tolerance_note",
]

NAME = "compare"


def compare(
    model,
    x,
    *,
    z=None,
    W_e=None,
    W_p=None,
    W_u=None,
    eps: float | None = None,
    float64: bool = False,
    tolerance: float | None = None,
) -> Report:
    """Run ``model`` and the paper's algorithm on the tokens ``x`` and report, line by line,
    where they part ways (see the module's docstring).

    ``model``: a Hugging Face ``GPT2LMHeadModel`` (Algorithm 10), ``BertForMaskedLM``
    (Algorithm 9 with BERT's extras), ``LlamaForCausalLM``, ``Qwen2ForCausalLM`` or
    ``MistralForCausalLM`` (Algorithm 10 with the family's substitutions), or a ``torch.nn.Transformer`` (Algorithm 8; then also the context tokens
    ``z`` and the embeddings around the model in the paper's orientation: ``W_e`` ``(d_e, N_V)``,
    ``W_p`` ``(d_e, ℓ_max)``, ``W_u`` ``(N_V, d_e)`` or ``None`` for tied; ``eps`` defaults to the
    model's first LayerNorm's). The model must be in eval mode and convertible.
    ``x``: 1-D token ids (list, numpy or torch). ``float64=True`` runs both sides in float64: the
    model is cast in place and cast back afterwards (exact for float32/bfloat16/float16 weights).
    ``tolerance``: a finite number > 0 overriding :func:`tolerance_for`. Returns a :class:`Report`.
    """
    x = token_ids(NAME, "x", x)
    z = None if z is None else token_ids(NAME, "z", z)
    with session(NAME, model, float64, tolerance, W_e, W_p, W_u, eps, z) as family:
        for name, tokens in (("x", x), ("z", z)):
            if tokens is not None:
                check_fits(NAME, family, name, tokens)
        family.x = x
        return comparison(family, type(model).__name__, tolerance)


def check_fits(where, family, argument, x) -> None:
    """``x``'s ids in the model's vocabulary (θ's ``W_e``) and, where θ has ``W_p``, at most its
    ℓ_max long: refused as ``where``'s (the compare function called), before the paper's run
    would refuse them as its own."""
    W_e, W_p = (getattr(family.theta, name, None) for name in ("W_e", "W_p"))
    N_V = np.shape(W_e)[1] if W_e is not None else None
    ell_max = np.shape(W_p)[1] if W_p is not None else None
    if N_V is not None:
        check_tokens(where, argument, x, N_V, ell_max)


@contextlib.contextmanager
def session(where, model, float64, tolerance, W_e=None, W_p=None, W_u=None, eps=None, z=None):
    """The checked model's family, inside float64 (the model cast and cast back) if asked; its
    arguments refused as ``where``'s (the compare function called), and so is what the family
    refuses inside, named ``compare`` there and renamed as it leaves (:func:`named`)."""
    if tolerance is not None:
        _check_tolerance(where, tolerance)
    if not isinstance(model, nn.Module):
        fail(
            where,
            "model",
            f"must be a torch module (GPT2LMHeadModel, BertForMaskedLM, "
            f"LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM or torch.nn.Transformer), got {type(model).__name__}",
            TypeError,
        )
    extras = dict(z=z, W_e=W_e, W_p=W_p, W_u=W_u, eps=eps)
    given = [name for name, value in extras.items() if value is not None]
    kind = model_type(model)
    if kind in CONTEXT:  # Algorithm 8 with its embeddings inside (BART, T5): z alone
        if z is None:
            fail(
                where,
                "z",
                f"is needed for a {CONTEXT[kind]} model: Algorithm 8 encodes the context z",
            )
        given.remove("z")
    if given and not isinstance(model, nn.Transformer):
        fail(
            where,
            given[0],
            f"is for a torch.nn.Transformer (Algorithm 8); a "
            f"{type(model).__name__} carries its own embeddings, context and ε",
        )
    if eps is not None:
        check_eps(where, eps)
    dtypes = {p.dtype for p in model.parameters()}
    if float64 and len(dtypes) > 1:
        fail(where, "model", f"mixes dtypes {sorted(map(str, dtypes))}; float64=True needs one")
    before = dtypes.pop() if len(dtypes) == 1 else None
    if float64:
        model.to(torch.float64)
        W_e, W_p, W_u = (
            None if w is None else np.asarray(_as_numpy(w), np.float64) for w in (W_e, W_p, W_u)
        )
    try:
        with named(where), jax.enable_x64(True) if float64 else contextlib.nullcontext():
            known = kind is not None or isinstance(model, nn.Transformer)
            if model.training and known:  # before a converter meets its dropout
                fail(
                    where,
                    "model",
                    "is in training mode; call model.eval() (the paper has no dropout)",
                )
            family = family_for(model, W_e, W_p, W_u, eps, z)
            family.z, family.float64 = z, float64
            yield family
    finally:
        if float64 and before is not None:
            model.to(before)


@contextlib.contextmanager
def named(where):
    """Inside, a refusal that names ``compare`` (the tables and the capture, which know no
    caller) is raised again naming ``where``, the compare function called: the name travels
    with the error, not in a global."""
    try:
        yield
    except (ValueError, TypeError) as error:
        text = str(error)
        if type(error) in (ValueError, TypeError) and text.startswith("compare: "):
            raise type(error)(f"{where}: {text.removeprefix('compare: ')}") from None
        raise


def _check_tolerance(where, tolerance):
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float | np.floating):
        fail(where, "tolerance", f"must be a number, got {type(tolerance).__name__}", TypeError)
    if not math.isfinite(tolerance) or tolerance <= 0:
        fail(where, "tolerance", f"must be a finite number > 0, got {tolerance!r}")


def _as_numpy(w):
    return w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)


def token_ids(where, argument, x):
    """``x`` as 1-D int64 token ids, or refused as ``where``'s ``argument``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        x = np.asarray(x)
    except ValueError:  # a ragged list of lists
        fail(where, argument, "must be one sequence of integer token ids, got a ragged list")
    if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.integer):
        fail(
            where,
            argument,
            f"must be a non-empty 1-D sequence of integer token ids, got "
            f"shape {x.shape} and dtype {x.dtype}",
        )
    return x.astype(np.int64)


def comparison(family, model_name, tolerance, *, captured=None, last_column=False) -> Report:
    """The report of one comparison; ``captured``: the model's (exposed, extra) when the run is
    not :meth:`Family.run`'s; ``last_column``: compare the paper's last column only."""
    from ...trace import trace

    dtype = str(jax.tree_util.tree_leaves(family.theta)[0].dtype)
    d_e, L = family.size()
    tol = tolerance_for(dtype, d_e, L) if tolerance is None else float(tolerance)
    fn, args, kwargs = family.paper()
    records = trace(fn, *args, **kwargs).records
    exposed, extra = family.run() if captured is None else captured
    paper_list = paper_values(records, family.algorithm, family.final_line, family.layer_algorithm)
    if last_column:
        family.full_paper = {k: np.asarray(rec.value, np.float64) for k, rec, _ in paper_list}
        paper_list = [
            (k, rec._replace(value=_last(rec.value)), lines) for k, rec, lines in paper_list
        ]
    paper = {k: np.asarray(rec.value, np.float64) for k, rec, _ in paper_list}
    rows, not_exposed = align(paper_list, exposed, tol, family.kind)
    for row in rows if last_column else ():  # the one column compared is the last token's
        row.column = None if row.column is None else len(family.x)
    report = Report(
        model=model_name,
        algorithm=family.name,
        dtype=dtype,
        tokens=family.x.tolist(),
        tolerance=tol,
        tolerance_note=tolerance_note(dtype, tol),
        rows=rows,
        not_exposed=not_exposed,
        causes=[],
        evidence=[],
        known=list(family.known_found),
    )
    first = report.first
    if first is not None:
        ctx = Context(family, first.key, exposed, extra, paper, tol)
        report.evidence = explain(ctx, first.kind)
        report.causes, report.ruled_out = causes_for(family, first.kind, ctx.ran, ctx.hit)
    return report


def _last(value):
    value = np.asarray(value)
    return value[:, -1:] if value.ndim == 2 else value


from .batch import compare_batch, compare_cached  # noqa: E402 (it uses the names above)
