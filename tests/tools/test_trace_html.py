"""The trace's page in a real browser, and ``formal-algorithms trace``.

The page of a traced Algorithm 10 is loaded from a file:// URL in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium): every algorithm section and every
pseudocode line of the trace is there, every record is shown under its line and loop indices,
every matrix is a drawn heatmap whose pixels decode back to the traced values, nothing is fetched
and no script fails. The command's table, its filters, ``--html`` and its one-line errors are
checked in-process (:func:`formal_algorithms.cli.main`).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from formal_algorithms import cli
from formal_algorithms.cli.trace import ALPHABET, TINY
from formal_algorithms.paper import pseudocode
from formal_algorithms.paper.architectures import d_transformer
from formal_algorithms.paper.parameters import init_d_transformer
from formal_algorithms.paper.tokenization import CharTokenizer
from formal_algorithms.practice.checkpoint import save_checkpoint
from formal_algorithms.trace import trace
from formal_algorithms.trace.html import write_html

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-background-networking "
    "--disable-component-update --disable-sync --no-first-run --window-size=1280,1000"
).split()
PROMPT = "hello"  # 6 tokens with bos, as every trace of this file: the eager ops compile once


def tiny_model(N_V):
    return init_d_transformer(jax.random.key(0), N_V=N_V, ell_max=16, **TINY)


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """A traced Algorithm 10 (the command's random model's sizes) and its page."""
    tokenizer = CharTokenizer.from_text(ALPHABET)
    theta = tiny_model(tokenizer.N_V)
    x = jnp.asarray(tokenizer.encode(PROMPT, bos=True))
    tr = trace(d_transformer, x, theta)
    path = tr.to_html(tmp_path_factory.mktemp("page") / "trace.html")
    return tr, path


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _attr(value) -> str:
    return str(value).replace('"', '\\"')


def test_page_in_chromium(traced, browser):
    tr, path = traced
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # self-contained
    browser.get(path.as_uri())
    browser.find_element(By.CSS_SELECTOR, "main")  # the page loaded

    # every algorithm's section, titled, with all of its pseudocode lines, recorded ones marked
    algorithms = list(dict.fromkeys(r.algorithm for r in tr.records))
    assert {10, 6, 5, 4} <= set(algorithms)
    sections = browser.find_elements(By.CSS_SELECTOR, "section.algorithm")
    assert [s.get_attribute("data-algorithm") for s in sections] == [str(a) for a in algorithms]
    for a in algorithms:
        section = browser.find_element(By.CSS_SELECTOR, f'section[data-algorithm="{a}"]')
        assert pseudocode.TITLES[a] in section.find_element(By.TAG_NAME, "h2").text
        recorded = {n for r in tr.records if r.algorithm == a for n in r.lines}
        for n, text in pseudocode.PSEUDOCODE[a].items():
            line = section.find_element(By.CSS_SELECTOR, f'.line[data-line="{n}"]')
            pseudo = line.find_element(By.CSS_SELECTOR, ".pseudo .text").get_attribute(
                "textContent"
            )
            assert pseudo == text
            assert line.get_attribute("data-recorded") == str(n in recorded).lower(), (a, n)

    # every record under its line, with its loop indices, the same number of times as traced
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.record')).map(function (e) {"
        " return [e.closest('.line').dataset.algorithm, e.closest('.line').dataset.line,"
        " e.dataset.algorithm, e.dataset.line, e.dataset.name, e.dataset.l || null,"
        " e.dataset.h || null]; });"
    )
    expected = [
        [str(r.algorithm), str(r.line), str(r.algorithm), str(r.line), r.name]
        + [None if r.indices.get(k) is None else str(r.indices[k]) for k in ("l", "h")]
        for r in tr.records
    ]
    assert sorted(map(json.dumps, shown)) == sorted(map(json.dumps, expected))

    # layers and heads collapse: one <details> per layer, and per head inside a layer
    assert browser.find_elements(By.CSS_SELECTOR, 'details[data-index="l"][data-value="2"]')
    assert browser.find_elements(
        By.CSS_SELECTOR, 'details[data-index="l"] details[data-index="h"][data-value="2"]'
    )
    browser.find_element(By.ID, "collapse").click()
    assert (
        browser.execute_script("return document.querySelectorAll('details.index[open]').length")
        == 0
    )
    browser.find_element(By.ID, "expand").click()
    assert (
        browser.execute_script(
            "return document.querySelectorAll('details.index:not([open])').length"
        )
        == 0
    )

    # every matrix a drawn heatmap
    matrices = [r for r in tr.records if np.ndim(r.value) == 2 and min(np.shape(r.value)) > 1]
    canvases = browser.find_elements(By.CSS_SELECTOR, "canvas.heatmap")
    assert len(canvases) == len(matrices) > 0
    assert all(c.get_attribute("data-drawn") == "true" for c in canvases)
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-heatmaps") == str(
        len(matrices)
    )

    # the pixels of layer 2, head 2's attention weights A decode back to the traced A: one-signed
    # values are drawn white -> blue, the red channel falling linearly (255 - 215 u, u in [0, 1])
    A = np.asarray(tr.get(4, 6, name="A", l=2, h=2), np.float64)
    pixels = browser.execute_script(
        'var c = document.querySelector(\'.record[data-name="A"][data-l="2"][data-h="2"] '
        "canvas.heatmap'); var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " return [c.width, c.height, Array.from(d)];"
    )
    width, height, rgba = pixels
    assert (height, width) == A.shape
    red = np.asarray(rgba, np.float64).reshape(height, width, 4)[..., 0]
    u = (255 - red) / 215
    decoded = A.min() + u * (A.max() - A.min())
    np.testing.assert_allclose(decoded, A, atol=(A.max() - A.min()) / 100)
    assert (red[np.tril_indices(6, -1)] == 255).all()  # masked (t_z > t_x): weight 0, white

    # hovering a cell names it with the paper's 1-based indices and gives its value
    canvas = browser.find_element(
        By.CSS_SELECTOR, '.record[data-name="A"][data-l="2"][data-h="2"] canvas.heatmap'
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    cell = canvas.size["width"] / 6  # 5 px right of and below the centre: the cell (4, 4)
    ActionChains(browser).move_to_element_with_offset(canvas, 5, 5).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and cell > 5
    match = re.fullmatch(r"\[t_z=4, t_x=4\] ≈ (\S+)", tip.text)
    assert match, tip.text
    assert abs(float(match.group(1)) - A[3, 3]) <= (A.max() - A.min()) / 254 + 0.005 * A[3, 3]

    # nothing fetched, no script error
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert browser.execute_script("return window.faErrors") == []
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_a_real_models_page_in_chromium(tmp_path, browser):
    """SmolLM2-135M (its GGUF) traced from the command line: the page's heatmaps are labelled with
    the prompt's tokens (queries on the columns, keys on the rows), the generated token and its
    probability are shown, and the page draws without a script error or a fetch."""
    from formal_algorithms.interop.gguf import gguf_tokenizer, smollm2_path

    page = tmp_path / "smollm2.html"
    prompt = "The capital of France is"
    args = ["trace", "--gguf", "--prompt", prompt, "--generate", "1", "--layer", "1",
            "--head", "1", "--html", str(page)]  # fmt: skip
    assert cli.main(args) == 0
    tokenizer = gguf_tokenizer(smollm2_path())
    tokens = [tokenizer.decode([t]) for t in tokenizer.encode(prompt)]
    browser.get(page.as_uri())
    assert browser.execute_script("return window.faErrors") == []
    assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-heatmaps")) > 0
    weights = browser.find_elements(By.CSS_SELECTOR, '.record[data-algorithm="4"][data-name="A"]')
    assert weights
    queries = weights[0].find_elements(By.CSS_SELECTOR, '.hmlab.cols[data-axis="queries"] span')
    keys = weights[0].find_elements(By.CSS_SELECTOR, '.hmlab.rows[data-axis="keys"] span')
    assert [q.get_attribute("textContent") for q in queries] == tokens
    assert [k.get_attribute("textContent") for k in keys] == tokens
    step = browser.find_element(By.CSS_SELECTOR, "table.steps tr.step")
    y, p = int(step.get_attribute("data-token")), float(step.get_attribute("data-p"))
    cells = [c.get_attribute("textContent") for c in step.find_elements(By.TAG_NAME, "td")]
    assert cells == ["1", tokenizer.decode([y]), str(y), f"{p:.4f}"]
    assert 0 < p <= 1
    assert not [e for e in browser.get_log("browser") if "net::" in e["message"]]


def test_page_caps_matrix_size(tmp_path):
    """A matrix larger than ``max_side`` is drawn cropped (and said so); the cell budget holds."""
    big = np.arange(300 * 200, dtype=np.float32).reshape(300, 200)

    def f(X):
        """Algorithm 10, for this test."""
        Y = X * 2  # line 3
        return Y

    tr = trace(f, jnp.asarray(big))
    page = write_html(tr, tmp_path / "big.html", max_side=64).read_text(encoding="utf-8")
    assert 'data-rows="64" data-cols="64"' in page
    assert "rows 1-64, columns 1-64 of (300, 200)" in page
    page = write_html(tr, tmp_path / "none.html", max_cells=10).read_text(encoding="utf-8")
    assert "<canvas" not in page and "budget of cells" in page


# ------------------------------------------------------------------------------------ the command


def table_rows(out: str) -> list[list[str]]:
    lines = out.strip().splitlines()
    header = next(k for k, s in enumerate(lines) if s.startswith("path "))
    return [[c.strip() for c in s.split(" | ")] for s in lines[header + 2 :] if " | " in s]


def test_cli_trace_table_and_filters(traced, capsys):
    """The command prints the walk of the same model as ``traced`` (the random model's sizes,
    seed 0, the same vocabulary): the library's table, filtered as asked."""
    tr, _ = traced
    assert cli.main(["trace", "--prompt", PROMPT]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Algorithm 10 on {PROMPT!r}: 6 tokens with bos; a random DTransformer")
    assert out.strip().splitlines()[1:] == tr.table().splitlines()
    rows = table_rows(out)
    assert len(rows) == len(tr.records)
    assert rows[-1][0] == "Algorithm 10 › line 11" and rows[-1][2] == "(99, 6)"

    assert cli.main(["trace", "--prompt", PROMPT, "--layer", "2", "--head", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[1:] == tr.table(l=2, h=1).splitlines()
    rows = table_rows(out)
    assert len(rows) == len(tr.find(l=2, h=1)) >= 6
    assert all("(l=2)" in r[0] and "(h=1)" in r[0] for r in rows)
    assert [r[1] for r in rows if "Algorithm 4 › line " in r[0]][:4] == [
        pseudocode.PSEUDOCODE[4][n] for n in (1, 2, 3, 4)
    ]

    assert cli.main(["trace", "--prompt", PROMPT, "--algorithm", "10", "--line", "6"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == [  # line 6, and the call of the layer (lines 5-8)
        f"Algorithm 10 › {lines} (l={l})" for l in (1, 2) for lines in ("line 6", "lines 5-8")
    ]

    assert cli.main(["trace", "--prompt", PROMPT, "--algorithm", "6", "--line", "1"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 2 * TINY["L"] + 1  # lines 5 and 7 of each layer, and line 10
    assert all(r[1] == pseudocode.PSEUDOCODE[6][1] and r[2] == "(1, 6)" for r in rows)


def test_cli_trace_checkpoint_and_html(tmp_path, capsys):
    tokenizer = CharTokenizer(tuple("ehlo"))
    theta = tiny_model(tokenizer.N_V)
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", theta,
                                 tokenizer=tokenizer.to_dict(), extra={"activation": "gelu"})  # fmt: skip
    page = tmp_path / "out" / "trace.html"
    args = ["trace", "--checkpoint", str(checkpoint), "--prompt", PROMPT, "--layer", "1"]
    assert cli.main([*args, "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"{checkpoint} (DTransformer, L = 2, H = 2, d_e = 16)" in out.splitlines()[0]
    rows = table_rows(out)
    assert rows and all("(l=1)" in r[0] for r in rows)
    assert out.strip().splitlines()[-1].startswith(f"wrote {page}")
    html = page.read_text(encoding="utf-8")
    assert html.count('class="record"') == len(rows)
    assert 'data-l="2"' not in html and 'data-l="1"' in html
    assert '"tokens":["<bos>","h","e","l","l","o"]' in html  # the tooltips' labels


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algorithm", "16"], r"--algorithm '16' is not one of the paper's"),
        (["--algorithm", "3"], r"no traced line matches --algorithm 3"),
        (["--algorithm", "4", "--line", "7"], r"--line 7: Algorithm 4 has lines 1-6"),
        (["--head", "3"], r"--head 3: the model has H = 2"),
        (["--checkpoint", "/nonexistent/m.safetensors"], r"m\.safetensors"),
        (
            ["--prompt", "x" * 40, "--checkpoint", "CKPT"],
            r"--prompt is 41 tokens, more than .* \(16\)",
        ),
        (["--position", "7"], r"--position 7: the input has 6 tokens"),
        (["--checkpoint", "CKPT", "--gguf", "x.gguf"], r"give one model: --checkpoint or --gguf"),
    ],
)
def test_cli_trace_errors_are_one_line(args, message, tmp_path, capsys):
    tokenizer = CharTokenizer(tuple("x"))
    checkpoint = save_checkpoint(tmp_path / "m.safetensors", tiny_model(tokenizer.N_V),
                                 tokenizer=tokenizer.to_dict())  # fmt: skip
    args = [str(checkpoint) if a == "CKPT" else a for a in args]
    assert cli.main(["trace", "--prompt", PROMPT, *args]) == 1  # a later --prompt wins
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("formal-algorithms: error: "), err
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layer", "0"], r"--layer must be at least 1, got 0"),
        (["--position", "0"], r"--position must be at least 1, got 0"),
        (["--generate", "0"], r"--generate must be at least 1, got 0"),
        (["--temperature", "-1", "--generate", "2"], r"--temperature must be in \[0, inf\].*-1.0"),
    ],
)
def test_cli_trace_option_ranges_are_parser_errors(args, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["trace", "--prompt", PROMPT, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].endswith("trace --help)"), err
    assert re.search(message, err[0]), err[0]


def test_trace_benchmark_runs():
    """The cost benchmark's three runs, on the tiny model (the default model is for the report)."""
    from formal_algorithms.benchmark import trace as bench

    model = dict(N_V=99, ell_max=16, **TINY)
    lines = []
    r = bench.run(rounds=1, model=model, prompt_length=6, log=lines.append)
    assert set(r["median_s"]) == {"eager", "traced", "jit"}
    assert r["records"] == len(trace(d_transformer, jnp.zeros(6, jnp.int32), tiny_model(99)))
    assert r["ratio_traced_over_eager"] == r["median_s"]["traced"] / r["median_s"]["eager"] > 0
    assert "traced / eager = " in lines[0]
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        bench.run(rounds=0, model=model)


def test_trace_benchmark_smollm2_part_runs():
    """The real-model part of the cost benchmark on a short prompt (the report uses 16 tokens)."""
    from formal_algorithms.benchmark import trace as bench

    lines = []
    r = bench.run_smollm2(rounds=1, n_tokens=4, log=lines.append)
    assert r["tokens"] == 4 and r["records"] > 30 * 9 * 6  # every layer's every head
    assert r["ratio_traced_over_eager"] == r["median_s"]["traced"] / r["median_s"]["eager"]
    assert (
        lines[0].startswith("SmolLM2-135M (L = 30, H = 9), 4-token prompt") and "target" in lines[0]
    )
