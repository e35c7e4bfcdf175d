"""The docs site builds with ``--strict``, its reference lists every registered component (a plugin installed later
included), and the tutorials' code and quoted output are what the code does."""

import os
import re
import shlex
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from nonxfer_bench.attacks import ATTACKS
from nonxfer_bench.attacks.testing import CHECKS
from nonxfer_bench.cli import main
from nonxfer_bench.datasets.base import DATASETS
from nonxfer_bench.encoders.base import ENCODERS
from tests.test_plugins import EXAMPLE, example_plugin  # noqa: F401 - example_plugin: a fixture

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGISTRIES = {"attacks": ATTACKS, "encoders": ENCODERS, "datasets": DATASETS}

# A third-party package installed after the docs were written: one attack and one encoder, found through entry points.
PLUGIN_MODULE = '''
from pydantic import Field

from nonxfer_bench.attacks.base import Attack
from nonxfer_bench.attacks.threat import ThreatModel, Tier
from nonxfer_bench.core.params import Strict
from nonxfer_bench.encoders.gaussian import GaussianEncoder


class ProbeParams(Strict):
    probe_width: int = Field(3, ge=1, le=9, description="the probe's documented width")


class Probe(Attack):
    """A probe attack that only a plugin registers."""

    Params = ProbeParams
    threat = ThreatModel(tier=Tier.METHOD, text="knows the probe", released=True)

    def forward(self, images, strength, generator):
        return images


class ProbeEncoder(GaussianEncoder):
    """A probe encoder that only a plugin registers."""
'''
PLUGIN_ENTRY_POINTS = """[nonxfer_bench.attacks]
docs_probe = nxb_docs_probe:Probe

[nonxfer_bench.encoders]
docs_probe_encoder = nxb_docs_probe:ProbeEncoder
"""


def _install_plugin(folder: Path) -> Path:
    """A plugin distribution ``nxb-docs-probe`` in ``folder`` (a module and its dist-info), found on PYTHONPATH."""
    (folder / "nxb_docs_probe.py").write_text(PLUGIN_MODULE)
    info = folder / "nxb_docs_probe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nxb-docs-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS)
    return folder


def _sections(html: str) -> dict[str, str]:
    """The text of each component section of a generated reference page, by its anchor."""
    parts = re.split(r'<h2 id="([^"]+)"', html)
    return {anchor: unescape(re.sub(r"<[^>]+>", " ", body)) for anchor, body in zip(parts[1::2], parts[2::2])}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built strictly, as ``make docs`` builds it, with the probe plugin installed."""
    plugin = _install_plugin(tmp_path_factory.mktemp("plugin"))
    out = tmp_path_factory.mktemp("site")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(plugin), os.environ.get("PYTHONPATH")])),
        "NO_MKDOCS_2_WARNING": "1",
    }
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registered_component_has_a_reference_entry_with_its_parameters(site, kind):
    registry = REGISTRIES[kind]
    sections = _sections((site / "reference" / kind / "index.html").read_text())
    assert registry.names() and set(registry.names()) <= set(sections)
    for name in registry.names():
        params = registry.get(name).Params.model_fields
        assert all(f"{field}" in sections[name] for field in params), name
        if kind == "attacks":
            assert f"tier : {registry.get(name).threat.tier}" in " ".join(sections[name].split()), name
        if kind == "encoders":
            assert f"Threat model : {registry.get(name).secret}" in " ".join(sections[name].split()), name


@pytest.mark.slow
def test_a_component_installed_later_appears_in_the_reference(site):
    attacks = _sections((site / "reference" / "attacks" / "index.html").read_text())
    probe = " ".join(attacks["docs_probe"].split())
    assert "A probe attack that only a plugin registers." in probe and "plugin: nxb-docs-probe" in probe
    assert "probe_width int 3 ≥ 1, ≤ 9 the probe's documented width" in probe
    assert "tier : method (knows the probe)" in probe and "uses : released NEs" in probe
    encoders = _sections((site / "reference" / "encoders" / "index.html").read_text())
    assert "A probe encoder that only a plugin registers." in encoders["docs_probe_encoder"]


@pytest.mark.slow
def test_the_api_pages_render_the_classes_a_contributor_implements(site):
    components = (site / "api" / "components" / "index.html").read_text()
    for anchor in (
        "nonxfer_bench.core.registry.Registry",
        "attacks.base.Attack",
        "attacks.threat.ThreatModel",
        "nonxfer_bench.encoders.base.Encoder",
        "nonxfer_bench.datasets.base.Dataset",
    ):
        assert f'id="{anchor}"' in components, anchor
    assert "nonxfer_bench.attacks.base" in components  # attacks/ is documented under the name it is imported by


def _code_block(page: str, start: str) -> str:
    """The fenced code block of a docs page whose first line starts with ``start``."""
    return re.search(rf"```[a-z]*\n({re.escape(start)}.*?)```", (DOCS / page).read_text(), re.S).group(1)


@pytest.fixture
def fresh_registries(monkeypatch):
    """ATTACKS and ENCODERS as they are, restored after the test (an example registers into them)."""
    for registry in (ATTACKS, ENCODERS):
        registry.names()
        monkeypatch.setattr(registry, "_classes", dict(registry._classes))


def test_the_tutorial_attack_meets_the_attack_specification(fresh_registries):
    exec(
        compile(_code_block("tutorial/add-an-attack.md", "# attacks/sharpen.py"), "sharpen.py", "exec"),
        {"__name__": "sharpen"},
    )
    assert "max_amount" in ATTACKS.get("sharpen").Params.model_fields
    for check in CHECKS.values():
        check("sharpen", {"max_amount": 2.0})


@pytest.mark.parametrize("name", ["pyproject.toml", "my_protections/uniform.py"])
def test_the_tutorial_plugin_is_the_tested_example_plugin(name):
    """The tutorial's plugin files are tests/plugin_example's, which tests/test_plugins.py installs and checks."""
    assert _code_block("tutorial/add-a-protection.md", f"# {name}") == (EXAMPLE / name).read_text()


@pytest.mark.usefixtures("example_plugin")
def test_the_tutorial_plugins_test_passes_and_list_encoders_prints_what_the_page_quotes(capsys):
    namespace = {"__name__": "test_uniform"}
    exec(
        compile(_code_block("tutorial/add-a-protection.md", "# tests/test_uniform.py"), "test_uniform.py", "exec"),
        namespace,
    )
    namespace["test_uniform_meets_the_encoder_specification"]()
    assert main(["list", "encoders"]) == 0
    printed = capsys.readouterr().out.splitlines()
    quoted = _code_block("tutorial/add-a-protection.md", "$ nonxfer-bench list encoders").splitlines()
    assert quoted[1] == "..." and len(quoted) > 3
    start = printed.index(quoted[2])
    assert printed[start : start + len(quoted) - 2] == quoted[2:]


def test_the_leaderboard_walkthrough_quotes_the_committed_quickstart_leaderboard():
    committed = (ROOT / "results" / "quickstart" / "leaderboard.md").read_text().splitlines()
    quoted = [
        line
        for line in (DOCS / "tutorial" / "leaderboard.md").read_text().splitlines()
        if re.match(r"\| \d+ \| ", line)
    ]
    assert len(quoted) == 4 and all(line in committed for line in quoted)


def _command(page: str, start: str) -> tuple[dict[str, str], list[str]]:
    """A page's shell command (continuation lines joined) as (environment, argv): the checkout's suites/ by absolute
    path, so it runs from any folder, and one torch thread."""
    words = shlex.split(_code_block(page, start).replace("\\\n", " "))
    program = words.index("nonxfer-bench")
    argv = [str(ROOT / word) if word.startswith("suites/") else word for word in words[program + 1 :]]
    return {**os.environ, **dict(word.split("=", 1) for word in words[:program])}, [
        sys.executable,
        "-m",
        "nonxfer_bench",
        *argv,
        "--threads",
        "1",
    ]


@pytest.mark.slow
def test_the_protect_a_folder_walkthrough_prints_what_the_page_quotes(tmp_path):
    page = "tutorial/protect-a-folder.md"
    export = _code_block(page, "# export.py")
    subprocess.run([sys.executable, "-c", export], cwd=tmp_path, check=True, timeout=300)
    for command, output in (
        ("NXB_SEED_KEY=my-secret-key nonxfer-bench encode", "wrote "),
        ("nonxfer-bench verify", "release/: "),
        ("nonxfer-bench attack", "  knows "),
    ):
        env, argv = _command(page, command)
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        quoted = _code_block(page, output).rstrip().splitlines()
        assert (
            done.stdout.rstrip().splitlines()[-len(quoted) :] == quoted
        )  # attack's run log (times) comes before what the page quotes
