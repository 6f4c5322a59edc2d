"""``formal-algorithms finetune``: pretrain, then fine-tune (Howard & Ruder 2018, ULMFiT) at the
scale of a laptop, on a classification task built from text every Python install carries.

The task: which of a few standard-library packages (default asyncio, email, decimal, unittest) a
passage of their docstrings comes from. The docstrings are read from the installed standard
library's source with :mod:`ast` (no import, nothing downloaded); each package's docstrings, with
whitespace collapsed and joined by spaces, are cut into consecutive passages of ``--passage``
characters. ``--test-per-class`` passages per class (drawn once, with a fixed seed) are held out
for evaluation and never seen in pretraining; the rest are the labelled pool.

The experiment:

1. Pretrain a DTransformer (Algorithm 10) as a language model (Algorithm 13's loss, minibatch
   AdamW; ``--body e``: an ETransformer, Algorithm 9, with Algorithm 12's loss) on *unlabelled* text: every passage not held out, plus the docstrings of
   ``--unlabelled`` other packages.
2. For each number of labels n per class (``--labels``) and each seed, draw n labelled passages
   per class from the pool, put a fresh classification head (on the mean of the output columns,
   or with ``--pooling token`` on the last token; :mod:`..variants.classification`) of (a) the pretrained body and (b) a freshly initialised
   body, and train both the same way (the same examples, steps, learning rate and head init).
3. Report held-out accuracy (mean and spread over seeds) in a table, a JSON file and a plot.
"""

from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sysconfig
import time

import jax
import numpy as np

from ..paper.parameters import init_d_transformer, init_e_transformer
from .common import CHECKPOINT_NAME, PROG, duration, say
from .options import integer, positive
from .runs import Run, prepare_out_dir, train_run

CLASSES = ("asyncio", "email", "_pydecimal", "unittest")
UNLABELLED = ("importlib", "logging", "xml", "http", "json", "typing", "inspect", "statistics")


def package_docstrings(name: str, stdlib: pathlib.Path | None = None) -> str:
    """The docstrings (module, class, function) of an installed standard-library package or
    module, in file and source order, whitespace collapsed, joined by single spaces. Tests inside
    the package (``*/test*/``) are skipped."""
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"]) if stdlib is None else stdlib
    root = stdlib / name
    files = sorted(root.rglob("*.py")) if root.is_dir() else [stdlib / f"{name}.py"]
    if not files or not files[0].exists():
        raise ValueError(f"--classes/--unlabelled: no standard-library package or module {name!r}")
    texts = []
    for path in files:
        if any(part.startswith("test") for part in path.relative_to(stdlib).parts[1:-1]):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8-sig"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(" ".join(doc.split()))
    return " ".join(texts)


def passages(text: str, length: int) -> list[str]:
    """Consecutive, non-overlapping passages of exactly ``length`` characters (the rest dropped)."""
    return [text[i : i + length] for i in range(0, len(text) - length + 1, length)]


class Task:
    """The data of one run: tokenizer, held-out test pairs, labelled pools, unlabelled sequences."""

    def __init__(self, classes, unlabelled, passage: int, test_per_class: int, need: int):
        from ..paper.tokenization import CharTokenizer

        class_text = {c: package_docstrings(c) for c in classes}
        extra = [package_docstrings(u) for u in unlabelled]
        self.tokenizer = CharTokenizer.from_text("".join([*class_text.values(), *extra, " "]))
        rng = np.random.default_rng(0)  # the split is fixed: the seeds vary the labelled draws
        self.classes, self.test, self.pools, unlabelled_text = list(classes), [], [], []
        for c, name in enumerate(classes):
            ps = passages(class_text[name], passage)
            if len(ps) < test_per_class + need:
                raise ValueError(
                    f"--classes: {name!r} has {len(ps)} passages of {passage} characters; "
                    f"{test_per_class} held out + {need} labelled need more (lower --passage, "
                    "--test-per-class or --labels)"
                )
            order = rng.permutation(len(ps))
            self.test += [(self.encode(ps[i]), c) for i in order[:test_per_class]]
            pool = [ps[i] for i in order[test_per_class:]]
            self.pools.append([self.encode(p) for p in pool])
            unlabelled_text += pool
        for text in extra:
            unlabelled_text += passages(text, passage)
        self.unlabelled = [self.encode(p) for p in unlabelled_text]
        self.ell_max = passage + 2

    def encode(self, passage: str):
        return self.tokenizer.encode(passage, bos=True, eos=True)  # bos, characters…, eos

    def labelled(self, n: int, seed: int):
        """n passages per class from the pools, the draw of ``seed``."""
        rng = np.random.default_rng(1000 + seed)
        return [
            (pool[i], c)
            for c, pool in enumerate(self.pools)
            for i in rng.choice(len(pool), n, replace=False)
        ]


def _check_unlabelled(classes, unlabelled) -> None:
    both = [name for name in unlabelled if name in classes]
    if both:
        raise ValueError(
            f"--unlabelled {both[0]!r} is also one of --classes: its held-out passages would be "
            "pretraining text (a class's other passages are unlabelled text already)"
        )


def run(args) -> int:
    labels, classes, unlabelled = args.labels, args.classes, args.unlabelled
    _check_unlabelled(classes, unlabelled)
    started = time.perf_counter()
    out = prepare_out_dir(pathlib.Path(args.out), force=args.force)
    task = Task(classes, unlabelled, args.passage, args.test_per_class, max(labels))
    say(
        f"task        which of {', '.join(classes)} a {args.passage}-character passage of "
        f"docstrings comes from ({len(classes)} classes, chance {1 / len(classes):.0%}); "
        f"{len(task.test)} held-out passages; labelled pools "
        f"{', '.join(str(len(p)) for p in task.pools)}"
    )
    hp = dict(
        N_V=task.tokenizer.N_V,
        ell_max=task.ell_max,
        L=args.layers,
        H=args.heads,
        d_e=args.d_e,
        d_mlp=args.d_mlp or 4 * args.d_e,
    )
    key = jax.random.key(args.seed)
    keys = dict(
        zip(("init", "pre", "scratch", "head", "fine"), jax.random.split(key, 5), strict=True),
        eval=jax.random.fold_in(key, 1),
    )
    init = init_d_transformer if args.body == "d" else init_e_transformer
    pretrained, fitted = pretrain(args, task, out, init(keys["init"], **hp), keys)
    tail = max(1, len(fitted.history) // 10)  # the last tenth of the steps
    results = finetune_table(args, task, pretrained, labels, keys, lambda k: init(k, **hp))
    summary = dict(
        task=dict(
            classes=classes,
            passage=args.passage,
            test_per_class=args.test_per_class,
            unlabelled=unlabelled,
            n_unlabelled=len(task.unlabelled),
        ),
        model=hp,
        pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps,
        batch_size=args.batch_size,
        body=args.body,
        pooling=args.pooling,
        lr=args.lr,
        finetune_lr=args.finetune_lr,
        seeds=args.seeds,
        pretrain_loss=[float(fitted.history[0]), float(np.mean(fitted.history[-tail:]))],
        pretrain_held_out_loss=fitted.evals[-1]["held_out_loss"],
        accuracy={k: {str(n): v for n, v in r.items()} for k, r in results.items()},
    )
    (out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot = _plot(
        results, labels, 1 / len(classes), out / "finetune.png", "13" if args.body == "d" else "12"
    )
    say(
        f"wrote       {out / 'results.json'}, {plot}, {out / CHECKPOINT_NAME} (the pretrained body)"
    )
    say(f"done in {duration(time.perf_counter() - started)}")
    return 0


def pretrain(args, task, out, theta, keys):
    """Step 1: Algorithm 13's (or 12's) loss on the unlabelled passages, as a run of :mod:`.runs`
    (its checkpoints in ``--out``), evaluated on the held-out passages' text (their labels unused)."""
    from ..practice.trainer import evaluate

    model, loss_name, p_mask = (
        ("DTransformer (Algorithm 10)", "Algorithm 13's loss", None)
        if args.body == "d"
        else ("ETransformer (Algorithm 9)", "Algorithm 12's loss (p_mask 0.15)", 0.15)
    )
    say(
        f"pretrain    {model} L = {args.layers}, H = {args.heads}, d_e = "
        f"{args.d_e}: {loss_name} on {len(task.unlabelled)} unlabelled passages, "
        f"{args.pretrain_steps} AdamW steps"
    )
    run_args = argparse.Namespace(
        steps=args.pretrain_steps,
        lr=args.lr,
        warmup=100,
        weight_decay=0.1,
        batch_size=args.batch_size,
        eval_every=None,
        early_stop=None,
    )
    held = [x for x, _ in task.test]
    kw = {} if p_mask is None else {"p_mask": p_mask}
    evaluate_kw = {} if p_mask is None else {"key": keys["eval"], **kw}
    facts = dict(
        family=f"pretrained body of '{PROG} finetune'",
        activation="gelu",
        config=vars(run_args) | {"seed": args.seed},
        task=loss_name,
    )
    the_run = Run("finetune", out, facts, task.tokenizer.to_dict())
    t0 = time.perf_counter()
    fitted = train_run(
        the_run,
        theta,
        task.unlabelled,
        lambda theta: evaluate(theta, held, batch_size=args.batch_size, **evaluate_kw),
        keys["pre"],
        run_args,
        **kw,
    )
    tail = fitted.history[-max(1, len(fitted.history) // 10) :]
    say(
        f"            training loss {fitted.history[0]:.2f} -> {float(np.mean(tail)):.2f}, "
        f"held-out {fitted.evals[-1]['held_out_loss']:.2f} nats/character in "
        f"{duration(time.perf_counter() - t0)}"
    )
    return fitted.theta, fitted


def finetune_table(args, task, pretrained, labels, keys, fresh_body):
    """Step 2: the same fine-tuning recipe on the pretrained and on a fresh body, for each number
    of labels and seed; prints the table and returns the accuracies."""
    from ..practice.trainer import make_optimizer
    from ..variants.classification import c_evaluate, c_train, init_classifier

    optimizer = make_optimizer(
        args.finetune_lr,
        N_steps=args.finetune_steps,
        warmup_steps=min(10, args.finetune_steps // 2),
        weight_decay=0.01,
    )
    where = "the mean of the columns"
    if args.pooling == "token":
        where = "the last token" if args.body == "d" else "the first (bos) token"
    say(
        f"fine-tune   head on {where}, {args.finetune_steps} AdamW steps of "
        f"{args.batch_size} (lr {args.finetune_lr}), {args.seeds} seeds per cell"
    )
    say(f"{'labels/class':>12} | {'pretrained':>16} | {'from scratch':>16}")
    results = {"pretrained": {}, "scratch": {}}
    for n in labels:
        for name in results:
            accs = []
            for seed in range(args.seeds):
                body = (
                    pretrained
                    if name == "pretrained"
                    else fresh_body(jax.random.fold_in(keys["scratch"], seed))
                )
                params = init_classifier(
                    jax.random.fold_in(keys["head"], seed), body, len(task.classes)
                )
                params, _ = c_train(
                    params,
                    task.labelled(n, seed),
                    jax.random.fold_in(keys["fine"], seed),
                    optimizer=optimizer,
                    N_steps=args.finetune_steps,
                    batch_size=args.batch_size,
                    pooling=args.pooling,
                )
                accs.append(
                    c_evaluate(params, task.test, batch_size=args.batch_size, pooling=args.pooling)[
                        1
                    ]
                )
            results[name][n] = accs
        row = {k: f"{np.mean(r[n]):.1%} ± {np.std(r[n]):.1%}" for k, r in results.items()}
        say(f"{n:>12} | {row['pretrained']:>16} | {row['scratch']:>16}")
    return results


def names(minimum: int):
    """The parser type of comma-separated package names, each once, at least ``minimum``."""

    def parse(text: str) -> list[str]:
        names = [c.strip() for c in text.split(",") if c.strip()]
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(
                f"must name each package once; {', '.join(map(repr, repeated))} is repeated"
            )
        if len(names) < minimum:
            raise argparse.ArgumentTypeError(f"must name at least {minimum} packages, got {text!r}")
        return names

    return parse


def _plot(results, labels, chance, path, algorithm="13"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for name, style in (("pretrained", "o-"), ("scratch", "s--")):
        accs = np.array([results[name][n] for n in labels])
        mean = accs.mean(axis=1)
        ax.errorbar(
            labels,
            mean,
            yerr=accs.std(axis=1),
            fmt=style,
            capsize=3,
            label=f"pretrained (Alg. {algorithm}), then fine-tuned"
            if name == "pretrained"
            else "trained from scratch",
        )
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(labels, [str(n) for n in labels])
    ax.set_xlabel("labelled passages per class")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Pretrain, then fine-tune (ULMFiT), at small scale", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def label_counts(text: str) -> list[int]:
    """The parser type of ``--labels``: comma-separated integers >= 1, sorted, each once."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 1, got {text!r}")
    return sorted(set(values))


def register(sub) -> None:
    """Add the ``finetune`` command to the parser's subcommands."""
    p = sub.add_parser(
        "finetune",
        help="pretrain a DTransformer as a language model, then fine-tune it to classify",
        description="ULMFiT at small scale: pretrain a DTransformer (Algorithms 10, 13) on "
        "unlabelled standard-library docstrings, then fine-tune it with a classification head to "
        "tell which package a passage comes from, next to the same model trained from scratch, "
        "for several numbers of labels per class and seeds. Writes results.json and a plot.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default=str(pathlib.Path("runs") / "finetune"),
        help="output directory (default %(default)s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the run in --out (default: a new directory --out-2, -3, ...)",
    )
    _task_options(p.add_argument_group("the task"))
    _training_options(p.add_argument_group("the model and its training"))
    p.set_defaults(run=run)


def _task_options(g) -> None:
    """The classification task and its data."""
    g.add_argument(
        "--classes",
        type=names(2),
        default=",".join(CLASSES),
        help="standard-library packages, one class each (default %(default)s)",
    )
    g.add_argument(
        "--unlabelled",
        type=names(0),
        default=",".join(UNLABELLED),
        help="further packages whose docstrings are unlabelled pretraining text "
        "(default %(default)s)",
    )
    g.add_argument(
        "--passage",
        type=integer(1),
        default=94,
        help="characters per passage (default %(default)s)",
    )
    g.add_argument(
        "--test-per-class",
        type=integer(1),
        default=100,
        help="held-out passages per class (default %(default)s)",
    )
    g.add_argument(
        "--labels",
        type=label_counts,
        default="10,30,100,300",
        help="labelled passages per class, comma-separated (default %(default)s)",
    )
    g.add_argument(
        "--seeds", type=integer(1), default=3, help="seeds per cell (default %(default)s)"
    )


def _training_options(g) -> None:
    """The body, its pretraining and the fine-tuning."""
    g.add_argument(
        "--pretrain-steps",
        type=integer(1),
        default=1000,
        help="language-model steps (default %(default)s)",
    )
    g.add_argument(
        "--finetune-steps",
        type=integer(1),
        default=100,
        help="classifier steps per run (default %(default)s)",
    )
    g.add_argument(
        "--batch-size", type=integer(1), default=32, help="sequences per step (default %(default)s)"
    )
    g.add_argument(
        "--lr",
        type=positive,
        default=3e-3,
        help="pretraining peak learning rate (default %(default)s)",
    )
    g.add_argument(
        "--finetune-lr",
        type=positive,
        default=1e-3,
        help="fine-tuning peak learning rate (default %(default)s)",
    )
    g.add_argument(
        "--d-e", type=integer(1), default=64, help="embedding width d_e (default %(default)s)"
    )
    g.add_argument("--layers", type=integer(1), default=2, help="layers L (default %(default)s)")
    g.add_argument("--heads", type=integer(1), default=4, help="heads H (default %(default)s)")
    g.add_argument("--d-mlp", type=integer(1), default=None, help="MLP width d_mlp (default 4 d_e)")
    g.add_argument(
        "--body",
        choices=("d", "e"),
        default="d",
        help="d: DTransformer pretrained with Algorithm 13 (GPT, ULMFiT); e: "
        "ETransformer pretrained with Algorithm 12 (BERT) (default %(default)s)",
    )
    g.add_argument(
        "--pooling",
        choices=("token", "mean"),
        default="mean",
        help="the head reads one token's column (Algorithm 10: the last; 9: bos) or "
        "the mean of all columns (default %(default)s)",
    )
    g.add_argument("--seed", type=integer(0), default=0, help="random seed (default %(default)s)")
