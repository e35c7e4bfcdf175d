"""Intervals and paired tests against published values, scipy itself and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from nonxfer_bench.metrics.statistics import (
    bootstrap_over_images,
    clopper_pearson,
    holm,
    mcnemar_exact,
    paired_difference,
    paired_gain,
    seed_summary,
    sign_flip_p,
    wilson,
)

# Cavo et al. (2012), the paired 2x2 example of Fagerland, Lydersen & Laake, "Statistical Analysis of
# Contingency Tables" (2017), ch. 8: 59 both, 6 first only, 16 second only, 80 neither (n = 161).
CAVO_FIRST = np.array([1] * 59 + [1] * 6 + [0] * 16 + [0] * 80, dtype=bool)
CAVO_SECOND = np.array([1] * 59 + [0] * 6 + [1] * 16 + [0] * 80, dtype=bool)


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize(("k", "lo", "hi"), [(0, 0.0, 0.2775), (5, 0.2366, 0.7634), (10, 0.7225, 1.0)])
def test_wilson_matches_published_values_for_n_10(k, lo, hi):
    interval = wilson(k, 10)
    assert interval.estimate == k / 10
    assert (interval.lo, interval.hi) == (pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5))
    assert (interval.lo, interval.hi) == pytest.approx(wilson_by_hand(k, 10))


@pytest.mark.parametrize(("k", "lo", "hi"), [(0, 0.0, 0.3085), (5, 0.1871, 0.8129), (10, 0.6915, 1.0)])
def test_clopper_pearson_matches_published_values_for_n_10(k, lo, hi):
    interval = clopper_pearson(k, 10)
    assert (interval.lo, interval.hi) == (pytest.approx(lo, abs=5e-5), pytest.approx(hi, abs=5e-5))
    assert interval.lo <= wilson(k, 10).lo and interval.hi >= wilson(k, 10).hi  # exact is the wider


def test_intervals_contain_the_estimate_and_narrow_with_n():
    for proportion in (0.0, 0.1, 0.5, 0.83, 1.0):
        widths = []
        for n in (10, 100, 1000, 10000):
            k = round(proportion * n)
            for interval in (wilson(k, n), clopper_pearson(k, n)):
                assert 0.0 <= interval.lo <= interval.estimate <= interval.hi <= 1.0
            widths.append(wilson(k, n).hi - wilson(k, n).lo)
        assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0]


def test_wilson_takes_a_fractional_count_and_refuses_impossible_ones():
    assert wilson(2.5, 10).estimate == 0.25
    assert wilson(2, 10).lo < wilson(2.5, 10).lo < wilson(3, 10).lo
    assert math.isnan(wilson(0, 0).estimate)
    with pytest.raises(ValueError):
        wilson(11, 10)
    with pytest.raises(ValueError):
        clopper_pearson(-1, 10)


def test_wilson_covers_about_95_percent_of_simulated_accuracies():
    rng = np.random.default_rng(0)
    n, truth = 200, 0.3
    hits = [wilson(k, n).lo <= truth <= wilson(k, n).hi for k in rng.binomial(n, truth, size=2000)]
    assert 0.93 <= np.mean(hits) <= 0.97


def test_mcnemar_is_the_binomial_test_of_the_discordant_pairs():
    rng = np.random.default_rng(1)
    first, second = rng.random(300) < 0.5, rng.random(300) < 0.6
    gained, lost = int((second & ~first).sum()), int((first & ~second).sum())
    assert mcnemar_exact(first, second) == pytest.approx(stats.binomtest(gained, gained + lost, 0.5).pvalue)
    assert mcnemar_exact(CAVO_FIRST, CAVO_SECOND) == pytest.approx(0.052479, abs=1e-6)  # published
    assert mcnemar_exact(first, first) == 1.0  # no discordant pair
    assert mcnemar_exact(first, second) == mcnemar_exact(second, first)
    with pytest.raises(ValueError):
        mcnemar_exact(first, second[:-1])


def test_newcombe_paired_difference_matches_the_published_example():
    interval = paired_difference(CAVO_SECOND, CAVO_FIRST)  # first minus second of the book's table
    assert interval.estimate == pytest.approx(-10 / 161)
    assert (interval.lo, interval.hi) == (pytest.approx(-0.1186, abs=5e-5), pytest.approx(-0.0046, abs=5e-5))


def test_newcombe_interval_contains_the_difference_does_not_collapse_and_narrows_with_n():
    same = np.array([1, 0] * 10, dtype=bool)
    interval = paired_difference(same, same)
    assert interval.estimate == 0 and interval.lo < 0 < interval.hi  # no discordant pair is not certainty
    rng = np.random.default_rng(2)
    widths = []
    for n in (50, 500, 5000):
        first = rng.random(n) < 0.5
        second = np.where(rng.random(n) < 0.8, first, rng.random(n) < 0.7)
        interval = paired_difference(first, second)
        assert interval.estimate == pytest.approx(second.mean() - first.mean())
        assert -1 <= interval.lo <= interval.estimate <= interval.hi <= 1
        widths.append(interval.hi - interval.lo)
    assert widths == sorted(widths, reverse=True)


def test_holm_on_a_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.04]) == pytest.approx([0.04])  # one comparison: nothing to adjust
    assert holm([0.5, 0.6, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    raw = np.random.default_rng(3).random(12)
    assert (holm(raw) >= raw).all() and (holm(raw) <= np.minimum(1, 12 * raw) + 1e-12).all()


def test_sign_flip_p_is_mcnemar_on_bits_and_matches_random_sign_flips_on_fractions():
    rng = np.random.default_rng(4)
    first, second = rng.random(200) < 0.5, rng.random(200) < 0.6
    assert sign_flip_p(second.astype(float) - first) == pytest.approx(mcnemar_exact(first, second))
    differences = rng.choice([-0.5, 0.0, 0.25, 0.5, 0.75], size=400)
    flips = rng.choice([-1.0, 1.0], size=(20000, 400)) * differences
    monte_carlo = np.mean(np.abs(flips.sum(axis=1)) >= abs(differences.sum()))
    assert sign_flip_p(differences) == pytest.approx(monte_carlo, abs=0.02)
    assert sign_flip_p(np.zeros(10)) == 1.0


def test_paired_bootstrap_over_images_is_seeded_contains_the_estimate_and_keeps_models_paired():
    rng = np.random.default_rng(5)
    outcomes = rng.random((4, 300)) < np.array([[0.3], [0.5], [0.6], [0.4]])
    mean, maximum = bootstrap_over_images(outcomes, seed=7)
    assert bootstrap_over_images(outcomes, seed=7) == (mean, maximum)
    assert mean.estimate == pytest.approx(outcomes.mean()) and maximum.estimate == pytest.approx(
        outcomes.mean(axis=1).max()
    )
    for interval in (mean, maximum):
        assert interval.lo <= interval.estimate <= interval.hi
    twins = np.repeat(outcomes[:1], 3, axis=0)  # identical models: the resampled max is the resampled mean
    twin_mean, twin_max = bootstrap_over_images(twins)
    assert twin_mean[1:] == pytest.approx(twin_max[1:])
    assert twin_mean.hi - twin_mean.lo == pytest.approx(
        wilson(int(twins[0].sum()), 300).hi - wilson(int(twins[0].sum()), 300).lo, rel=0.2
    )
    wide = bootstrap_over_images(outcomes[:, :50])[0]
    assert wide.hi - wide.lo > mean.hi - mean.lo


def test_paired_gain_uses_newcombe_and_mcnemar_for_one_model_and_the_bootstrap_otherwise():
    rng = np.random.default_rng(6)
    before = rng.random((3, 400)) < 0.4
    after = before | (rng.random((3, 400)) < 0.2)  # the attack only helps
    one = paired_gain(before[:1], after[:1])
    assert one[:3] == paired_difference(before[0], after[0])
    assert one.p == mcnemar_exact(before[0], after[0])
    several = paired_gain(before, after)
    assert several.estimate == pytest.approx(after.mean() - before.mean())
    assert 0 < several.lo <= several.estimate <= several.hi and several.p < 1e-6
    null = paired_gain(before, before[::-1])  # same accuracy level, shuffled models
    assert null.lo <= null.estimate <= null.hi
    with pytest.raises(ValueError):
        paired_gain(before, after[:2])


def test_seed_summary_is_the_mean_and_sample_spread():
    assert seed_summary([0.5, 0.6, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1))
    mean, spread = seed_summary([0.4])
    assert mean == 0.4 and math.isnan(spread)
    with pytest.raises(ValueError):
        seed_summary([])
