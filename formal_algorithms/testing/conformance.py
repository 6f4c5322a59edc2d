"""Conformance checks for anyone's transformer: the paper's invariants, asked of a
:class:`~formal_algorithms.testing.adapters.TokenModel` (a PyTorch, Hugging Face, JAX, Equinox,
Flax model or any function from token ids to logits).

Each check either returns a one-line account of what it verified, raises
:class:`ConformanceViolation` (an :class:`~formal_algorithms.testing.InvariantViolation`, so an
``AssertionError``) naming the invariant, the position and the size of the violation, or raises
:class:`NotApplicable` when the invariant does not apply to the model (a bidirectional encoder
has no causality to check). :func:`run_battery` runs them all and returns a
:class:`ConformanceReport` (printable, JSON-able); ``formal-algorithms check --hf DIR`` prints it.

The invariants (the paper's sections in brackets):

- ``causality`` (eq. 3, Algorithm 10): no output at position t depends on a token after t.
  Perturbation: each token s is changed alone and every output before s must stay put; gradient:
  ``∂ out[:, t] / ∂ e_s`` is exactly 0 for every s > t (and not 0 for s = t).
- ``padding_right``/``padding_left`` (Algorithm 4's Mask): the outputs at the real tokens do not
  change with the amount (1, 3) or the content (the pad id, random ids) of padding; left padding
  passes ``position_ids = cumsum(mask) − 1`` when the model takes position ids (as Hugging Face's
  ``generate`` does), and ``0 … ℓ−1`` to the unpadded reference. Gradient: real outputs have
  exactly zero gradient w.r.t. padding embeddings.
- ``batch``: a batch's outputs equal each example's alone (no statistic over the batch axis).
- ``cache`` (Algorithm 14 with a key-value cache, :mod:`formal_algorithms.practice.cache`):
  logits decoded through the model's cache (a prefill, a chunk of 2, then one token at a time)
  equal the full forward's at every position; generation with and without the cache gives the
  same tokens, greedy and sampled under a seed.
- ``batched_generation``: greedy generation of a left-padded batch equals each prompt alone.
- ``permutation`` (§5, a transformer without positions is permutation-equivariant): for an
  encoder declared without positions, permuting the tokens permutes the outputs; for an
  encoder-decoder, reordering the context leaves the decoder's outputs unchanged.
- ``distributions``: every output is finite, at real and padding positions (a fully masked
  attention row must not give NaN), and probabilities are columns in [0, 1] summing to 1
  (log-probabilities: ``logsumexp = 0``).
- ``determinism``: two forward passes agree exactly; two sampled generations under one seed agree.
- ``attention_implementations``, ``eos``, ``label_shift``, ``bfloat16``: what Hugging Face's own
  model tests check (:mod:`.framework_checks`): eager and SDPA attention agree; generation stops at
  eos; the loss from labels is the paper's, shifted as the model's kind needs; bfloat16 cached
  decoding within a stated drift. Models whose adapter has no such hook skip them.

Tolerance: outputs are compared to ``atol · max |reference|`` (relative to the largest output;
default ``atol = 1e-4``: float32 models differ by ~1e-7 relative between batch shapes, and the bugs
above move logits by 1e-3 to 1 relative).
Gradient checks ask for exact zeros (an attention weight of ``exp(−huge) = 0`` has gradient 0),
except under finite differences, whose threshold is ``1e-7 · max influence``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from ..paper.checks import fail
from .adapters import NotSupported, TokenModel
from .arguments import RULES, check_model, check_tolerance
from .decoding_checks import (
    check_batched_generation,
    check_cache,
    check_determinism,
    check_distributions,
)
from .framework_checks import (
    check_attention_implementations,
    check_bfloat16,
    check_eos,
    check_label_shift,
)
from .probing import (
    INVARIANTS,
    ConformanceViolation,
    NotApplicable,
    check_same_forward,
    probe_length,
    random_context,
    random_tokens,
    seeded_rng,
    violation,
)
from .sequence_checks import (
    check_batch,
    check_bidirectionality,
    check_causality,
    check_padding,
    check_permutation,
)

__all__ = [
    "CHECKS",
    "INVARIANTS",
    "CheckResult",
    "ConformanceReport",
    "ConformanceViolation",
    "NotApplicable",
    "check_attention_implementations",
    "check_batch",
    "check_bfloat16",
    "check_bidirectionality",
    "check_batched_generation",
    "check_cache",
    "check_causality",
    "check_determinism",
    "check_distributions",
    "check_eos",
    "check_label_shift",
    "check_padding",
    "check_permutation",
    "probe_lengths",
    "run_battery",
]

# ============================================================================= the preconditions


def _unpadded_outputs(model, seed, length):
    rng = seeded_rng(seed)
    ell = probe_length(model, length)
    x, z = random_tokens(model, rng, (2, ell)), random_context(model, rng, 2, ell)
    return model.logits(x, z=z), model.logits(x, z=z)


def precondition_finite(first) -> str:
    """The outputs on an ordinary unpadded input are finite; else no difference is meaningful."""
    bad = ~np.isfinite(first)  # (B, N_V, ℓ)
    if bad.any():
        b, v, p = np.argwhere(bad)[0]
        rows = np.unique(np.argwhere(bad)[:, 1])
        violation(
            "finite",
            f"the output at position {p} of an unpadded input is not finite ({first[b, v, p]} at "
            f"vocabulary entry {v}; {rows.size} of {first.shape[1]} entries affected): NaN or inf "
            "in the parameters?",
            p,
            float("inf"),
        )
    return f"{first.shape[0]} unpadded inputs of {first.shape[2]} tokens, every output finite"


def precondition_deterministic(first, second) -> str:
    """Two forward passes on one input agree exactly (no dropout, no unseeded randomness)."""
    check_same_forward("deterministic", first, second)
    return "two forward passes on one input identical"


PRECONDITIONS = {
    "finite": "outputs on an ordinary unpadded input are finite",
    "deterministic": "two forward passes on one input agree exactly",
}

# The checks each precondition's failure makes meaningless (they compare outputs).
_COMPARING = (
    "causality",
    "padding_right",
    "padding_left",
    "batch",
    "cache",
    "batched_generation",
    "permutation",
    "bidirectionality",
    "attention_implementations",
    "eos",
    "label_shift",
    "bfloat16",
)
INVALIDATES = {"finite": (*_COMPARING, "determinism"), "deterministic": _COMPARING}


# ================================================================================== the battery

CHECKS = {
    "causality": check_causality,
    "bidirectionality": check_bidirectionality,
    "padding_right": lambda model, **kw: check_padding(model, "right", **kw),
    "padding_left": lambda model, **kw: check_padding(model, "left", **kw),
    "batch": check_batch,
    "cache": check_cache,
    "batched_generation": check_batched_generation,
    "permutation": check_permutation,
    "distributions": check_distributions,
    "determinism": check_determinism,
    "attention_implementations": check_attention_implementations,
    "eos": check_eos,
    "label_shift": check_label_shift,
    "bfloat16": check_bfloat16,
}
EXACT = ("determinism", "eos")  # the checks that compare exactly (no atol)

STATUSES = ("pass", "fail", "skip", "error", "not meaningful", "not run")
_LABELS = {
    "pass": "PASS",
    "fail": "FAIL",
    "skip": "SKIP",
    "error": "ERROR",
    "not meaningful": "N/M",
    "not run": "N/R",
}


@dataclass
class CheckResult:
    """One check's outcome: ``status`` is ``"pass"``, ``"fail"`` (an invariant violated),
    ``"skip"`` (not applicable; ``message`` says why), ``"error"`` (the check could not run),
    ``"not meaningful"`` (a precondition failed; ``message`` says which) or ``"not run"`` (at a
    probe length the model raises on, its adapter declaring no ``max_length``: perhaps longer
    than the model takes; ``message`` says so, after the lengths that passed)."""

    check: str
    invariant: str
    status: str
    message: str
    position: int | None = None
    size: float | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class ConformanceReport:
    """What :func:`run_battery` found. ``verdict`` is ``"conforms"`` (the preconditions hold, at
    least one check passed, none failed, errored or was made meaningless), ``"violates"`` (a
    precondition or a check failed, or a check errored) or ``"unverified"`` (nothing failed, but no
    check passed: every one skipped, or none asked; or a check was not run at a length the model
    raised on); ``ok`` is ``verdict == "conforms"``."""

    model: str
    kind: str
    framework: str
    results: list[CheckResult] = field(default_factory=list)
    preconditions: list[CheckResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        everything = self.preconditions + self.results
        if any(r.status in ("fail", "error", "not meaningful") for r in everything):
            return "violates"
        if not any(r.status == "pass" for r in self.results):
            return "unverified"
        if any(r.status == "not run" for r in self.results):
            return "unverified"
        return "conforms"

    @property
    def ok(self) -> bool:
        return self.verdict == "conforms"

    def failures(self) -> list[CheckResult]:
        return [r for r in self.preconditions + self.results if r.status in ("fail", "error")]

    def __getitem__(self, check: str) -> CheckResult:
        for r in self.preconditions + self.results:
            if r.check == check:
                return r
        raise KeyError(check)

    def to_dict(self) -> dict:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        if not counts["not run"]:  # only a model of undeclared max_length has such rows
            del counts["not run"]
        size = lambda v: v if v is None or np.isfinite(v) else str(v)  # noqa: E731
        row = lambda r: {**asdict(r), "size": size(r.size), "seconds": round(r.seconds, 3)}  # noqa: E731
        return {
            "model": self.model,
            "kind": self.kind,
            "framework": self.framework,
            "ok": self.ok,
            "verdict": self.verdict,
            "counts": counts,
            "preconditions": [row(r) for r in self.preconditions],
            "results": [row(r) for r in self.results],
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kw)

    def __str__(self) -> str:
        width = max(len(c) for c in [*CHECKS, *PRECONDITIONS])
        lines = [f"{self.model} ({self.kind}, {self.framework})"]
        for r in self.preconditions + self.results:
            lines.append(f"  {_LABELS[r.status]:5} {r.check:{width}}  {r.message}")
            lines.extend(f"  {'':5} {'':{width}}  (warning) {w}" for w in r.warnings)
        c = {"not run": 0, **self.to_dict()["counts"]}
        verdict = {
            "conforms": "conforms",
            "violates": "VIOLATES the invariants above",
            "unverified": "NOT VERIFIED: no check passed (every one skipped or none asked)",
        }[self.verdict]
        if self.verdict == "unverified" and c["not run"]:
            verdict = (
                "NOT VERIFIED at every length: the model raised on the inputs of the N/R rows; "
                "if they are longer than it takes, give its adapter max_length="
            )
        if any(r.status == "fail" for r in self.preconditions):
            verdict = "PRECONDITION FAILED (first lines): the checks marked N/M are not meaningful"
        lines.append(
            f"{c['pass']} passed, {c['fail']} failed, {c['skip']} skipped, "
            f"{c['error']} errors, {c['not meaningful']} not meaningful"
            + (f", {c['not run']} not run" if c["not run"] else "")
            + f": {verdict}"
        )
        return "\n".join(lines)


def _check_battery_arguments(model, checks, seed, length, atol, progress=None):
    where = "run_battery"
    check_model(where, "model", model)
    if isinstance(checks, str):
        fail(
            where, "checks", f"must be a list of check names, got the string {checks!r}", TypeError
        )
    names = list(CHECKS) if checks is None else list(checks)
    if not names:
        fail(where, "checks", f"is empty; choose from {list(CHECKS)}")
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        fail(where, "checks", f"{unknown} unknown; choose from {list(CHECKS)}")
    check_tolerance(where, "atol", atol, positive=True)
    RULES["length"](where, "length", length)
    RULES["seed"](where, "seed", seed)
    if progress is not None and not callable(progress):
        fail(
            where, "progress", f"must be a function of a check's name, got {progress!r}", TypeError
        )
    return names


def _check_lengths(lengths) -> list[int]:
    """``run_battery``'s ``lengths``: a non-empty list of probe lengths, each as ``length``."""
    if isinstance(lengths, (str, bytes)) or not hasattr(lengths, "__iter__"):
        fail("run_battery", "lengths", f"must be a list of lengths, got {lengths!r}", TypeError)
    lengths = list(lengths)
    if not lengths:
        fail("run_battery", "lengths", "is empty; give at least one length (each ≥ 2)")
    for n in lengths:
        RULES["length"]("run_battery", "lengths", n)
    return lengths


LONG = 20  # the long probe: beyond 16 tokens, where bugs of blocked or bucketed code appear
BOUNDARY_LIMIT = 64  # declared boundaries (maximum positions) probed up to this many tokens


def probe_lengths(model: TokenModel, length: int = 8) -> list[int]:
    """The lengths each check runs at: ``length`` (the short probe), :data:`LONG`, one token past
    the model's sliding window when it declares one, and its maximum length when that is at most
    :data:`BOUNDARY_LIMIT`; all capped at the maximum length."""
    check_model("probe_lengths", "model", model)
    RULES["length"]("probe_lengths", "length", length)
    wanted = {length, LONG}
    if model.sliding_window is not None:
        wanted.add(model.sliding_window + 1)
    if model.max_length is not None:
        if model.max_length <= BOUNDARY_LIMIT:
            wanted.add(model.max_length)
        wanted = {min(n, model.max_length) for n in wanted}
    return sorted(wanted)


def run_battery(
    model: TokenModel,
    *,
    checks=None,
    seed: int = 0,
    length: int = 8,
    atol: float = 1e-4,
    progress=None,
    lengths=None,
) -> ConformanceReport:
    """Check the preconditions (``finite``, ``deterministic``), then run ``checks`` (names from
    :data:`CHECKS`; default all) on ``model``, and return the report.

    A failed precondition is reported first, and the checks it invalidates
    (:data:`INVALIDATES`) are not run: they are ``"not meaningful"`` with the reason. A check that
    raises anything but a violation or :class:`NotApplicable` is reported as ``"error"`` with the
    exception's message; ``progress(name)`` is called before each check.

    Each check runs at every length of ``lengths`` (default :func:`probe_lengths`: ``length``,
    one beyond 16 tokens, the declared boundaries) and stops at the first that does not pass; its
    message begins with that length (``"ℓ = 20: …"``). The preconditions run at ``length``.
    A ``length`` or ``lengths`` beyond the model's ``max_length`` is refused (not cut); when the
    adapter declares no ``max_length``, one the model raises on (while it takes 2 tokens) is
    refused too, and a check that errors at a probe length where a plain input of that length
    (or of the up to :data:`ADDED` tokens more a check feeds) raises is ``"not run"``, not an
    error of the model: the verdict is then NOT VERIFIED, and the message suggests
    ``max_length=``."""
    names = _check_battery_arguments(model, checks, seed, length, atol, progress)
    asked = [] if lengths is None else _check_lengths(lengths)
    lengths = asked or probe_lengths(model, length)
    _check_lengths_taken(model, seed, [("length", length)] + [("lengths", n) for n in asked])
    report = ConformanceReport(model.name, model.kind, model.framework)
    invalid = _run_preconditions(model, report, seed, length, progress)
    ran = report["finite"].status == "pass"  # the model took ``length`` tokens
    for name in names:
        if name in invalid:
            report.results.append(
                CheckResult(name, INVARIANTS[name], "not meaningful", invalid[name])
            )
            continue
        kwargs = {"seed": seed} if name in EXACT else {"seed": seed, "atol": atol}
        report.results.append(_at_lengths(name, model, kwargs, lengths, progress, ran))
    return report


#: the most tokens a check of the battery feeds beyond its probe length ℓ (``eos`` generates 6
#: after a prompt of ℓ, the padding checks add 3)
ADDED = 6


def _raises_at(model, n, seed):
    """The exception a plain forward pass of one ordinary input of ``n`` tokens (and a context
    of ``n``, for an encoder-decoder) raises, or None."""
    rng = seeded_rng(seed)
    try:
        model.logits(random_tokens(model, rng, (1, n)), z=random_context(model, rng, 1, n))
    except Exception as error:  # noqa: BLE001 (what the model raises is the answer)
        return error
    return None


def _first_line(error) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def _check_lengths_taken(model, seed, asked) -> None:
    """Each ``(argument, n)`` asked for is a length the model takes: at most its ``max_length``;
    when that is not declared, a length a plain forward pass raises on while it takes 2 tokens
    is refused (a model that raises at every length is left to the preconditions' report)."""
    for argument, n in asked:  # the probes of probe_lengths are capped; a length asked for is not
        if model.max_length is not None and n > model.max_length:
            fail(
                "run_battery",
                argument,
                f"= {n} is more than the {model.max_length} positions of {model.name} "
                "(its max_length)",
            )
    if model.max_length is not None:
        return
    for argument, n in asked:
        error = _raises_at(model, n, seed)
        if error is None:
            continue
        if _raises_at(model, 2, seed) is not None:
            return
        fail(
            "run_battery",
            argument,
            f"= {n}: {model.name} raises on an input of {n} tokens ({_first_line(error)}) but "
            "takes 2: give a length it takes, or give its adapter max_length= (the probes then "
            "stay within it)",
        )


def _not_run(model, n, seed, result) -> str | None:
    """Why a check that errored at probe length ``n`` was perhaps given more tokens than the
    model takes (its ``max_length`` not declared): a plain input of ``n`` (or ``n +``
    :data:`ADDED`) tokens raises too; None when both run (the error is the model's)."""
    if model.max_length is not None:
        return None
    for m in (n, n + ADDED):
        error = _raises_at(model, m, seed)
        if error is not None:
            what = (
                f"a plain input of {n} tokens raises too"
                if m == n
                else f"a plain input of {n} tokens runs, one of {m} (the up to {ADDED} tokens "
                "of padding or generation a check adds) raises"
            )
            return (
                f"not run: {result.message}; {what} and the adapter declares no max_length: if "
                f"that is more than {model.name} takes, give its adapter max_length= (the probes "
                "then stay within it); if not, this is the model's error"
            )
    return None


def _at_lengths(name, model, kwargs, lengths, progress, ran=True) -> CheckResult:
    """``name`` at each length until one does not pass; its message begins with the length.
    ``ran``: the model took the preconditions' length (an error at a longer length may then be
    the length's: :func:`_not_run`)."""
    seconds, seen, details = 0.0, [], []
    for n in lengths:
        result = _timed(
            name, lambda n=n: CHECKS[name](model, length=n, **kwargs), INVARIANTS[name], progress
        )
        seconds, seen = seconds + result.seconds, seen + result.warnings
        reason = (
            _not_run(model, n, kwargs["seed"], result) if ran and result.status == "error" else None
        )
        if reason is not None:
            result.status, result.message = "not run", "; ".join([*details, f"ℓ = {n}: {reason}"])
            break
        if result.status != "pass":
            if result.status != "skip" or details:  # a skip applies to every length
                result.message = f"ℓ = {n}: {result.message}"
            break
        details.append(f"ℓ = {n}: {result.message}")
    else:
        result.message = "; ".join(details) if len(details) > 1 else result.message
    result.seconds, result.warnings = seconds, sorted(set(seen))
    return result


def _run_preconditions(model, report, seed, length, progress):
    """Run the preconditions into ``report``; the checks they invalidate, with the reason."""
    outputs = {}

    def finite():
        outputs["pair"] = _unpadded_outputs(model, seed, length)
        return precondition_finite(outputs["pair"][0])

    def deterministic():
        if "pair" not in outputs:
            raise NotApplicable("the forward pass could not run (see finite)")
        return precondition_deterministic(*outputs["pair"])

    invalid = {}
    for name, run in (("finite", finite), ("deterministic", deterministic)):
        if any(r.status == "fail" and r.check == "finite" for r in report.preconditions):
            reason = "not checked: the outputs are not finite"
            report.preconditions.append(CheckResult(name, PRECONDITIONS[name], "skip", reason))
            continue
        result = _timed(name, run, PRECONDITIONS[name], progress)
        report.preconditions.append(result)
        if result.status == "fail":
            for check in INVALIDATES[name]:
                invalid.setdefault(
                    check,
                    f"not meaningful: precondition {name!r} failed "
                    f"({PRECONDITIONS[name]} does not hold)",
                )
    return invalid


def _timed(name, run, invariant, progress) -> CheckResult:
    if progress is not None:
        progress(name)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # the model's warnings go into the report
        result = _run_one(name, run, invariant)
    result.seconds = time.perf_counter() - start
    result.warnings = sorted({f"{w.category.__name__}: {w.message}" for w in seen})
    return result


def _run_one(name, run, invariant) -> CheckResult:
    try:
        return CheckResult(name, invariant, "pass", run())
    except ConformanceViolation as v:
        return CheckResult(name, invariant, "fail", str(v).split(": ", 1)[1], v.position, v.size)
    except (NotApplicable, NotSupported) as reason:
        return CheckResult(name, invariant, "skip", str(reason))
    except Exception as error:  # noqa: BLE001 (the report names it; the battery goes on)
        return CheckResult(name, invariant, "error", f"{type(error).__name__}: {error}")
