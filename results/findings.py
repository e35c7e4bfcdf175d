"""Recompute the paired comparisons between encodings that FINDINGS.md quotes, from the committed cells.

    python results/findings.py

Each line compares two releases of one authorized model at one strength on the same images (no attack),
per image averaged over the seeds (NE keys): the difference in the unauthorized mean and in the authorized
accuracy, in points, with a paired bootstrap 95% interval over images and the sign-flip p-value
(nonxfer_bench.metrics.statistics.paired_gain). The leaderboards hold every single-release number.
"""

from __future__ import annotations

from pathlib import Path

from nonxfer_bench.analysis.frame import results_frame
from nonxfer_bench.analysis.uncertainty import outcome_matrix
from nonxfer_bench.cells.results import results_cells
from nonxfer_bench.cells.store import CellStore
from nonxfer_bench.metrics.statistics import paired_gain

RESULTS = Path(__file__).resolve().parent
COMPARISONS = {  # suite: (encoder, baseline encoder) pairs, compared at every strength both have
    "fashion-full": [("patch", "gaussian"), ("operator", "gaussian"), ("patch", "operator")],
    "fashion-full-subset": [("patch", "gaussian"), ("patch", "operator")],
}


def _matrix(plain, authorized: str, encoder: str, strength: float, models: list[str]):
    part = plain[(plain.authorized == authorized) & (plain.encoder == encoder) & (plain.strength == strength)]
    return outcome_matrix(part, models, "accuracy") if len(part) else None


def _text(gain) -> str:
    p = "p < 1e-300" if gain.p == 0 else f"p = {gain.p:.2g}"  # below double precision
    return f"{100 * gain.estimate:+.1f} [{100 * gain.lo:+.1f}, {100 * gain.hi:+.1f}] points, {p}"


def compare(suite: str, pairs: list[tuple[str, str]]) -> None:
    frame = results_frame(list(CellStore(results_cells(RESULTS / suite), writable=False).cells.values()))
    plain = frame[frame.baseline]
    for authorized in sorted(plain.authorized.unique()):
        unauthorized = sorted(plain.loc[(plain.authorized == authorized) & (plain.role == "unauthorized"), "model"].unique())
        for encoder, baseline in pairs:
            strengths = sorted(set(plain.loc[plain.encoder == encoder, "strength"]) & set(plain.loc[plain.encoder == baseline, "strength"]))
            for strength in strengths:
                lines, n = [], 0
                for role, models in (("unauth mean", unauthorized), ("auth", [authorized])):
                    first, second = _matrix(plain, authorized, baseline, strength, models), _matrix(plain, authorized, encoder, strength, models)
                    if first is None or second is None or first[0] != second[0]:
                        continue
                    lines.append(f"{role} {_text(paired_gain(first[1], second[1]))}")
                    n = second[1].shape[1]
                if lines:  # both releases exist for this authorized model, with per-image outcomes
                    print(f"{suite}: {authorized} {encoder} - {baseline} at {strength:g} dB (n = {n}): " + "; ".join(lines))


if __name__ == "__main__":
    for suite, pairs in COMPARISONS.items():
        compare(suite, pairs)
