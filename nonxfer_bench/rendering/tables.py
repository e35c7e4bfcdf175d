"""Two of the leaderboard's sections, from the results frame: the NE effect of each release with no attack and its
strongest attack, and every attack step on every release (the ranking is :mod:`nonxfer_bench.rendering.verdict`).

Every accuracy or agreement reads ``83.5 [78.1, 87.9]`` (its 95% interval), every table has an ``n`` column and a
glossary under it. With several seeds, ``seeds`` and the between-seed spread (``seed sd``) are added; with several
precisions, a ``precision`` column. Where cells keep per-image outcomes, the unauthorized mean and max get a paired
bootstrap over images, each attack row its change against no attack (``Δ``, ``p``: Newcombe and exact McNemar for the
authorized model, bootstrap and sign-flip test for the unauthorized mean) and the strongest attack its gain with a
Holm-adjusted p; without outcomes those show ``—``. Controls keep their own columns but never count as unauthorized.
"""

from __future__ import annotations

import pandas as pd

from nonxfer_bench.analysis.frame import RELEASE, STEP, unauthorized_models
from nonxfer_bench.analysis.ranking import strongest_attack
from nonxfer_bench.analysis.uncertainty import (
    BOOTSTRAP_RESAMPLES,
    aggregate_intervals,
    gain_over_baseline,
    metric_n,
    proportion_interval,
)
from nonxfer_bench.cells.release import Release
from nonxfer_bench.metrics.statistics import holm, seed_summary
from nonxfer_bench.rendering.sections import Section
from nonxfer_bench.rendering.text import db, gain_text, markdown_table, p_text, percent, with_interval


def _ci(value: float | None, n: int | None) -> str:
    return with_interval(proportion_interval(value, n))


def _n_text(part: pd.DataFrame, metric: str) -> str:
    n = metric_n(part, metric)
    return "" if n is None else str(n)


def _seed_columns(part: pd.DataFrame, authorized: str, metric: str) -> dict[str, str]:
    """Seeds and the between-seed spread (sample sd, points) of the authorized and the mean unauthorized value."""
    per_seed = part.groupby(["seed", "model"])[metric].mean().unstack("model")
    unauthorized = per_seed[[m for m in unauthorized_models(part) if m in per_seed]]
    spreads = {
        f"{_auth(metric)} seed sd": seed_summary(per_seed[authorized].dropna())[1]
        if authorized in per_seed
        else float("nan"),
        "unauth mean seed sd": seed_summary(unauthorized.mean(axis=1).dropna())[1]
        if not unauthorized.empty
        else float("nan"),
    }
    return {"seeds": str(part.seed.nunique())} | {
        name: "" if pd.isna(sd) else f"{100 * sd:.1f}" for name, sd in spreads.items()
    }


def _unauthorized_columns(part: pd.DataFrame, metric: str) -> dict[str, str]:
    """``unauth mean`` and ``unauth max`` (with the model) with their intervals."""
    models = unauthorized_models(part)
    mean, maximum = aggregate_intervals(part, models, metric)
    values = part[part.model.isin(models)].groupby("model")[metric].mean().dropna()
    return {
        "unauth mean": with_interval(mean),
        "unauth max": f"{with_interval(maximum)} ({values.idxmax()})" if len(values) else "",
    }


def _paired_columns(baseline: pd.DataFrame, part: pd.DataFrame, authorized: str, metric: str) -> dict[str, str]:
    """An attack step against no attack on the same encoding, images and seeds: the change and its p-value,
    for the authorized model and for the mean over unauthorized models."""
    auth = gain_over_baseline(baseline, part, [authorized], metric)
    unauthorized = gain_over_baseline(baseline, part, unauthorized_models(part), metric)
    return {
        "auth Δ": gain_text(auth),
        "auth p": p_text(None if auth is None else auth.p),
        "unauth mean Δ": gain_text(unauthorized),
        "unauth p": p_text(None if unauthorized is None else unauthorized.p),
    }


def _against_clean(plain: pd.DataFrame, part: pd.DataFrame, release: Release, metric: str) -> dict[str, str]:
    """The NE against the clean images (no attack, same authorized model, images and seeds): the change for the
    authorized model and for the mean over unauthorized models, with its p-value; blank on the clean row."""
    authorized = release.authorized
    same = (
        (plain.authorized == authorized)
        & plain.precision.isin(part.precision.unique())
        & plain.seed.isin(part.seed.unique())
    )
    clean = plain[same & (plain.encoder == "clean")]
    if release.clean or clean.empty:
        return {"auth Δ vs clean": "", "unauth mean Δ vs clean": "", "p vs clean (auth; unauth)": ""}
    auth = gain_over_baseline(clean, part, [authorized], metric)
    unauthorized = gain_over_baseline(clean, part, unauthorized_models(part), metric)
    return {
        "auth Δ vs clean": gain_text(auth),
        "unauth mean Δ vs clean": gain_text(unauthorized),
        "p vs clean (auth; unauth)": f"{p_text(None if auth is None else auth.p)}; "
        f"{p_text(None if unauthorized is None else unauthorized.p)}",
    }


def _strongest_gain(part: pd.DataFrame, best: dict, metric: str) -> dict[str, str]:
    """The strongest attack's gain in mean unauthorized ``metric`` over no attack, and its p-value adjusted
    (Holm) for the number of attack steps it was chosen from; blank when no attack beat no attack."""
    baseline, models = part[part.baseline], unauthorized_models(part)
    gains = {
        step: gain_over_baseline(baseline, cells, models, metric)
        for step, cells in part[~part.baseline].groupby(STEP, sort=True)
    }
    chosen = best["step"]
    if chosen not in gains:
        return {"strongest: gain": "", "strongest: p (Holm)": ""}
    adjusted = None if any(gain is None for gain in gains.values()) else holm([gain.p for gain in gains.values()])
    return {
        "strongest: gain": gain_text(gains[chosen]),
        "strongest: p (Holm)": p_text(
            None if adjusted is None else float(adjusted[list(gains).index(chosen)]), verdict=True
        ),
    }


def glossary(metric: str, seeds: bool, paired: bool, strongest: bool) -> str:
    """The line under a table: what n, the intervals, the paired tests and the seed spread are; ``strongest``
    for the NE-effect table (its strongest-attack gain), else the attack table (its change columns)."""
    unit = "labeled images" if metric == "accuracy" else "images"
    text = (
        f"`n`: {unit} per cell. `x [lo, hi]`: the {metric} in % and its Wilson 95% score interval for a proportion of "
        "n images. Means over seeds or attack draws use Wilson's interval at the mean with n images: conservative, "
        "since those proportions share the images."
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
            " `Δ vs clean`: the NE (no attack) against the clean images for the same model(s), images and seeds, in "
            "points with its 95% interval and two-sided p-value (exact McNemar for one model, seed and draw; else a "
            "paired sign-flip test over images)."
        )
        text += (
            " `strongest attack`: the attack step (of any attack and strength) that raises `unauth mean` most; `no "
            "attack` if none does. In the per-model columns, `(auth)` marks the authorized model's value."
        )
    text += (
        f" {change} against no attack on the same images, encoding and seeds, in points, with a 95% interval (one "
        "model, seed and draw: Newcombe's method 10; a mean over models, seeds or draws: the paired bootstrap over "
        "images)."
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
        text += (
            " `—`: a paired test needs per-image outcomes, which this store does not keep (rerun the suite to record "
            "them)."
        )
    if seeds:
        text += " `seed sd`: the sample standard deviation between seeds, in points."
    return text


def _auth(metric: str) -> str:
    return "auth acc" if metric == "accuracy" else "auth agree"


def _model_value(part: pd.DataFrame, model: str, authorized: str, metric: str) -> str:
    """A per-model column's value with its interval; the authorized model's value is marked ``(auth)``."""
    cells = part[part.model == model]
    text = _ci(cells[metric].mean() if len(cells) else None, metric_n(cells, metric))
    return f"{text} (auth)" if text and model == authorized else text


def effect_table(frame: pd.DataFrame, models: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """Table 1: what each encoding does with no attack (mean over seeds), and its strongest attack."""
    plain = frame[frame.baseline]
    clean = (
        plain[(plain.encoder == "clean") & (plain.model == plain.authorized)]
        .groupby(["authorized", "precision"])[metric]
        .mean()
    )
    releases = dict(list(frame.groupby(RELEASE, sort=True)))
    strongest = {release: strongest_attack(part, release.authorized, metric) for release, part in releases.items()}
    several = frame.precision.nunique() > 1
    rows = []
    for release, part in plain.groupby(RELEASE, sort=True):
        authorized = release.authorized
        clean_auth = clean.get((authorized, release.precision), 0)
        mean = part.groupby("model")[metric].mean()
        authorized_part = part[part.role == "authorized"]
        flat = authorized_part["accuracy_flat"].dropna()
        row = (
            {
                "authorized": authorized,
                "encoding": release.label,
            }
            | ({"precision": release.precision} if several else {})
            | {
                "n": _n_text(part, metric),
                "PSNR dB": db(part["encoded_psnr"].mean()),
                _auth(metric): _ci(mean[authorized], metric_n(authorized_part, metric)),
                "auth retention": percent(mean[authorized] / clean_auth) if clean_auth > 0 else "",
                "auth acc (flat input)": _ci(flat.mean(), metric_n(authorized_part, "accuracy")) if len(flat) else "",
            }
            | _unauthorized_columns(part, metric)
        )
        best = strongest.get(release)
        encoding = releases[release]
        chosen = None if best is None else encoding[encoding.step == best["step"]]
        row |= {
            "strongest attack": best["label"] if best else "",
            "strongest: unauth mean": with_interval(aggregate_intervals(chosen, unauthorized_models(chosen), metric)[0])
            if best
            else "",
            f"strongest: {_auth(metric)}": _ci(best["auth"], best["n"]) if best else "",
        }
        row |= _against_clean(plain, part, release, metric)
        row |= _strongest_gain(encoding, best, metric) if best else {"strongest: gain": "", "strongest: p (Holm)": ""}
        if frame.seed.nunique() > 1:
            row |= _seed_columns(part, authorized, metric)
        row |= {model: _model_value(part, model, authorized, metric) for model in models}
        rows.append(row)
    return pd.DataFrame(rows)


def attack_table(frame: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Table 2: every attack step on every encoding (mean over seeds)."""
    rows = []
    baselines = dict(list(frame[frame.baseline].groupby(RELEASE, sort=True)))
    several = frame.precision.nunique() > 1
    for (release, step), part in frame.groupby([RELEASE, STEP], sort=True):
        authorized = release.authorized
        mean = part.groupby("model")[metric].mean()
        baseline = baselines.get(release)
        paired = {} if step.baseline or baseline is None else _paired_columns(baseline, part, authorized, metric)
        seeds = _seed_columns(part, authorized, metric) if frame.seed.nunique() > 1 else {}
        rows.append(
            {
                "authorized": authorized,
                "encoding": release.label,
            }
            | ({"precision": release.precision} if several else {})
            | {
                "attack": step.label,
                "param": step.text,
                "n": _n_text(part, metric),
                "attacked PSNR dB": db(part["attacked_psnr"].mean()),
                _auth(metric): _ci(mean[authorized], metric_n(part[part.model == authorized], metric)),
            }
            | _unauthorized_columns(part, metric)
            | {name: paired.get(name, "") for name in ("auth Δ", "auth p", "unauth mean Δ", "unauth p")}
            | seeds
        )
    return pd.DataFrame(rows)


def effect_section(frame: pd.DataFrame, models: list[str], metric: str, paired: bool, seeds: bool) -> Section:
    return Section(
        "NE effect (no attack)",
        markdown_table(effect_table(frame, models, metric)),
        glossary=glossary(metric, seeds, paired, strongest=True),
    )


def attacks_section(frame: pd.DataFrame, metric: str, paired: bool, seeds: bool) -> Section:
    return Section(
        "Attacks",
        markdown_table(attack_table(frame, metric)),
        glossary=glossary(metric, seeds, paired, strongest=False),
    )
