"""Leaderboards: the suite's cells as a long CSV and a Markdown summary, sorted and formatted stably.

Tables in ``leaderboard.md``:
1. *NE effect*: per (authorized model, encoder, strength) with no attack: achieved standard PSNR,
   authorized accuracy (and the reference's flat-input accuracy for overlapping stems), the mean and
   max unauthorized accuracy, and every model's accuracy.
2. *Attacks*: the same rows per attack step: authorized accuracy, mean and max unauthorized accuracy,
   the attacked images' PSNR against the clean ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

CELL_COLUMNS = [
    "authorized", "encoder", "strength", "seed", "attack", "attack_strength", "attack_param", "model", "role",
    "accuracy", "agreement", "accuracy_flat", "encoded_psnr", "encoded_psnr_min", "attacked_psnr", "n", "key",
]  # fmt: skip


def cells_frame(cells: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(cells)
    for column in CELL_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["attack_param"] = frame["attack_param"].map(lambda p: " ".join(f"{k}={v}" for k, v in sorted(p.items())) if isinstance(p, dict) else "")
    frame = frame[CELL_COLUMNS]
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


def effect_table(frame: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Table 1: what each encoding does with no attack (mean over seeds)."""
    plain = frame[frame.attack == "identity"]
    rows = []
    for (authorized, encoder, strength), part in plain.groupby(["authorized", "encoder", "strength"], sort=True):
        mean = part.groupby("model")["accuracy"].mean()
        unauthorized = mean.drop(authorized)
        flat = part[(part.role == "authorized")]["accuracy_flat"].dropna()
        row = {
            "authorized": authorized,
            "encoding": _encoding_label(encoder, strength),
            "PSNR dB": _db(part["encoded_psnr"].mean()),
            "auth acc": _pct(mean[authorized]),
            "auth acc (flat input)": _pct(flat.mean()) if len(flat) else "",
            "unauth mean": _pct(unauthorized.mean()),
            "unauth max": f"{_pct(unauthorized.max())} ({unauthorized.idxmax()})" if len(unauthorized) else "",
        }
        row |= {model: _pct(mean.get(model)) for model in models}
        rows.append(row)
    return pd.DataFrame(rows)


def attack_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2: every attack step on every encoding (mean over seeds)."""
    rows = []
    keys = ["authorized", "encoder", "strength", "attack", "attack_strength", "attack_param"]
    for (authorized, encoder, strength, attack, attack_strength, param), part in frame.groupby(keys, sort=True):
        mean = part.groupby("model")["accuracy"].mean()
        unauthorized = mean.drop(authorized)
        rows.append(
            {
                "authorized": authorized,
                "encoding": _encoding_label(encoder, strength),
                "attack": "none" if attack == "identity" else f"{attack} {attack_strength:g}",
                "param": param,
                "attacked PSNR dB": _db(part["attacked_psnr"].mean()),
                "auth acc": _pct(mean[authorized]),
                "unauth mean": _pct(unauthorized.mean()),
                "unauth max": f"{_pct(unauthorized.max())} ({unauthorized.idxmax()})" if len(unauthorized) else "",
            }
        )
    return pd.DataFrame(rows)


def write_leaderboard(suite_name: str, cells: list[dict], models: list[str], folder: Path, notes: str = "") -> list[Path]:
    """Write ``cells.csv`` and ``leaderboard.md`` under ``folder``; returns the written paths."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = cells_frame(cells)
    csv_path, md_path = folder / "cells.csv", folder / "leaderboard.md"
    _write_atomically(csv_path, frame.drop(columns=["key"]).to_csv(index=False, float_format="%.4f"))
    text = [
        f"# Leaderboard: {suite_name}",
        "",
        "Accuracies are top-1 in %. PSNR is standard PSNR (peak 1, [0, 1] pixels) of the released images "
        "against the clean ones. Strength: nominal PSNR for `reference`, standard PSNR for the others. "
        "`flat input` is the published protocol for overlapping stems (the authorized model fed the unfolded "
        "tensor directly). Generated by `nonxfer-bench`; per-cell values in cells.csv.",
        "",
        notes,
        "## NE effect (no attack)",
        "",
        _markdown(effect_table(frame, models)),
        "",
        "## Attacks",
        "",
        _markdown(attack_table(frame)),
        "",
    ]
    _write_atomically(md_path, "\n".join(text))
    return [md_path, csv_path]


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".partial")
    temporary.write_text(text)
    os.replace(temporary, path)
