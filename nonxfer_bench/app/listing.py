"""``nonxfer-bench list``: suites with their description, a suite's models with their roles, and every registered
attack, encoder or dataset with its parameters (and an attack's or encoder's threat model: for an encoder what the owner
keeps secret and what the release assumes, and its strength unit). Listing suites imports no torch."""

from __future__ import annotations

import textwrap
from pathlib import Path

from nonxfer_bench.core.errors import UserError, printable, shown_path
from nonxfer_bench.core.registry import first_sentence, parameter_defaults
from nonxfer_bench.schema.files import read_yaml

SUITES_DIR = Path("suites")
WIDTH = 110


def show(what: str, suite_file: Path | None) -> int:
    """``list``: the suites, a suite's models, or the registered attacks, encoders or datasets (``what``)."""
    if what == "suites":
        list_suites()
    elif what == "models":
        list_models(suite_file)
    else:
        list_components(what)
    return 0


def _suite_files() -> tuple[Path, list[Path]]:
    """The suite files ``list suites`` shows: ./suites/*.yaml, else those of the checkout the package runs from."""
    for folder in (SUITES_DIR.resolve(), Path(__file__).resolve().parents[2] / SUITES_DIR):
        if files := sorted(folder.glob("*.yaml")):
            return folder, files
    return SUITES_DIR.resolve(), []


def list_suites() -> None:
    """Each suite file with the first sentence of its description (read within the suite reader's bounds)."""
    folder, files = _suite_files()
    if not files:
        raise UserError(f"list suites: no suite files (*.yaml) in {folder}; run it in a project with a suites/ folder")
    width = max(len(shown_path(path)) for path in files) + 2
    for path in files:
        try:
            data = read_yaml(path)
            description = data.get("description") if isinstance(data, dict) else None
            about = first_sentence(description) if isinstance(description, str) else "(no description)"
        except UserError as error:
            about = f"({str(error).removeprefix(str(path)).lstrip(':').strip()})"
        print(printable(textwrap.fill(f"{shown_path(path):{width}s}{about}", WIDTH, subsequent_indent=" " * width)))


def list_models(suite_file: Path | None) -> None:
    """A suite's models: name, architecture, where the weights come from, role."""
    from nonxfer_bench.loading import load_suite  # heavy (torch, timm: seconds); `list suites` never needs it

    if suite_file is None:
        raise UserError("list models: give a suite file, e.g. `nonxfer-bench list models suites/quickstart.yaml`")
    suite = load_suite(suite_file, require_weights=False)
    for model in suite.models:
        role = "authorized" if model.name in suite.authorized else suite.role(model.name, "")
        print(f"{model.name:16s} {model.arch:28s} {model.weights.source:5s} {role}")


def list_components(what: str) -> None:
    """Every registered attack, encoder or dataset (``what``), plugins marked, with its parameters' defaults."""
    # heavy: the registries import torch, timm and every built-in module (seconds); `list suites` needs none of them
    import nonxfer_bench.attacks
    from nonxfer_bench.attacks import ATTACKS
    from nonxfer_bench.datasets.base import DATASETS
    from nonxfer_bench.encoders import ENCODERS

    registry = {"attacks": ATTACKS, "encoders": ENCODERS, "datasets": DATASETS}[what]
    names = registry.names()
    if what == "attacks":
        print(f"built-in attacks from {Path(nonxfer_bench.attacks.__file__).parent}")
    indent = " " * 22
    for name in names:
        cls = registry.get(name)
        plugin = f" [plugin: {registry.plugins[name]}]" if name in registry.plugins else ""
        tier = f"[{cls.threat.tier}] " if what == "attacks" else ""  # the knowledge tier of its threat model
        print(
            textwrap.fill(f"{name:20s}  {tier}{first_sentence(cls.__doc__)}{plugin}", WIDTH, subsequent_indent=indent)
        )
        params = parameter_defaults(cls.Params)
        print(
            textwrap.fill(
                f"parameters: {', '.join(params) if params else 'none'}",
                WIDTH,
                initial_indent=indent,
                subsequent_indent=indent + "  ",
            )
        )
        if what == "attacks":
            print(
                textwrap.fill(
                    f"threat model: {cls.threat.text}", WIDTH, initial_indent=indent, subsequent_indent=indent + "  "
                )
            )
        if what == "encoders":
            print(
                textwrap.fill(
                    f"strength: {cls.strength_unit}", WIDTH, initial_indent=indent, subsequent_indent=indent + "  "
                )
            )
            print(
                textwrap.fill(
                    f"threat model: {cls.secret or '(not declared)'}",
                    WIDTH,
                    initial_indent=indent,
                    subsequent_indent=indent + "  ",
                )
            )
