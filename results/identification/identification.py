"""Identification rates, per-model rates and confusion counts that FINDINGS.md quotes, from the committed cells.

    python results/identification/identification.py            # prints IDENTIFICATION.md's text
    python results/identification/identification.py --write    # and writes it beside this file

One trial = one release (authorized model, encoder, strength, NE key) and one budget of released NEs: `identify`
names its top candidate (`attack_param.chosen`; every evaluated model's cell of a step records the same ranking,
so one cell per step is read). Rates carry Wilson 95% intervals (nonxfer_bench.metrics.statistics.wilson), which
treat the trials as independent; the keys of one authorized model are not independent draws of a model (see the
per-model table), so the pooled intervals are too narrow for a statement about models in general.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.metrics.statistics import wilson

HERE = Path(__file__).resolve().parent
SHAPE_ALONE = {"convnext"}  # the only zoo model of its input size (1x32x32): the only candidate for its releases


def text(path: Path) -> str:
    """The cells' lines, from the results folder's gzipped file (or a plain one written before)."""
    return gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()


def trials(path: Path) -> list[dict]:
    """One row per (group, budget) of the non-clean `identify` cells."""
    seen, rows = set(), []
    for line in text(path).splitlines():
        cell = json.loads(line)
        if cell["attack"] != "identify" or cell["encoder"] == "clean":
            continue
        key = (cell["group"], cell["budget_released"])
        if key in seen:
            continue
        seen.add(key)
        param = cell["attack_param"]
        rows.append(
            {
                "authorized": cell["authorized"], "encoding": f"{cell['encoder']} {cell['strength']:g}", "seed": cell["seed"],
                "nes": cell["budget_released"], "chosen": param["chosen"], "rank": param["authorized_rank"],
                "ranking": param["ranking"],
            }
        )  # fmt: skip
    return rows


def clean_choices(path: Path) -> Counter:
    """What `identify` names on clean (unencoded) 28x28 releases: its choice when there is no NE noise."""
    seen, counts = set(), Counter()
    for line in text(path).splitlines():
        cell = json.loads(line)
        if cell["attack"] != "identify" or cell["encoder"] != "clean" or cell["authorized"] in SHAPE_ALONE:
            continue
        key = (cell["group"], cell["budget_released"])
        if key not in seen:
            seen.add(key)
            counts[(cell["budget_released"], cell["attack_param"]["chosen"])] += 1
    return counts


def rate(hits: int, n: int) -> str:
    interval = wilson(hits, n)
    return f"{hits}/{n} = {100 * interval.estimate:.1f} [{100 * interval.lo:.1f}, {100 * interval.hi:.1f}] %"


def report(rows: list[dict], clean: Counter) -> str:
    encodings = sorted({r["encoding"] for r in rows})
    budgets = sorted({r["nes"] for r in rows})
    models = sorted({r["authorized"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    scored = [m for m in models if m not in SHAPE_ALONE]
    out = [
        "# Identification: rates, per-model rates and confusions",
        "",
        f"From `cells.jsonl.gz` ({len(models)} authorized models x {len(seeds)} NE keys per encoding; written by "
        "`identification.py`). Top-1 rate = how often `identify` names the authorized model first, Wilson 95% "
        "interval over trials taken as independent. Chance: 1/5 = 20 % on the five 28x28 models (five candidates of "
        "the release's shape); 1/1 for convnext, the only candidate of its 32x32 shape.",
        "",
        "## Top-1 rate per encoding and budget",
        "",
        "| encoding | released NEs | five 28x28 models (chance 20 %) | all six (convnext by shape alone) | mean rank of the authorized model (28x28) |",
        "|---|---|---|---|---|",
    ]
    for encoding in encodings:
        for nes in budgets:
            part = [r for r in rows if r["encoding"] == encoding and r["nes"] == nes]
            five = [r for r in part if r["authorized"] in scored]
            hits5 = sum(r["chosen"] == r["authorized"] for r in five)
            hits6 = sum(r["chosen"] == r["authorized"] for r in part)
            mean_rank = sum(r["rank"] for r in five) / len(five)
            out.append(f"| {encoding} | {nes} | {rate(hits5, len(five))} | {rate(hits6, len(part))} | {mean_rank:.2f} |")
    out += [
        "",
        "## Per model: trials counted once per authorized model",
        "",
        "The keys of one model are not independent trials of the method: the rate over the five 28x28 models, each "
        "counted as identified when `identify` names it in a majority of its keys (Wilson interval on n = 5).",
        "",
        "| encoding | released NEs | models identified (of 5) | which |",
        "|---|---|---|---|",
    ]
    for encoding in encodings:
        for nes in budgets:
            won = []
            for model in scored:
                part = [r for r in rows if r["authorized"] == model and r["encoding"] == encoding and r["nes"] == nes]
                if 2 * sum(r["chosen"] == model for r in part) > len(part):
                    won.append(model)
            out.append(f"| {encoding} | {nes} | {rate(len(won), len(scored))} | {', '.join(won) or '-'} |")
    out += ["", "## Per authorized model (identified / keys, and the authorized model's mean rank among 5 candidates)", ""]
    header = [f"{e}, {n} NE{'s' if n > 1 else ''}" for e in encodings for n in budgets]
    out += ["| authorized | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for model in models:
        cells = []
        for encoding in encodings:
            for nes in budgets:
                part = [r for r in rows if r["authorized"] == model and r["encoding"] == encoding and r["nes"] == nes]
                mean_rank = sum(r["rank"] for r in part) / len(part)
                cells.append(f"{sum(r['chosen'] == model for r in part)}/{len(part)} ({mean_rank:.1f})")
        out.append(f"| {model} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Confusions: which candidate is named first",
        "",
        "Per authorized model and encoding, the candidates named first over keys and budgets (count of trials).",
        "",
        "| authorized | encoding | " + " | ".join(f"{n} NE{'s' if n > 1 else ''}" for n in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for model in models:
        for encoding in encodings:
            texts = []
            for nes in budgets:
                counts = Counter(r["chosen"] for r in rows if r["authorized"] == model and r["encoding"] == encoding and r["nes"] == nes)
                texts.append(", ".join(f"{name} {k}" for name, k in counts.most_common()))
            out.append(f"| {model} | {encoding} | " + " | ".join(texts) + " |")
    matrix: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r["authorized"] in scored:
            matrix[r["authorized"]][r["chosen"]] += 1
    out += [
        "",
        "Confusion matrix on the five 28x28 models, all encodings and budgets pooled (rows: authorized; columns: named first).",
        "",
        "| authorized \\ named | " + " | ".join(scored) + " |",
        "|---|" + "---|" * len(scored),
    ]
    for model in scored:
        out.append(f"| {model} | " + " | ".join(str(matrix[model][c]) for c in scored) + " |")
    named: Counter = Counter(r["chosen"] for r in rows if r["authorized"] in scored)
    out += [
        "",
        "When `identify` names a candidate, how often that candidate is the authorized model (five 28x28 models, all encodings and budgets):",
        "",
    ]
    for candidate in scored:
        if named[candidate]:
            out.append(f"- {candidate}: {rate(matrix[candidate][candidate], named[candidate])}")
    out += [
        "",
        "## Without NE noise",
        "",
        "What `identify` names on the clean releases of the five 28x28 models (the `clean` encoding, every key): its "
        "choice when the release carries no low-sensitivity noise.",
        "",
    ]
    for nes in budgets:
        counts = {name: k for (b, name), k in clean.items() if b == nes}
        out.append(f"- {nes} NE{'s' if nes > 1 else ''}: " + ", ".join(f"{name} {k}" for name, k in sorted(counts.items(), key=lambda kv: -kv[1])))
    return "\n".join(out) + "\n"


def stems() -> str:
    """Does any pair of zoo models share a first layer? Pixel-space V_N per stem tile (the subspace `identify` scores)
    of every pair with the same input size and tile size: the cosines of their principal angles (1 = shared)."""
    import itertools

    import torch

    from nonxfer_bench.attacks._subspace_tools import first_layer_tiles
    from nonxfer_bench.loading import load_zoo
    from nonxfer_bench.zoo import build_model

    zoo = load_zoo(HERE.parent.parent / "suites" / "zoo" / "fashion.yaml")
    models = {spec.name: build_model(spec) for spec in zoo.models}
    bases = {name: first_layer_tiles(model, 1e-5)[1] for name, model in models.items()}
    out = [
        "## Shared first layers",
        "",
        "V_N (tau 1e-5) per model: "
        + ", ".join(f"{name} {tuple(models[name].input_size)} D = {b.shape[0]}, k = {b.shape[1]}" for name, b in bases.items())
        + ". Pairs with the same input size and tile size, cosines of the principal angles between their V_N "
        "(a shared stem gives all 1; random subspaces of R^D give a mean squared cosine over the min(k) angles of max(k)/D; "
        "resnet's tiles sit at another offset of the image than the ViTs', so that pair compares kernel-space directions only):",
        "",
    ]
    for a, b in itertools.combinations(bases, 2):
        if tuple(models[a].input_size) != tuple(models[b].input_size) or bases[a].shape[0] != bases[b].shape[0]:
            continue
        cosines = torch.linalg.svdvals(bases[a].T @ bases[b])
        out.append(
            f"- {a} / {b}: largest {float(cosines[0]):.3f}, mean squared {float((cosines**2).mean()):.3f} "
            f"(random: {max(bases[a].shape[1], bases[b].shape[1]) / bases[a].shape[0]:.3f})"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    cells = results_cells(HERE)
    out = report(trials(cells), clean_choices(cells)) + "\n" + stems()
    print(out, end="")
    if "--write" in sys.argv[1:]:
        (HERE / "IDENTIFICATION.md").write_text(out)


if __name__ == "__main__":
    main()
