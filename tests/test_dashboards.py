"""End to end over HTTP: a real ``mlflow server`` on loopback, a tiny suite logged to it, the leaderboard and the
HTML report rebuilt from MLflow, and the MLflow experiment page and the report rendered in headless Chromium.

Needs Debian's ``chromium`` (``make test`` installs it) and the ``playwright`` package (the ``test`` extra); a
missing browser fails these tests rather than skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from nonxfer_bench.analysis.uncertainty import proportion_interval
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.cli import main
from nonxfer_bench.loading import load_suite
from nonxfer_bench.metrics.statistics import bootstrap_over_images
from nonxfer_bench.rendering.text import with_interval
from nonxfer_bench.tracking.tracker import Tracker, experiment_url, sqlite_uri
from tests.helpers import digits_suite

CHROMIUM = Path("/usr/bin/chromium")
# Without these, headless Chromium on a closed network can hang on start-up (quic, sync, component updates).
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
EXPERIMENT = "digits-e2e"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{process.args[:5]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server (SQLite store, proxied artifacts) on a free loopback port."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", sqlite_uri(folder / "mlflow.db"), "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url, process, folder / "server.log")
    yield url
    os.killpg(process.pid, signal.SIGTERM)  # the server's workers are in its process group
    process.wait(30)
    log.close()


@pytest.fixture(scope="module")
def logged(server, digits_zoo, tmp_path_factory):
    """The tiny suite run once through the CLI, logging to the server over HTTP; its suite path and store."""
    folder = tmp_path_factory.mktemp("digits_e2e")
    path = digits_suite(
        folder,
        digits_zoo,
        encoders=[{"name": "patch", "strengths": [0.0, 20.0]}, {"name": "reference", "strengths": [20.0]}],
        attacks=[{"name": "identity"}, {"name": "blur", "strengths": [0.25, 1.0]}],
        tracking={"enabled": True, "uri": server, "experiment": EXPERIMENT},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert main(["run", str(path)]) == 0
        suite = load_suite(path)
        yield path, suite, CellStore(suite.run_dir() / "cells.jsonl")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`, done by `make test`)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def _group_runs(server: str):
    mlflow.set_tracking_uri(server)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT])
    return runs, runs[runs["tags.nxb.kind"] == "encoding"]


def _effect_rows(markdown: str) -> dict[tuple[str, str], dict[str, str]]:
    """The NE-effect table of a leaderboard.md as {(authorized, encoding): {column: text}}."""
    section = markdown.split("## NE effect (no attack)")[1].split("## Attacks")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]
    return {(row["authorized"], row["encoding"]): row for row in rows}


def _ranking_rows(markdown: str) -> list[dict[str, str]]:
    """The ranking (the protocol verdict) of a leaderboard.md, in its order."""
    section = markdown.split("## Protocol verdict")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines[2:]]


@pytest.mark.slow
def test_leaderboard_from_mlflow_equals_the_store_and_a_recomputation_of_the_cells(logged, server, tmp_path):
    path, suite, store = logged
    assert main(["leaderboard", str(path), "--mlflow", "--out", str(tmp_path / "mlflow")]) == 0
    assert main(["leaderboard", str(path), "--out", str(tmp_path / "store")]) == 0
    assert main(["leaderboard", "--experiment", "nope", "--tracking-uri", server]) == 2
    for name in ("leaderboard.md", "cells.csv"):
        assert (tmp_path / "mlflow" / name).read_text() == (tmp_path / "store" / name).read_text()
    rows = _effect_rows((tmp_path / "mlflow" / "leaderboard.md").read_text())
    identity = [cell for cell in store.cells.values() if cell.baseline]
    encodings = {(c.encoder, c.strength) for c in identity}
    clean_authorized = next(c.accuracy for c in identity if c.encoder == "clean" and c.model == "vit_a")
    assert len(rows) == len(encodings) == 4  # clean, patch 0, patch 20, reference 20
    for encoder, strength in encodings:
        encoding = {c.model: c for c in identity if (c.encoder, c.strength) == (encoder, strength)}
        cells = {model: c.accuracy for model, c in encoding.items()}
        row = rows[("vit_a", encoder if encoder == "clean" else f"{encoder} {strength:g}")]
        n = encoding["vit_a"].n
        shown = {name: with_interval(proportion_interval(value, n)) for name, value in cells.items()}
        assert row["n"] == str(n) and row["auth acc"] == shown["vit_a"]
        assert row["auth retention"] == f"{100 * cells['vit_a'] / clean_authorized:.1f}"
        # two unauthorized models with per-image outcomes: the paired bootstrap over the images
        mean, maximum = bootstrap_over_images(
            np.vstack([encoding[m].outcomes.correct_bits() for m in ("vit_b", "res")])
        )
        assert mean.estimate == pytest.approx((cells["vit_b"] + cells["res"]) / 2)
        assert row["unauth mean"] == with_interval(mean) and row["unauth max"].startswith(with_interval(maximum) + " (")
        assert (row["vit_b"], row["res"]) == (shown["vit_b"], shown["res"])
    plots = {
        "accuracy_vs_strength.png",
        "transfer_heatmap.png",
        "attack_curves.png",
        "theory_pred_vs_obs.png",
        "theory_misalignment_vs_drop.png",
    }
    assert plots <= {p.name for p in (tmp_path / "mlflow").glob("*.png")}
    for name in plots:  # deterministic plots: the same cells, read from MLflow or the store, give the same bytes
        assert (tmp_path / "mlflow" / name).read_bytes() == (tmp_path / "store" / name).read_bytes(), name
    runs, _ = _group_runs(server)
    parent = runs[runs["tags.nxb.kind"] == "invocation"]["run_id"].item()
    logged_files = {Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(parent, "leaderboard")}
    assert {"leaderboard.md", "cells.csv"} | plots <= logged_files


def test_group_runs_carry_the_params_tags_and_role_curves_the_ui_groups_by(logged, server):
    _, suite, store = logged
    _, groups = _group_runs(server)
    assert sorted(groups["params.encoder"]) == ["clean", "patch", "patch", "reference"]
    assert set(groups["params.authorized"]) == {"vit_a"}
    families = dict(zip(groups["params.encoder"], groups["tags.nxb.attack_families"]))
    assert families.pop("clean") == "identity" and set(families.values()) == {
        "identity,blur"
    }  # the clean images face only no attack
    releases = groups[groups["params.encoder"] != "clean"]
    client = mlflow.MlflowClient()
    for run_id, group_key in zip(releases["run_id"], releases["tags.nxb.group"]):
        blur = [c for c in store.cells.values() if c.group == group_key and c.attack == "blur"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "unauth.acc_mean.blur"))
        expected = sorted(
            (round(100 * s), sum(c.accuracy for c in blur if c.attack_strength == s and c.role == "unauthorized") / 2)
            for s in (0.25, 1.0)
        )
        assert [step for step, _ in history] == [step for step, _ in expected] == [25, 100]
        assert [value for _, value in history] == pytest.approx([value for _, value in expected])
        authorized = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "auth.acc.blur"))
        assert authorized == sorted(
            (round(100 * c.attack_strength), c.accuracy) for c in blur if c.role == "authorized"
        )


@pytest.mark.slow
def test_the_experiment_page_and_the_run_comparison_render_in_chromium(logged, server, browser):
    runs, groups = _group_runs(server)
    experiment = runs["experiment_id"].iloc[0]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    assert mlflow.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    page.goto(experiment_url(server, experiment), timeout=60_000)  # the link the CLI prints
    parent_name = runs[runs["tags.nxb.kind"] == "invocation"]["tags.mlflow.runName"].item()
    parent = page.locator("[role=row]").filter(has_text=parent_name).first
    parent.wait_for(timeout=60_000)  # the classic runs table, not MLflow 3's GenAI (traces) view
    parent.locator("[col-id*='Run Name'] button").first.click()  # expand the invocation's nested group runs
    for name in groups["tags.mlflow.runName"]:
        page.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
    assert EXPERIMENT in page.inner_text("body")
    ids = json.dumps(list(groups["run_id"]))
    page.goto(f"{server}/#/compare-runs?runs={ids}&experiments={json.dumps([experiment])}", timeout=60_000)
    # the metrics table renders only its first rows: acc.blur.res comes first, its interval right after it
    page.get_by_text("acc.blur.res", exact=True).first.wait_for(timeout=60_000)
    shown = page.inner_text("body")
    assert all(f"acc.blur.res{suffix}" in shown.split("\n") for suffix in ("_hi", "_lo", "_n"))
    for name in groups["tags.mlflow.runName"]:
        assert name in shown
    for text in ("authorized", "encoder", "storage", "nxb.attack_families\tidentity,blur", "nxb.kind\tencoding"):
        assert text in shown
    page.close()


@pytest.mark.slow
def test_the_html_report_is_one_folder_that_renders_from_disk(logged, server, browser, tmp_path):
    path, suite, store = logged
    assert main(["report", str(path), "--mlflow", "--out", str(tmp_path / "built")]) == 0
    folder = shutil.move(tmp_path / "built", tmp_path / "moved")  # self-contained: nothing points back
    board = (Path(folder) / "leaderboard.md").read_text()
    page = browser.new_page()
    page.goto((Path(folder) / "index.html").as_uri())
    page.wait_for_selector("h1")
    assert page.inner_text("h1") == f"Leaderboard: {suite.name}"
    assert f"What was run: suite {suite.name} ({path}); " in page.locator("p").first.inner_text()  # before any table
    ranking = page.locator(
        "table"
    ).first  # the headline: releases ranked by the protection gap at the highest tier that ran
    assert page.locator("h2").first.inner_text() == "Protocol verdict"
    ranked = _ranking_rows(board)
    assert [row["encoding"] for row in ranked] == ranking.locator("tbody tr td:nth-child(3)").all_inner_texts()
    assert sorted(row["encoding"] for row in ranked) == [
        "patch 0",
        "patch 20",
        "reference 20",
    ]  # clean is not a release
    assert [row["rank"] for row in ranked] == [str(rank) for rank in range(1, len(ranked) + 1)]
    column = [cell.strip() for cell in ranking.locator("th").all_inner_texts()].index(
        "gap: none"
    ) + 1  # identity and blur: the only tier that ran
    gaps = [
        [float(x) for x in re.findall(r"[+-]\d+\.\d", text)]
        for text in ranking.locator(f"tbody tr td:nth-child({column})").all_inner_texts()
    ]
    assert len(gaps) == 3 and all(
        lo <= estimate <= hi for estimate, lo, hi in gaps
    )  # the paired interval holds its estimate
    rows = _effect_rows(board)
    effect = page.locator("xpath=//h2[starts-with(., 'NE effect')]/following-sibling::table[1]")
    assert effect.locator("tbody tr").count() == len(rows)
    shown = effect.inner_text()
    for row in rows.values():
        assert row["auth acc"] in shown and row["encoding"] in shown
    images = page.eval_on_selector_all(
        "img", "images => images.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
    )
    sources = [src for src, _ in images]
    assert all(ok for _, ok in images), images
    assert sum(src.startswith("samples/") for src in sources) == 4  # one grid per encoding: clean, NE, blur rows
    assert {"accuracy_vs_strength.png", "transfer_heatmap.png", "attack_curves.png"} <= set(sources)
    assert main(["report", str(path), "--out", str(tmp_path / "from_store")]) == 0  # the same page from the cell store
    assert (tmp_path / "from_store" / "index.html").read_text() == (Path(folder) / "index.html").read_text()
    for grid in (Path(folder) / "samples").iterdir():
        assert (tmp_path / "from_store" / "samples" / grid.name).read_bytes() == grid.read_bytes()
    column = [cell.strip() for cell in effect.locator("th").all_inner_texts()].index("unauth mean")

    def value(text: str) -> float:  # "83.5 [78.1, 87.9]": the estimate sorts the column
        return float(text.split(" [")[0])

    def sorted_column() -> list[float]:
        effect.locator("th").nth(column).click()
        return [value(text) for text in effect.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()]

    assert sorted_column() == sorted(value(row["unauth mean"]) for row in rows.values())
    assert sorted_column() == sorted((value(row["unauth mean"]) for row in rows.values()), reverse=True)
    page.close()


@pytest.mark.slow
def test_report_samples_recomputes_each_releases_grid_and_the_images_load_in_chromium(logged, browser, tmp_path):
    path, suite, _ = logged
    runs_grids = {grid.name: grid.read_bytes() for grid in (suite.run_dir() / "samples").iterdir()}
    assert main(["report", str(path), "--samples", "--out", str(tmp_path / "report")]) == 0
    page = browser.new_page()
    page.goto((tmp_path / "report" / "index.html").as_uri())
    page.wait_for_selector("h1")
    images = page.eval_on_selector_all(
        "img[src^='samples/']", "images => images.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
    )
    assert len(images) == 4 and all(ok for _, ok in images), (
        images
    )  # one per release: clean, patch 0, patch 20, reference 20
    captions = page.locator("figure:has(img[src^='samples/']) figcaption").all_inner_texts()
    assert all(
        "recomputed on 4 images" in caption and "Rows, top to bottom: the clean images;" in caption
        for caption in captions
    )
    clean = [caption for caption in captions if "the clean images again (no encoding)" in caption]
    assert len(clean) == 1 and "attack" not in clean[0]  # the clean images face no attack
    assert all(
        re.search(r"\(blur@1: -?\d+\.\d dB\)", caption) for caption in captions if caption not in clean
    )  # the strongest blur row and its PSNR
    sizes = [Image.open(tmp_path / "report" / source).size for source, _ in images]
    assert sorted(sizes) == sorted(
        Image.open(grid).size for grid in (suite.run_dir() / "samples").iterdir()
    )  # the run's rows and columns
    assert {
        grid.name: grid.read_bytes() for grid in (suite.run_dir() / "samples").iterdir()
    } == runs_grids  # the run's own grids untouched
    page.close()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["leaderboard"], "give a suite file, or --experiment NAME"),
        (["report", "--experiment", "nope"], "needs --tracking-uri"),
        (["leaderboard", "--experiment", "nope", "--tracking-uri", "sqlite:///{tmp}/mlflow.db"], "no MLflow store at"),
    ],
)
def test_reading_back_from_mlflow_fails_with_one_line(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main([arg.format(tmp=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_ui_serves_the_store_the_suite_logs_to(digits_zoo, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = digits_suite(tmp_path, digits_zoo, tracking={"enabled": True, "experiment": "digits-ui"})
    suite = load_suite(path)
    with Tracker(suite, path) as tracker:  # the suite's default store: SQLite under output.dir
        parent = tracker.parent_id
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "nonxfer_bench.cli", "ui", str(path), "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log)
        mlflow.set_tracking_uri(url)
        assert list(mlflow.search_runs(experiment_names=["digits-ui"])["run_id"]) == [parent]
        assert experiment_url(url, mlflow.get_experiment_by_name("digits-ui").experiment_id) in log.read_text()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue  # exited while we read
        if state != "Z":
            children.setdefault(int(parent), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_stopping_ui_by_its_pid_stops_the_server_and_every_child(tmp_path, monkeypatch):
    """``kill <pid of nonxfer-bench ui>``: the MLflow server, its job runner and workers go too, and the port is
    free."""
    from tests.helpers import DIGITS_ZOO, write_yaml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    zoo = write_yaml(tmp_path / "zoo.yaml", DIGITS_ZOO)  # `ui` reads the suite but never loads weights
    path = digits_suite(tmp_path, zoo, tracking={"enabled": True, "experiment": "digits-ui-stop"})
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as output:  # the CLI in our own process group: only its PID is signalled
        process = subprocess.Popen(
            [sys.executable, "-m", "nonxfer_bench", "ui", str(path), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    tree: set[int] = set()
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", process, log)
        assert (
            experiment_url(f"http://127.0.0.1:{port}", None) in log.read_text()
        )  # no experiment yet: the list, classic view
        tree = _descendants(process.pid)
        assert len(tree) >= 2, tree  # the server and at least its job runner or web workers
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10  # orphans are reaped by init; give it a moment
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in tree if _alive(pid)], log.read_text()[-2000:]
        with socket.socket() as probe:  # as a server binds (uvicorn, the next `ui`): closed connections in
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT do not hold the port,
            probe.bind(("127.0.0.1", port))  # a listener still would: nothing serves the port any more
            probe.listen()
    finally:
        for pid in [process.pid, *tree]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
