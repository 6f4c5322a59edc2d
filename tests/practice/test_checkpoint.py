"""Checkpoints (safetensors, no pickle): bit-exact round trips, atomic writes that survive an
interrupted save, and clear errors that load nothing partially."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms.paper.validation import hyperparameters
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint

key = jax.random.key(0)
HP = dict(N_V=9, ell_max=6, H=2, d_e=4, d_mlp=8)
THETAS = {
    "DTransformer": fa.init_d_transformer(key, L=2, **HP),
    "DTransformer-tied-f64": fa.init_d_transformer(key, L=1, tied=True, dtype=jnp.float64, **HP),
    "ETransformer": fa.init_e_transformer(key, L=1, d_f=3, **HP),
    "EDTransformer": fa.init_ed_transformer(key, L_enc=1, L_dec=2, **HP),
}


def same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        for x, y in zip(la, lb, strict=True)
    )


@pytest.mark.parametrize("name", list(THETAS))
def test_round_trip_is_bit_exact(tmp_path, name):
    theta = THETAS[name]
    opt = optax.adamw(1e-3)
    state = opt.init(theta)
    _, state = opt.update(
        jax.tree_util.tree_map(jnp.ones_like, theta), state, theta
    )  # non-trivial moments
    tokenizer = {"type": "char", "chars": "ab c"}
    path = save_checkpoint(
        tmp_path / "ck.safetensors",
        theta,
        tokenizer=tokenizer,
        opt_state=state,
        extra={"step": 7},
        arrays={"key": np.asarray(jax.random.key_data(key))},
    )
    ck = load_checkpoint(path, opt_state_template=opt.init(theta))
    assert same(ck.theta, theta) and same(ck.opt_state, state)
    assert (
        ck.architecture == name.split("-")[0]
        and ck.tokenizer == tokenizer
        and ck.extra == {"step": 7}
    )
    np.testing.assert_array_equal(ck.arrays["key"], jax.random.key_data(key))
    assert ck.hyperparameters == fa.hyperparameters(theta)
    assert b"pickle" not in path.read_bytes()[:200]


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ck.safetensors", THETAS["DTransformer"])
    before = path.read_bytes()

    def crash(fd):
        raise KeyboardInterrupt  # the process dies after writing, before the rename

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, THETAS["DTransformer-tied-f64"])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors"]  # no temporary left
    assert same(load_checkpoint(path).theta, THETAS["DTransformer"])


def test_a_killed_saving_process_never_leaves_a_broken_checkpoint(tmp_path):
    """SIGKILL a process that keeps overwriting a large checkpoint: whenever it dies, the file
    on disk is a complete checkpoint (the old or the new one)."""
    path = tmp_path / "big.safetensors"
    script = textwrap.dedent(f"""
        import jax, sys
        import formal_algorithms as fa
        from formal_algorithms.practice.checkpoint import save_checkpoint
        theta = fa.init_d_transformer(jax.random.key(0), N_V=512, ell_max=64, L=2, H=4, d_e=256, d_mlp=1024)
        save_checkpoint({str(path)!r}, theta)
        print("saved", flush=True)
        for i in range(10**6):
            save_checkpoint({str(path)!r}, theta._replace(gamma=theta.gamma + i))
    """)
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(1.5)  # several saves in flight
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ck = load_checkpoint(path, architecture="DTransformer", d_e=256)
    assert ck.theta.W_e.shape == (256, 512)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "big.safetensors"]
    assert all(p.name.startswith(".big.safetensors.tmp-") for p in leftovers)


def test_truncated_corrupted_and_foreign_files_raise(tmp_path):
    path = save_checkpoint(tmp_path / "ck.safetensors", THETAS["DTransformer"])
    blob = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        load_checkpoint(truncated)
    corrupted = tmp_path / "corrupted.safetensors"
    corrupted.write_bytes(blob[:-3] + bytes([blob[-3] ^ 0xFF]) + blob[-2:])
    with pytest.raises(ValueError, match="is corrupted: its tensors and metadata do not match"):
        load_checkpoint(corrupted)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="truncated or not a safetensors file"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_mismatched_architecture_or_sizes_raise(tmp_path):
    path = save_checkpoint(tmp_path / "ck.safetensors", THETAS["DTransformer"])
    with pytest.raises(ValueError, match="holds a DTransformer, expected a EDTransformer"):
        load_checkpoint(path, architecture="EDTransformer")
    with pytest.raises(
        ValueError, match=r"holds a DTransformer with d_e = 4 \(expected 8\), L = 2 \(expected 3\)"
    ):
        load_checkpoint(path, d_e=8, L=3)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="has no optimizer state"):
        load_checkpoint(path, opt_state_template=optax.adam(1e-3).init(THETAS["DTransformer"]))
    path2 = save_checkpoint(
        tmp_path / "ck2.safetensors",
        THETAS["DTransformer"],
        opt_state=opt.init(THETAS["DTransformer"]),
    )
    with pytest.raises(
        ValueError, match="argument 'opt_state_template' does not fit the optimizer state in '"
    ):
        load_checkpoint(path2, opt_state_template=optax.adam(1e-3).init(THETAS["DTransformer"]))
    with pytest.raises(TypeError, match="argument 'theta' must be θ of Algorithm 8, 9 or 10"):
        save_checkpoint(tmp_path / "x.safetensors", {"W_e": jnp.ones(3)})
    assert sorted(p.name for p in pathlib.Path(tmp_path).iterdir()) == [
        "ck.safetensors",
        "ck2.safetensors",
    ]


def test_the_digest_covers_the_metadata_and_every_byte_is_checked(tmp_path):
    """Issue 29: a flipped bit in the stored tokenizer or ε loaded silently when the SHA-256
    covered the tensors only. Now a change to any byte of the file is refused, naming it."""
    from formal_algorithms.paper.tokenization import CharTokenizer

    tokenizer = CharTokenizer(tuple("helo"))
    path = save_checkpoint(
        tmp_path / "ck.safetensors",
        THETAS["DTransformer"],
        tokenizer=tokenizer.to_dict(),
        extra={"eps": 1e-05},
    )
    blob = path.read_bytes()
    for old, new in ((b"helo", b"hglo"), (b"1e-05", b"1e-04")):  # the tokenizer, ε
        assert blob.count(old) >= 1
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(blob.replace(old, new, 1))
        with pytest.raises(ValueError, match=r"bad\.safetensors' is corrupted"):
            load_checkpoint(bad)
    rng = np.random.default_rng(29)
    for position in sorted({*rng.integers(0, len(blob), 150).tolist(), 0, 8, len(blob) - 1}):
        flipped = bytearray(blob)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(flipped))
        with pytest.raises((ValueError, UnicodeDecodeError)) as caught:
            load_checkpoint(bad)
        assert "bad.safetensors" in str(caught.value), (position, caught.value)


def test_identical_runs_write_identical_bytes_and_format_1_is_still_read(tmp_path):
    import hashlib

    from safetensors.numpy import save

    from formal_algorithms.practice import checkpoint

    theta = THETAS["DTransformer"]
    extra = {"b": [1, 2], "a": {"y": 1, "x": 2}}
    a = save_checkpoint(tmp_path / "a.safetensors", theta, extra=extra)
    b = save_checkpoint(tmp_path / "b.safetensors", theta, extra=dict(reversed(extra.items())))
    assert a.read_bytes() == b.read_bytes()
    # a file of the previous format: safetensors' writer, the digest over the tensors only
    tensors = checkpoint._flatten("theta", theta)
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(f"{key}|{tensors[key].dtype.str}|{tensors[key].shape}|".encode())
        h.update(tensors[key].tobytes())
    metadata = {"format": "formal_algorithms.checkpoint/1", "architecture": "DTransformer",
                "hyperparameters": json.dumps(hyperparameters(theta)), "tokenizer": "null",
                "has_opt_state": "false", "extra": "{}", "sha256": h.hexdigest()}  # fmt: skip
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors, metadata=metadata))
    loaded = load_checkpoint(old)
    assert all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(loaded.theta), jax.tree.leaves(theta), strict=True)
    )
