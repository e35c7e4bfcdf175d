"""Leaderboards: the suite's cells as a long CSV and a Markdown summary, sorted and formatted stably.

Tables in ``leaderboard.md``:
1. *NE effect*: per (authorized model, encoder, strength) with no attack: achieved standard PSNR,
   authorized accuracy, its retention (% of the authorized model's clean accuracy), the reference's
   flat-input accuracy for overlapping stems, the mean and
   max unauthorized accuracy, and every model's accuracy.
2. *Attacks*: the same rows per attack step: authorized accuracy, mean and max unauthorized accuracy,
   the attacked images' PSNR against the clean ones.
3. *Theory* (when identity cells carry ``bound/`` numbers, see ``nonxfer_bench/bounds.py``): per encoding
   the authorized bound ratios, per unauthorized model misalignment / Hoffman-Wielandt ratio / first-layer
   response, and the Spearman correlation of misalignment with the accuracy drop; two PNG plots
   (``theory_pred_vs_obs.png``, ``theory_misalignment_vs_drop.png``) are written beside it.

Beside the tables: the accuracy plots of :mod:`nonxfer_bench.plots` (accuracy vs encoder strength, the
transfer heatmap, accuracy vs attack strength). The cells come from the suite's cell store or, read back
from MLflow, from :mod:`nonxfer_bench.readback`: both feed the same :func:`write_leaderboard`.

The NE-effect table also names, per encoding, the *strongest attack*: the attack step (any attack of the
suite at any strength, ``identity`` included) with the highest mean unauthorized accuracy, with that mean
and the authorized accuracy it leaves (:func:`strongest_attack`).

Models a suite names as ``controls`` (e.g. random-weight twins) keep their own columns but are never
counted as unauthorized (means, maxima, strongest attack).

A missing accuracy (an unlabeled dataset) renders blank; when no cell has an accuracy, the tables show
agreement with each model's own clean prediction instead, and say so.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from nonxfer_bench.core.cell import Cell

CELL_COLUMNS = [
    "authorized", "encoder", "strength", "seed", "attack", "attack_strength", "attack_param", "model", "role",
    "accuracy", "agreement", "accuracy_flat", "accuracy_worst", "accuracy_spread", "draws",
    "storage", "encoded_psnr", "encoded_psnr_min", "stored_psnr", "attacked_psnr", "attacked_ssim", "n", "key",
]  # fmt: skip


def cells_frame(cells: list[Cell]) -> pd.DataFrame:
    """One row per cell: the ``CELL_COLUMNS`` of ``cells.csv`` plus ``baseline`` (the no-attack step)."""
    frame = pd.DataFrame([cell.record() for cell in cells])
    for column in CELL_COLUMNS:
        if column not in frame:
            frame[column] = None
    if "storage" in frame:  # an encoding stored in another format is its own row: "patch/png8"
        stored = frame["storage"].notna() & (frame["storage"] != "float32")
        frame.loc[stored, "encoder"] = frame.loc[stored, "encoder"] + "/" + frame.loc[stored, "storage"]
    frame["attack_param"] = frame["attack_param"].map(lambda p: " ".join(f"{k}={v}" for k, v in sorted(p.items())) if isinstance(p, dict) else "")
    for column in ("accuracy", "agreement", "accuracy_flat"):  # None (unlabeled) becomes NaN
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame = frame[CELL_COLUMNS + ["baseline"]]
    return frame.sort_values(["authorized", "encoder", "strength", "seed", "attack", "attack_strength", "model"], kind="stable").reset_index(drop=True)


def _pct(value: float | None) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.1f}"


def _db(value: float | None) -> str:
    return "inf" if value is None or pd.isna(value) else f"{value:.1f}"


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _encoding_label(encoder: str, strength: float) -> str:
    return encoder if encoder == "clean" else f"{encoder} {strength:g}"


def _max_with_model(values: pd.Series) -> str:
    values = values.dropna()
    return f"{_pct(values.max())} ({values.idxmax()})" if len(values) else ""


def _auth(metric: str) -> str:
    return "auth acc" if metric == "accuracy" else "auth agree"


def strongest_attack(part: pd.DataFrame, authorized: str, metric: str = "accuracy") -> dict | None:
    """The attack step with the highest mean unauthorized ``metric`` on one encoding's cells (mean over seeds).

    Ties go to the step that leaves the authorized model more, then to the first label in sort order.
    Returns attack, attack_strength, attack_param, label (``name strength``; ``none`` for identity),
    unauth_mean, unauth_max, unauth_max_model, auth and attacked_psnr; None without unauthorized cells.
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
        "label": "none" if baseline else f"{attack} {attack_strength:g}",
        "unauth_mean": float(values.mean()),
        "unauth_max": float(values.max()),
        "unauth_max_model": str(values.idxmax()),
        "auth": None if pd.isna(auth_value) else float(auth_value),
        "attacked_psnr": None if chosen["attacked_psnr"].isna().all() else float(chosen["attacked_psnr"].mean()),
    }


def _unauthorized_models(part: pd.DataFrame) -> list[str]:
    """The models counted in unauthorized means and maxima: neither authorized nor a control."""
    return sorted(part.loc[part.role == "unauthorized", "model"].unique())


def effect_table(frame: pd.DataFrame, models: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """Table 1: what each encoding does with no attack (mean over seeds), and its strongest attack."""
    plain = frame[frame.baseline]
    clean = plain[(plain.encoder == "clean") & (plain.model == plain.authorized)].groupby("authorized")[metric].mean()
    strongest = {
        key: strongest_attack(part, key[0], metric) for key, part in frame.groupby(["authorized", "encoder", "strength"], sort=True)
    }
    rows = []
    for (authorized, encoder, strength), part in plain.groupby(["authorized", "encoder", "strength"], sort=True):
        mean = part.groupby("model")[metric].mean()
        unauthorized = mean[_unauthorized_models(part)]
        flat = part[(part.role == "authorized")]["accuracy_flat"].dropna()
        row = {
            "authorized": authorized,
            "encoding": _encoding_label(encoder, strength),
            "PSNR dB": _db(part["encoded_psnr"].mean()),
            _auth(metric): _pct(mean[authorized]),
            "auth retention": _pct(mean[authorized] / clean[authorized]) if clean.get(authorized, 0) > 0 else "",
            "auth acc (flat input)": _pct(flat.mean()) if len(flat) else "",
            "unauth mean": _pct(unauthorized.mean()),
            "unauth max": _max_with_model(unauthorized) if len(unauthorized) else "",
        }
        best = strongest.get((authorized, encoder, strength))
        row |= {
            "strongest attack": best["label"] if best else "",
            "strongest: unauth mean": _pct(best["unauth_mean"]) if best else "",
            f"strongest: {_auth(metric)}": _pct(best["auth"]) if best else "",
        }
        row |= {model: _pct(mean.get(model)) for model in models}
        rows.append(row)
    return pd.DataFrame(rows)


def attack_table(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Table 2: every attack step on every encoding (mean over seeds)."""
    rows = []
    keys = ["authorized", "encoder", "strength", "attack", "attack_strength", "attack_param"]
    for (authorized, encoder, strength, attack, attack_strength, param), part in frame.groupby(keys, sort=True):
        baseline = bool(part.baseline.all())
        mean = part.groupby("model")[metric].mean()
        unauthorized = mean[_unauthorized_models(part)]
        rows.append(
            {
                "authorized": authorized,
                "encoding": _encoding_label(encoder, strength),
                "attack": "none" if baseline else f"{attack} {attack_strength:g}",
                "param": param,
                "attacked PSNR dB": _db(part["attacked_psnr"].mean()),
                _auth(metric): _pct(mean[authorized]),
                "unauth mean": _pct(unauthorized.mean()),
                "unauth max": _max_with_model(unauthorized) if len(unauthorized) else "",
            }
        )
    return pd.DataFrame(rows)


def write_leaderboard(suite_name: str, cells: list[Cell], models: list[str], folder: Path, notes: str = "") -> list[Path]:
    """Write ``cells.csv`` and ``leaderboard.md`` under ``folder``; returns the written paths."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = cells_frame(cells)
    csv_path, md_path = folder / "cells.csv", folder / "leaderboard.md"
    metric = "accuracy" if frame["accuracy"].notna().any() else "agreement"
    controls = sorted(frame.loc[frame.role == "control", "model"].unique())
    if controls:
        notes = f"**Controls** ({', '.join(controls)}) are listed per model but never counted in `unauth mean` / `unauth max`.\n\n" + notes
    if metric == "agreement":
        notes = (
            "**Unlabeled dataset**: accuracy is not defined, so the tables show *agreement* (%): how often a "
            "model's prediction on the released/attacked image equals its own prediction on the clean image. "
            "The `clean` rows are 100 by definition.\n\n" + notes
        )
    _write_atomically(csv_path, frame.drop(columns=["key", "baseline"]).to_csv(index=False, float_format="%.4f"))
    text = [
        f"# Leaderboard: {suite_name}",
        "",
        "Accuracies are top-1 in %. PSNR is standard PSNR (peak 1, [0, 1] pixels) of the released images "
        "against the clean ones. Strength: nominal PSNR for `reference`, standard PSNR for the others. "
        "`flat input` is the published protocol for overlapping stems (the authorized model fed the unfolded "
        "tensor directly). `auth retention`: authorized accuracy as a % of its clean accuracy. "
        "Generated by `nonxfer-bench`; per-cell values in cells.csv.",
        "",
        notes,
        "## NE effect (no attack)",
        "",
        _markdown(effect_table(frame, models, metric)),
        "",
        "## Attacks",
        "",
        _markdown(attack_table(frame, metric)),
        "",
    ]
    from nonxfer_bench.reporting.theory import theory_markdown, write_theory_plots

    records = [cell.record() for cell in cells]
    theory = theory_markdown(records)  # table 3: bound tightness, from the identity cells' bound/ numbers
    if theory:
        text += ["## Theory", "", theory, ""]
    _write_atomically(md_path, "\n".join(text))
    from nonxfer_bench.reporting.plots import write_plots

    return [md_path, csv_path, *write_theory_plots(records, folder), *write_plots(frame, models, metric, folder)]


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)
