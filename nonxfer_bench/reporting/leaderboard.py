"""Leaderboards: the suite's cells as a long CSV and a Markdown summary, sorted and formatted stably.

``leaderboard.md`` opens with ``partial: X of Y planned cells`` when the cells are not all of the suite's plan, then
what was run (:mod:`nonxfer_bench.reporting.provenance`: suite, images, seeds, counts, precision, device, code
version, date of the newest cell; nothing from the clock) and the units (% for people, fractions in cells.csv). Tables:
0. *Protection ranking*, the headline: one protection gap per release with its interval, ranked best first,
   beside PSNR and SSIM (:mod:`nonxfer_bench.reporting.ranking`).
1. *NE effect*: per (authorized model, encoder, strength) with no attack: achieved standard PSNR,
   authorized accuracy, its retention (% of the authorized model's clean accuracy), the reference's
   flat-input accuracy for overlapping stems, the mean and
   max unauthorized accuracy, and every model's accuracy.
2. *Attacks*: the same rows per attack step: authorized accuracy, mean and max unauthorized accuracy,
   the attacked images' PSNR against the clean ones.
3. *Theory* (when identity cells carry ``bound/`` numbers, see ``nonxfer_bench/linalg/bounds.py``): per encoding
   the authorized bound ratios, per unauthorized model misalignment / Hoffman-Wielandt ratio / first-layer
   response, and the Spearman correlation of misalignment with the accuracy drop; two PNG plots
   (``theory_pred_vs_obs.png``, ``theory_misalignment_vs_drop.png``) are written beside it.

Beside the tables: the accuracy plots of :mod:`nonxfer_bench.plots` (accuracy vs encoder strength, the
transfer heatmap, accuracy vs attack strength). The cells come from the suite's cell store or, read back
from MLflow, from :mod:`nonxfer_bench.readback`: both feed the same :func:`write_leaderboard`.

The NE-effect table also names, per encoding, the *strongest attack*: the attack step (any attack of the
suite at any strength, ``identity`` included) with the highest mean unauthorized accuracy, with that mean
and the authorized accuracy it leaves (:func:`strongest_attack`); ``no attack`` names the identity step everywhere.
Per-model columns mark the authorized model's value ``(auth)``. With several precisions (part of the cell key)
each precision is its own row, with a ``precision`` column.

Models a suite names as ``controls`` (e.g. random-weight twins) keep their own columns but are never
counted as unauthorized (means, maxima, strongest attack).

Every accuracy or agreement is shown with its 95% interval as ``83.5 [78.1, 87.9]`` and every table has
an ``n`` column (images per cell) and a glossary line under it (:mod:`nonxfer_bench.reporting.uncertainty`).
With several seeds, ``seeds`` and the between-seed spread (``seed sd``) are added. cells.csv keeps its
columns: intervals follow from its ``n`` and the proportion. Where cells keep per-image outcomes, the
unauthorized mean and max get a paired bootstrap over images, each attack row its change against no attack
(``Δ``, ``p``: Newcombe and exact McNemar for the authorized model, bootstrap and sign-flip test for the
unauthorized mean) and the strongest attack its gain with a Holm-adjusted p; without outcomes those show ``—``.

A missing accuracy (an unlabeled dataset) renders blank; when no cell has an accuracy, the tables show
agreement with each model's own clean prediction instead, and say so.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from nonxfer_bench.core.atomic import atomic_write
from nonxfer_bench.core.cell import Cell, param_text, step_texts
from nonxfer_bench.core.errors import UserError
from nonxfer_bench.execution.store import gunzipped, gzipped_lines, lines
from nonxfer_bench.metrics.statistics import holm, seed_summary
from nonxfer_bench.reporting.provenance import Source, run_summary
from nonxfer_bench.reporting.ranking import gap_text, protection_rows, step_label
from nonxfer_bench.reporting.uncertainty import (
    BOOTSTRAP_RESAMPLES,
    aggregate_intervals,
    gain_over_baseline,
    gain_text,
    metric_n,
    p_text,
    percent,
    proportion_interval,
    with_interval,
)

CELL_COLUMNS = [
    "authorized", "encoder", "strength", "seed", "attack", "attack_strength", "attack_param", "model", "role",
    "accuracy", "agreement", "accuracy_flat", "accuracy_worst", "accuracy_spread", "draws",
    "storage", "encoded_psnr", "encoded_psnr_min", "stored_psnr", "attacked_psnr", "attacked_ssim", "n", "key",
]  # fmt: skip
RESULTS_CELLS = "cells.jsonl.gz"  # the cells of a results folder, per-image outcomes included, gzipped (byte-stable)
LEGACY_RESULTS_CELLS = "cells.jsonl"  # results folders written before they were gzipped


def write_results_cells(path: Path, cells: list[Cell]) -> None:
    """``cells`` gzipped at ``path``, left as it is when it already holds exactly these lines (another zlib, e.g.
    macOS's, writes other bytes for the same text: a rebuild must not change a committed file for nothing)."""
    text = lines(cells).encode()
    with contextlib.suppress(UserError):
        if path.is_file() and gunzipped(path, limit=len(text)) == text:
            return
    atomic_write(path, gzipped_lines(cells))


def results_cells(folder: Path) -> Path:
    """A results folder's cells file: ``cells.jsonl.gz``, or ``cells.jsonl`` in a folder written before."""
    legacy = folder / LEGACY_RESULTS_CELLS
    return legacy if legacy.is_file() and not (folder / RESULTS_CELLS).is_file() else folder / RESULTS_CELLS
EXTRA_COLUMNS = ["baseline", "n_labeled", "outcomes", "precision", "device", "code", "cell_param"]  # in the frame (no-attack step; intervals, paired tests; what ran), not in cells.csv
ENCODING = ["authorized", "encoder", "strength", "precision"]  # one release: a precision is part of the cell key


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell: the ``CELL_COLUMNS`` of ``cells.csv`` plus ``EXTRA_COLUMNS``."""
    frame = pd.DataFrame([cell.record() | {"attack_param": step, "cell_param": param_text(cell.attack_param)} for cell, step in zip(cells, step_texts(cells))])
    for column in CELL_COLUMNS + EXTRA_COLUMNS:
        if column not in frame:
            frame[column] = None
    if "storage" in frame:  # an encoding stored in another format is its own row: "patch/png8"
        stored = frame["storage"].notna() & (frame["storage"] != "float32")
        frame.loc[stored, "encoder"] = frame.loc[stored, "encoder"] + "/" + frame.loc[stored, "storage"]
    frame["precision"] = frame["precision"].fillna("fp32")  # fp32 records leave it out
    for column in ("accuracy", "agreement", "accuracy_flat"):  # None (unlabeled) becomes NaN
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame[CELL_COLUMNS + EXTRA_COLUMNS]
    return frame.sort_values(["authorized", "encoder", "strength", "seed", "attack", "attack_strength", "model"], kind="stable").reset_index(drop=True)


def _db(value: float | None) -> str:
    return "inf" if value is None or pd.isna(value) else f"{value:.1f}"


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _encoding_label(encoder: str, strength: float) -> str:
    return encoder if encoder == "clean" else f"{encoder} {strength:g}"


def _ci(value: float | None, n: int | None) -> str:
    return with_interval(proportion_interval(value, n))


def _n_text(part: pd.DataFrame, metric: str) -> str:
    n = metric_n(part, metric)
    return "" if n is None else str(n)


def _seed_columns(part: pd.DataFrame, authorized: str, metric: str) -> dict[str, str]:
    """Seeds and the between-seed spread (sample sd, points) of the authorized and the mean unauthorized value."""
    per_seed = part.groupby(["seed", "model"])[metric].mean().unstack("model")
    unauthorized = per_seed[[m for m in _unauthorized_models(part) if m in per_seed]]
    spreads = {
        f"{_auth(metric)} seed sd": seed_summary(per_seed[authorized].dropna())[1] if authorized in per_seed else float("nan"),
        "unauth mean seed sd": seed_summary(unauthorized.mean(axis=1).dropna())[1] if not unauthorized.empty else float("nan"),
    }
    return {"seeds": str(part.seed.nunique())} | {name: "" if pd.isna(sd) else f"{100 * sd:.1f}" for name, sd in spreads.items()}


def _unauthorized_columns(part: pd.DataFrame, metric: str) -> dict[str, str]:
    """``unauth mean`` and ``unauth max`` (with the model) with their intervals."""
    models = _unauthorized_models(part)
    mean, maximum = aggregate_intervals(part, models, metric)
    values = part[part.model.isin(models)].groupby("model")[metric].mean().dropna()
    return {"unauth mean": with_interval(mean), "unauth max": f"{with_interval(maximum)} ({values.idxmax()})" if len(values) else ""}


def _paired_columns(baseline: pd.DataFrame, part: pd.DataFrame, authorized: str, metric: str) -> dict[str, str]:
    """An attack step against no attack on the same encoding, images and seeds: the change and its p-value,
    for the authorized model and for the mean over unauthorized models."""
    auth = gain_over_baseline(baseline, part, [authorized], metric)
    unauthorized = gain_over_baseline(baseline, part, _unauthorized_models(part), metric)
    return {
        "auth Δ": gain_text(auth),
        "auth p": p_text(None if auth is None else auth.p),
        "unauth mean Δ": gain_text(unauthorized),
        "unauth p": p_text(None if unauthorized is None else unauthorized.p),
    }


def _against_clean(plain: pd.DataFrame, part: pd.DataFrame, authorized: str, encoder: str, metric: str) -> dict[str, str]:
    """The NE against the clean images (no attack, same authorized model, images and seeds): the change for the
    authorized model and for the mean over unauthorized models, with its p-value; blank on the clean row."""
    same = (plain.authorized == authorized) & plain.precision.isin(part.precision.unique()) & plain.seed.isin(part.seed.unique())
    clean = plain[same & (plain.encoder == "clean")]
    if encoder == "clean" or clean.empty:
        return {"auth Δ vs clean": "", "unauth mean Δ vs clean": "", "p vs clean (auth; unauth)": ""}
    auth = gain_over_baseline(clean, part, [authorized], metric)
    unauthorized = gain_over_baseline(clean, part, _unauthorized_models(part), metric)
    return {
        "auth Δ vs clean": gain_text(auth),
        "unauth mean Δ vs clean": gain_text(unauthorized),
        "p vs clean (auth; unauth)": f"{p_text(None if auth is None else auth.p)}; {p_text(None if unauthorized is None else unauthorized.p)}",
    }


def _strongest_gain(part: pd.DataFrame, best: dict, metric: str) -> dict[str, str]:
    """The strongest attack's gain in mean unauthorized ``metric`` over no attack, and its p-value adjusted
    (Holm) for the number of attack steps it was chosen from; blank when no attack beat no attack."""
    keys = ["attack", "attack_strength", "attack_param"]
    baseline, models = part[part.baseline], _unauthorized_models(part)
    gains = {step: gain_over_baseline(baseline, cells, models, metric) for step, cells in part[~part.baseline].groupby(keys, sort=True)}
    chosen = (best["attack"], best["attack_strength"], best["attack_param"])
    if chosen not in gains:
        return {"strongest: gain": "", "strongest: p (Holm)": ""}
    adjusted = None if any(gain is None for gain in gains.values()) else holm([gain.p for gain in gains.values()])
    return {
        "strongest: gain": gain_text(gains[chosen]),
        "strongest: p (Holm)": p_text(None if adjusted is None else float(adjusted[list(gains).index(chosen)]), verdict=True),
    }


def glossary(metric: str, seeds: bool, paired: bool, strongest: bool) -> str:
    """The line under a table: what n, the intervals, the paired tests and the seed spread are; ``strongest``
    for the NE-effect table (its strongest-attack gain), else the attack table (its change columns)."""
    unit = "labeled images" if metric == "accuracy" else "images"
    text = (
        f"`n`: {unit} per cell. `x [lo, hi]`: the {metric} in % and its Wilson 95% score interval for a proportion "
        "of n images. Means over seeds or attack draws use Wilson's interval at the mean with n images: "
        "conservative, since those proportions share the images."
    )
    if paired:
        text += (
            f" `unauth mean` and `unauth max`: a paired bootstrap over images ({BOOTSTRAP_RESAMPLES:,} resamples, the "
            "same for every model, 95% percentile interval), which accounts for picking the max."
        )
    else:
        text += (
            " `unauth mean`: Wilson at the mean, conservative in the same way; `unauth max`: the interval of that "
            "model's own value, which ignores that it was picked as the largest."
        )
    change = "`strongest: gain`: the strongest attack's gain in `unauth mean`" if strongest else "`Δ`: the change"
    if strongest:
        text += (
            " `Δ vs clean`: the NE (no attack) against the clean images for the same model(s), images and seeds, in points "
            "with its 95% interval and two-sided p-value (exact McNemar for one model, seed and draw; else a paired sign-flip "
            "test over images)."
        )
        text += (
            " `strongest attack`: the attack step (of any attack and strength) that raises `unauth mean` most; `no attack` "
            "if none does. In the per-model columns, `(auth)` marks the authorized model's value."
        )
    text += (
        f" {change} against no attack on the same images, encoding and seeds, in points, with a 95% interval "
        "(one model, seed and draw: Newcombe's method 10; a mean over models, seeds or draws: the paired bootstrap "
        "over images)."
    )
    if strongest:
        text += (
            " `strongest: p (Holm)`: its two-sided p-value (as in the attack table) adjusted by Holm's method for the "
            "number of attack steps it was chosen from, `not significant` when p >= 0.05; both blank when no attack "
            "beats no attack."
        )
    else:
        text += (
            " `p`: two-sided, from the same image pairs: the exact McNemar test for one model, seed and draw, else a "
            "sign-flip test (normal approximation); not adjusted for the number of rows."
        )
    if not paired:
        text += " `—`: a paired test needs per-image outcomes, which this store does not keep (rerun the suite to record them)."
    if seeds:
        text += " `seed sd`: the sample standard deviation between seeds, in points."
    return text


def _auth(metric: str) -> str:
    return "auth acc" if metric == "accuracy" else "auth agree"


def strongest_attack(part: pd.DataFrame, authorized: str, metric: str = "accuracy") -> dict | None:
    """The attack step with the highest mean unauthorized ``metric`` on one encoding's cells (mean over seeds).

    Ties go to the step that leaves the authorized model more, then to the first label in sort order.
    Returns attack, attack_strength, attack_param, label (``name strength``; ``no attack`` for identity),
    unauth_mean, unauth_max, unauth_max_model, auth, attacked_psnr and n (images per cell, for intervals);
    None without unauthorized cells.
    """
    keys = ["attack", "attack_strength", "attack_param"]
    unauthorized = part[(part.model != authorized) & (part.role != "control")].dropna(subset=[metric])
    if unauthorized.empty:
        return None
    per_model = unauthorized.groupby(keys + ["model"])[metric].mean()
    auth = part[part.model == authorized].groupby(keys)[metric].mean()
    candidates = []
    for step, values in per_model.groupby(level=keys, sort=True):
        values = values.droplevel(keys)
        auth_value = auth.get(step, float("nan"))
        candidates.append((-values.mean(), -(auth_value if pd.notna(auth_value) else -1.0), step, values, auth_value))
    _, _, (attack, attack_strength, param), values, auth_value = min(candidates, key=lambda c: (c[0], c[1]))
    chosen = part[(part.attack == attack) & (part.attack_strength == attack_strength) & (part.attack_param == param)]
    baseline = bool(chosen.baseline.all())
    return {
        "attack": attack,
        "attack_strength": float(attack_strength),
        "attack_param": param,
        "label": step_label(attack, attack_strength, baseline),
        "unauth_mean": float(values.mean()),
        "unauth_max": float(values.max()),
        "unauth_max_model": str(values.idxmax()),
        "auth": None if pd.isna(auth_value) else float(auth_value),
        "attacked_psnr": None if chosen["attacked_psnr"].isna().all() else float(chosen["attacked_psnr"].mean()),
        "n": metric_n(chosen, metric),
    }


def _model_value(part: pd.DataFrame, model: str, authorized: str, metric: str) -> str:
    """A per-model column's value with its interval; the authorized model's value is marked ``(auth)``."""
    cells = part[part.model == model]
    text = _ci(cells[metric].mean() if len(cells) else None, metric_n(cells, metric))
    return f"{text} (auth)" if text and model == authorized else text


def protection_table(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Table 0, the headline: releases ranked by protection gap (:mod:`nonxfer_bench.reporting.ranking`)."""
    seeds, precisions = frame.seed.nunique() > 1, frame.precision.nunique() > 1
    devices = frame.device.nunique() > 1 or (frame.device.isna().any() and frame.device.notna().any())
    rows = []
    for rank, row in enumerate(protection_rows(frame, metric, ENCODING), 1):
        rows.append(
            {"rank": rank, "authorized": row["authorized"], "encoding": _encoding_label(row["encoder"], row["strength"])}
            | ({"precision": row["precision"]} if precisions else {})
            | {
                "protection gap": gap_text(row["gap"], row["gap_interval"]),
                "n": "" if row["n"] is None else str(row["n"]),
                _auth(metric): with_interval(row["auth"]),
                f"best unauth {_short(metric)}": with_interval(row["best"]),
                "by attack": row["attack"],
                "by model": row["model"],
                "PSNR dB": _db(row["psnr"]),
                "SSIM": "" if row["ssim"] is None else f"{row['ssim']:.3f}",
            }
            | ({"seeds": str(row["seeds"]), "gap seed sd": "" if pd.isna(row["seed_sd"]) else f"{100 * row['seed_sd']:.1f}"} if seeds else {})
            | ({"device": ", ".join(row["devices"]) or "not recorded"} if devices else {})
        )
    return pd.DataFrame(rows)


def _short(metric: str) -> str:
    return "acc" if metric == "accuracy" else "agree"


def ranking_text(metric: str, paired: bool, seeds: bool) -> tuple[str, str]:
    """(the sentence above the ranking, the glossary line under it)."""
    above = (
        f"Score: the **protection gap** = the authorized model's {metric} on the release minus the best {metric} any "
        f"unauthorized model reaches on it under the strongest attack, in points; a gap near 0 or negative means no "
        "protection (someone without the authorized model does as well). Best first; `clean` is not a release."
    )
    unit = "labeled images" if metric == "accuracy" else "images"
    below = (
        f"`n`: {unit} per cell. `{_auth(metric)}`: on the release, with Wilson's 95% interval. "
        "`by attack`: the strongest attack for that release, the attack step (any attack and strength of the suite, "
        f"`no attack` included) that raises the best unauthorized {metric} most; `by model`: the unauthorized model "
        f"that reaches it (controls never count). `best unauth {_short(metric)}`: that model's {metric} under that step. "
        "`PSNR dB` and `SSIM` (kornia, 7-pixel Gaussian window): the release (as stored) against the clean images, mean "
        "over images; higher is less visible."
    )
    if paired:
        below += (
            f" Intervals: 95% paired bootstrap over images ({BOOTSTRAP_RESAMPLES:,} resamples) of the authorized minus "
            "the max over every attack step and unauthorized model, so picking the worst case is part of the interval."
        )
    else:
        below += " The gap has no interval here: it needs per-image outcomes, which this store does not keep (rerun the suite to record them)."
    if seeds:
        below += " With several seeds: accuracies are means over seeds (the gap is the mean of the per-seed gaps) and `gap seed sd` is the sample standard deviation of the per-seed gaps, in points."
    return above, below


def _unauthorized_models(part: pd.DataFrame) -> list[str]:
    """The models counted in unauthorized means and maxima: neither authorized nor a control."""
    return sorted(part.loc[part.role == "unauthorized", "model"].unique())


def effect_table(frame: pd.DataFrame, models: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """Table 1: what each encoding does with no attack (mean over seeds), and its strongest attack."""
    plain = frame[frame.baseline]
    clean = plain[(plain.encoder == "clean") & (plain.model == plain.authorized)].groupby(["authorized", "precision"])[metric].mean()
    releases = dict(list(frame.groupby(ENCODING, sort=True)))
    strongest = {key: strongest_attack(part, key[0], metric) for key, part in releases.items()}
    several = frame.precision.nunique() > 1
    rows = []
    for (authorized, encoder, strength, precision), part in plain.groupby(ENCODING, sort=True):
        clean_auth = clean.get((authorized, precision), 0)
        mean = part.groupby("model")[metric].mean()
        authorized_part = part[part.role == "authorized"]
        flat = authorized_part["accuracy_flat"].dropna()
        row = {
            "authorized": authorized,
            "encoding": _encoding_label(encoder, strength),
        } | ({"precision": precision} if several else {}) | {
            "n": _n_text(part, metric),
            "PSNR dB": _db(part["encoded_psnr"].mean()),
            _auth(metric): _ci(mean[authorized], metric_n(authorized_part, metric)),
            "auth retention": percent(mean[authorized] / clean_auth) if clean_auth > 0 else "",
            "auth acc (flat input)": _ci(flat.mean(), metric_n(authorized_part, "accuracy")) if len(flat) else "",
        } | _unauthorized_columns(part, metric)
        best = strongest.get((authorized, encoder, strength, precision))
        encoding = releases[(authorized, encoder, strength, precision)]
        chosen = None
        if best is not None:
            step = (encoding.attack == best["attack"]) & (encoding.attack_strength == best["attack_strength"]) & (encoding.attack_param == best["attack_param"])
            chosen = encoding[step]
        row |= {
            "strongest attack": best["label"] if best else "",
            "strongest: unauth mean": with_interval(aggregate_intervals(chosen, _unauthorized_models(chosen), metric)[0]) if best else "",
            f"strongest: {_auth(metric)}": _ci(best["auth"], best["n"]) if best else "",
        }
        row |= _against_clean(plain, part, authorized, encoder, metric)
        row |= _strongest_gain(encoding, best, metric) if best else {"strongest: gain": "", "strongest: p (Holm)": ""}
        if frame.seed.nunique() > 1:
            row |= _seed_columns(part, authorized, metric)
        row |= {model: _model_value(part, model, authorized, metric) for model in models}
        rows.append(row)
    return pd.DataFrame(rows)


def attack_table(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Table 2: every attack step on every encoding (mean over seeds)."""
    rows = []
    keys = [*ENCODING, "attack", "attack_strength", "attack_param"]
    baselines = dict(list(frame[frame.baseline].groupby(ENCODING, sort=True)))
    several = frame.precision.nunique() > 1
    for (authorized, encoder, strength, precision, attack, attack_strength, param), part in frame.groupby(keys, sort=True):
        is_baseline = bool(part.baseline.all())
        mean = part.groupby("model")[metric].mean()
        baseline = baselines.get((authorized, encoder, strength, precision))
        paired = {} if is_baseline or baseline is None else _paired_columns(baseline, part, authorized, metric)
        seeds = _seed_columns(part, authorized, metric) if frame.seed.nunique() > 1 else {}
        rows.append(
            {
                "authorized": authorized,
                "encoding": _encoding_label(encoder, strength),
            }
            | ({"precision": precision} if several else {})
            | {
                "attack": step_label(attack, attack_strength, is_baseline),
                "param": param,
                "n": _n_text(part, metric),
                "attacked PSNR dB": _db(part["attacked_psnr"].mean()),
                _auth(metric): _ci(mean[authorized], metric_n(part[part.model == authorized], metric)),
            }
            | _unauthorized_columns(part, metric)
            | {name: paired.get(name, "") for name in ("auth Δ", "auth p", "unauth mean Δ", "unauth p")}
            | seeds
        )
    return pd.DataFrame(rows)


def write_leaderboard(suite_name: str, cells: list[Cell], models: list[str], folder: Path, notes: str = "", source: Source | None = None) -> list[Path]:
    """Write ``cells.csv``, ``cells.jsonl.gz`` and ``leaderboard.md`` (and the plots) under ``folder``; returns the
    paths to show and log (all but ``cells.jsonl.gz``, which MLflow holds per group as ``cells.json``).

    ``cells.jsonl.gz`` holds the cells as the store does, per-image outcomes included, so that ``leaderboard`` and
    ``report`` rebuild every table and interval from a results folder alone (a fresh clone has no ``runs/``);
    gzipped without a time stamp, so the same cells give the same bytes (results folders stay small in git).

    ``source`` (the suite file and when the newest cell was written) completes the "What was run" line; a partial
    set of the suite's cells (``source.partial``) is said above it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    frame = cells_frame(cells)
    csv_path, md_path = folder / "cells.csv", folder / "leaderboard.md"
    metric = "accuracy" if frame["accuracy"].notna().any() else "agreement"
    controls = sorted(frame.loc[frame.role == "control", "model"].unique())
    seeds = frame.seed.nunique() > 1
    paired = frame["outcomes"].map(lambda outcomes: isinstance(outcomes, dict)).any()
    if controls:
        notes = f"**Controls** ({', '.join(controls)}) are listed per model but never counted in `unauth mean` / `unauth max`.\n\n" + notes
    if metric == "agreement":
        notes = (
            "**Unlabeled dataset**: accuracy is not defined, so the tables show *agreement* (%): how often a "
            "model's prediction on the released/attacked image equals its own prediction on the clean image. "
            "The `clean` rows are 100 by definition.\n\n" + notes
        )
    per_cell = frame.assign(attack_param=frame.cell_param)  # cells.csv: each cell's own parameters, measurements included
    atomic_write(csv_path, per_cell.drop(columns=["key", *EXTRA_COLUMNS]).to_csv(index=False, float_format="%.4f"))
    write_results_cells(folder / RESULTS_CELLS, sorted(cells, key=lambda cell: cell.key))
    above, below = ranking_text(metric, paired, seeds)
    text = [
        f"# Leaderboard: {suite_name}",
        "",
        *([f"**{source.partial}**: the tables cover only these cells.", ""] if source and source.partial else []),
        run_summary(suite_name, frame, source),
        "",
        "Every accuracy, agreement and retention here is in % and every change or gap in percentage points; the "
        "machine-readable files (cells.csv, verify.json) keep fractions in [0, 1]. Accuracies are top-1. PSNR is "
        "standard PSNR (peak 1, [0, 1] pixels) of the released images against the clean ones. Strength: nominal PSNR "
        "for `reference`, standard PSNR for the others. `flat input` is the published protocol for overlapping stems "
        "(the authorized model fed the unfolded tensor directly). `auth retention`: authorized accuracy as a % of its "
        "clean accuracy. Generated by `nonxfer-bench`; per-cell values in cells.csv.",
        "",
        notes,
        "## Protection ranking",
        "",
        above,
        "",
        _markdown(protection_table(frame, metric)),
        "",
        below,
        "",
        "## NE effect (no attack)",
        "",
        _markdown(effect_table(frame, models, metric)),
        "",
        glossary(metric, seeds, paired, strongest=True),
        "",
        "## Attacks",
        "",
        _markdown(attack_table(frame, metric)),
        "",
        glossary(metric, seeds, paired, strongest=False),
        "",
    ]
    from nonxfer_bench.reporting.theory import theory_markdown, write_theory_plots

    records = [cell.record() for cell in cells]
    theory = theory_markdown(records)  # table 3: bound tightness, from the identity cells' bound/ numbers
    if theory:
        text += ["## Theory", "", theory, ""]
    from nonxfer_bench.reporting.ladder import ladder_markdown

    text += ladder_markdown(cells)  # adversary ladder, cheapest break, identification (cells with a threat tier)
    atomic_write(md_path, "\n".join(text))
    from nonxfer_bench.reporting.plots import write_plots

    return [md_path, csv_path, *write_theory_plots(records, folder), *write_plots(frame, models, metric, folder, cells)]

