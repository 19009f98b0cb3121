"""Router statistics: intervals and tests against scipy and the published formulas, on fixed
inputs; verdicts; the sample-ratio check; the canary check's arithmetic. No I/O."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.statistics import (
    DEFAULT_MIXING_SD,
    ComparisonVerdict,
    Counts,
    ExperimentVerdict,
    MetricKind,
    VariantInput,
    always_valid_test,
    canary_check,
    check_confidence_level,
    compare,
    estimate,
    experiment_results,
    mean_interval,
    mixture_log_likelihood_ratio,
    one_sided_mixture_log_likelihood_ratio,
    sample_ratio_check,
    wilson_interval,
)


def _counts(values: np.ndarray) -> Counts:
    return Counts(len(values), 0, float(values.sum()), float((values * values).sum()))


# --- one variant ------------------------------------------------------------------------------


@pytest.mark.parametrize("successes, n", [(0, 10), (1, 10), (5, 10), (10, 10), (37, 412), (1234, 100_000)])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_interval_matches_scipy(successes, n, confidence):
    expected = stats.binomtest(successes, n).proportion_ci(confidence, method="wilson")
    result = wilson_interval(successes, n, confidence)
    assert result.value == pytest.approx(successes / n)
    assert result.lower == pytest.approx(expected.low, abs=1e-12)
    assert result.upper == pytest.approx(expected.high, abs=1e-12)


def test_wilson_interval_without_exposures_is_everything():
    result = wilson_interval(0, 0)
    assert (result.value, result.lower, result.upper) == (0.0, 0.0, 1.0)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_matches_scipy_t_interval(confidence):
    values = np.random.default_rng(7).exponential(10.0, 250) * np.random.default_rng(8).binomial(1, 0.3, 250)
    expected = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    result = mean_interval(_counts(values), confidence)
    assert result.value == pytest.approx(values.mean())
    assert result.lower == pytest.approx(expected.low, rel=1e-9)
    assert result.upper == pytest.approx(expected.high, rel=1e-9)


def test_mean_interval_needs_two_users():
    assert math.isnan(mean_interval(Counts(1, 0, 3.0, 9.0)).lower)
    assert mean_interval(Counts(1, 0, 3.0, 9.0)).value == 3.0
    assert estimate(MetricKind.NUMERIC, Counts(0)).value == 0.0


def test_counts_reject_impossible_values():
    for bad in [dict(n=-1), dict(n=3, successes=4), dict(n=3, successes=-1), dict(n=3, sum=math.nan),
                dict(n=3, sum_sq=-1.0), dict(n=3, sum_sq=math.inf)]:
        with pytest.raises(ValueError):
            Counts(**bad)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_confidence_level_outside_open_unit_interval_is_an_invalid_argument(level):
    with pytest.raises(InvalidArgument) as caught:
        check_confidence_level(level)
    assert caught.value.field == "confidence_level"
    with pytest.raises(InvalidArgument):
        compare(MetricKind.BINARY, Counts(100, 5), Counts(100, 6), confidence_level=level)


# --- fixed-horizon reference numbers ------------------------------------------------------------


def test_numeric_fixed_horizon_is_welch_t_as_scipy():
    rng = np.random.default_rng(11)
    control, treatment = rng.normal(10.0, 3.0, 400), rng.normal(10.6, 5.0, 300)
    result = compare(MetricKind.NUMERIC, _counts(control), _counts(treatment), confidence_level=0.9)
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    interval = welch.confidence_interval(0.9)
    assert result.difference == pytest.approx(treatment.mean() - control.mean())
    assert result.relative_difference == pytest.approx((treatment.mean() - control.mean()) / control.mean())
    assert result.fixed_horizon_p_value == pytest.approx(welch.pvalue, rel=1e-9)
    assert result.fixed_horizon_lower == pytest.approx(interval.low, rel=1e-9)
    assert result.fixed_horizon_upper == pytest.approx(interval.high, rel=1e-9)


def test_binary_fixed_horizon_is_a_wald_z_test_on_agresti_caffo_variances():
    control, treatment = Counts(5000, 500), Counts(4000, 460)
    result = compare(MetricKind.BINARY, control, treatment)
    pc, pt = 501 / 5002, 461 / 4002
    se = math.sqrt(pc * (1 - pc) / 5000 + pt * (1 - pt) / 4000)
    diff = 460 / 4000 - 500 / 5000
    assert result.difference == pytest.approx(diff)
    assert result.relative_difference == pytest.approx(diff / 0.1)
    assert result.fixed_horizon_p_value == pytest.approx(2 * stats.norm.sf(diff / se))
    assert result.fixed_horizon_lower == pytest.approx(diff - stats.norm.ppf(0.975) * se)
    assert result.fixed_horizon_upper == pytest.approx(diff + stats.norm.ppf(0.975) * se)


# --- the mixture SPRT ---------------------------------------------------------------------------


def _integrated_likelihood_ratio(diff: float, variance: float, tau2: float, one_sided: bool) -> float:
    """Lambda by quadrature: the likelihood ratio N(diff; theta, V) / N(diff; 0, V) averaged over
    the mixing density (normal, or half-normal on theta > 0)."""
    sd = math.sqrt(tau2)

    def integrand(theta: float) -> float:
        density = stats.norm.pdf(theta, 0.0, sd) * (2.0 if one_sided else 1.0)
        return math.exp((theta * diff - theta * theta / 2) / variance) * density

    value, _ = integrate.quad(integrand, 0.0 if one_sided else -12 * sd, 12 * sd, limit=200)
    return value


@pytest.mark.parametrize("diff, variance, tau2", [(0.0, 1e-4, 1e-3), (0.01, 1e-4, 4e-4), (-0.02, 2e-4, 1e-4),
                                                   (0.5, 0.1, 0.3), (0.05, 1e-3, 1e-2)])
def test_mixture_likelihood_ratio_is_the_integral_of_likelihood_ratios(diff, variance, tau2):
    two_sided = _integrated_likelihood_ratio(diff, variance, tau2, one_sided=False)
    assert math.exp(mixture_log_likelihood_ratio(diff, variance, tau2)) == pytest.approx(two_sided, rel=1e-6)
    one_sided = _integrated_likelihood_ratio(diff, variance, tau2, one_sided=True)
    assert math.exp(one_sided_mixture_log_likelihood_ratio(diff, variance, tau2)) == pytest.approx(one_sided,
                                                                                                  rel=1e-6)


def test_confidence_sequence_ends_are_where_the_ratio_reaches_one_over_alpha():
    diff, variance, tau2, alpha = 0.013, 2e-5, 1e-4, 0.05
    test = always_valid_test(diff, variance, tau2, alpha)
    for end in (test.lower, test.upper):
        assert mixture_log_likelihood_ratio(diff, variance, tau2, null=end) == pytest.approx(math.log(1 / alpha))
    assert mixture_log_likelihood_ratio(diff, variance, tau2, null=diff) < math.log(1 / alpha)
    assert test.p_value == pytest.approx(math.exp(-mixture_log_likelihood_ratio(diff, variance, tau2)))
    # p < alpha exactly when 0 is outside the sequence
    assert (test.p_value < alpha) == (not test.lower <= 0 <= test.upper)


def test_confidence_sequence_is_wider_than_the_fixed_horizon_interval_and_contains_the_difference():
    result = compare(MetricKind.BINARY, Counts(10_000, 1000), Counts(10_000, 1100))
    assert result.lower < result.fixed_horizon_lower < result.difference < result.fixed_horizon_upper < result.upper
    assert result.p_value > result.fixed_horizon_p_value


def test_always_valid_p_value_and_significance_agree():
    result = compare(MetricKind.BINARY, Counts(20_000, 2000), Counts(20_000, 2300))
    assert result.significant and result.p_value < 0.05 and result.lower > 0
    assert result.verdict is ComparisonVerdict.VARIANT_BETTER
    flipped = compare(MetricKind.BINARY, Counts(20_000, 2000), Counts(20_000, 2300), higher_is_better=False)
    assert flipped.verdict is ComparisonVerdict.VARIANT_WORSE


def test_degenerate_samples_do_not_break_the_maths():
    # nobody converts anywhere: no difference, honest uncertainty (Agresti-Caffo variance)
    none = compare(MetricKind.BINARY, Counts(500, 0), Counts(500, 0))
    assert none.difference == 0 and none.p_value == 1.0 and none.lower < 0 < none.upper
    assert none.verdict is ComparisonVerdict.NO_DIFFERENCE_YET
    everyone = compare(MetricKind.BINARY, Counts(500, 0), Counts(500, 500))
    assert everyone.verdict is ComparisonVerdict.VARIANT_BETTER and everyone.p_value < 1e-6
    # numeric values all equal on both sides
    same = compare(MetricKind.NUMERIC, Counts(200, 0, 400.0, 800.0), Counts(200, 0, 400.0, 800.0))
    assert same.p_value == 1.0 and same.verdict is ComparisonVerdict.NO_DIFFERENCE_YET
    apart = compare(MetricKind.NUMERIC, Counts(200, 0, 400.0, 800.0), Counts(200, 0, 600.0, 1800.0))
    assert apart.p_value == 0.0 and apart.verdict is ComparisonVerdict.VARIANT_BETTER
    # no exposures at all
    empty = compare(MetricKind.NUMERIC, Counts(0), Counts(0))
    assert empty.verdict is ComparisonVerdict.NOT_ENOUGH_DATA and empty.p_value == 1.0
    assert compare(MetricKind.BINARY, Counts(1, 0), Counts(0)).verdict is ComparisonVerdict.NOT_ENOUGH_DATA


def test_below_the_minimum_sample_the_verdict_is_not_enough_data_whatever_the_numbers():
    result = compare(MetricKind.BINARY, Counts(99, 0), Counts(99, 99))
    assert result.verdict is ComparisonVerdict.NOT_ENOUGH_DATA and not result.significant
    assert result.p_value < 0.05  # the numbers are still reported
    assert compare(MetricKind.BINARY, Counts(99, 0), Counts(99, 99), min_exposures=50).significant


def test_several_treatments_are_bonferroni_adjusted():
    single = compare(MetricKind.BINARY, Counts(10_000, 1000), Counts(10_000, 1120))
    triple = compare(MetricKind.BINARY, Counts(10_000, 1000), Counts(10_000, 1120), comparisons=3)
    assert triple.p_value == pytest.approx(min(1.0, 3 * single.p_value))
    assert triple.lower < single.lower and triple.upper > single.upper
    assert triple.fixed_horizon_p_value == pytest.approx(min(1.0, 3 * single.fixed_horizon_p_value))


def test_mixing_variance_moves_power_not_validity():
    wide = compare(MetricKind.BINARY, Counts(10_000, 1000), Counts(10_000, 1100), mixing_sd=1.0)
    default = compare(MetricKind.BINARY, Counts(10_000, 1000), Counts(10_000, 1100), mixing_sd=DEFAULT_MIXING_SD)
    assert default.upper - default.lower < wide.upper - wide.lower  # tuned near this size


# --- sample ratio mismatch ----------------------------------------------------------------------


def test_sample_ratio_check_matches_scipy_chisquare():
    exposures = {"control": 5100, "a": 2450, "b": 2530}
    weights = {"control": 5000, "a": 2500, "b": 2500}
    result = sample_ratio_check(exposures, weights)
    total = sum(exposures.values())
    expected = stats.chisquare([5100, 2450, 2530], [total * 0.5, total * 0.25, total * 0.25])
    assert result.chi_square == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.expected_shares == {"control": 0.5, "a": 0.25, "b": 0.25}
    assert result.observed_shares["control"] == pytest.approx(5100 / total)


def test_sample_ratio_check_accepts_a_correct_split_and_flags_a_broken_one():
    rng = np.random.default_rng(5)
    flagged = 0
    for _ in range(1000):
        n = rng.multinomial(20_000, [0.9, 0.1])
        flagged += sample_ratio_check({"control": int(n[0]), "t": int(n[1])}, {"control": 9000, "t": 1000}).mismatch
    assert flagged <= 5  # nominal 1 in 1000
    # a 50/50 split whose treatment loses 2% of its users (e.g. a crash before the exposure is logged)
    for seed in range(20):
        broken = np.random.default_rng(seed).multinomial(500_000, [0.5 / 0.99, 0.49 / 0.99])
        result = sample_ratio_check({"control": int(broken[0]), "t": int(broken[1])}, {"control": 5000, "t": 5000})
        assert result.mismatch and result.p_value < 1e-3
    assert not sample_ratio_check({"control": 5000, "t": 5000}, {"control": 5000, "t": 5000}).mismatch


def test_sample_ratio_check_edges():
    assert sample_ratio_check({"c": 0, "t": 0}, {"c": 5000, "t": 5000}).p_value == 1.0
    zero_weight = sample_ratio_check({"c": 100, "t": 1}, {"c": 10_000, "t": 0})
    assert zero_weight.mismatch and zero_weight.p_value == 0.0
    assert not sample_ratio_check({"c": 100, "t": 0}, {"c": 10_000, "t": 0}).mismatch
    with pytest.raises(ValueError):
        sample_ratio_check({"c": 1}, {"c": 5000, "t": 5000})
    with pytest.raises(ValueError):
        sample_ratio_check({"c": 1, "t": 1}, {"c": 0, "t": 0})


# --- whole experiments --------------------------------------------------------------------------


def _variants(*counts: Counts, weights: tuple[int, ...] | None = None) -> list[VariantInput]:
    weights = weights or tuple([10_000 // len(counts)] * len(counts))
    return [VariantInput(f"v{i}", w, c, control=i == 0) for i, (c, w) in enumerate(zip(counts, weights))]


def test_experiment_results_fill_every_variant_in_order():
    results = experiment_results(MetricKind.BINARY, _variants(Counts(10_000, 1000), Counts(10_000, 1250),
                                                              Counts(10_000, 1010)))
    assert [row.name for row in results.variants] == ["v0", "v1", "v2"]
    assert results.variants[0].control and results.variants[0].comparison is None
    assert results.variants[0].estimate.value == pytest.approx(0.1)
    assert results.comparisons == 2
    assert results.variants[1].comparison.verdict is ComparisonVerdict.VARIANT_BETTER
    assert results.variants[2].comparison.verdict is ComparisonVerdict.NO_DIFFERENCE_YET
    assert results.verdict is ExperimentVerdict.TREATMENT_BETTER and results.winning_variant == "v1"
    assert not results.sample_ratio.mismatch


def test_experiment_verdicts():
    def verdict(*counts: Counts, **kwargs) -> ExperimentVerdict:
        return experiment_results(MetricKind.BINARY, _variants(*counts), **kwargs).verdict

    assert verdict(Counts(50, 5), Counts(50, 40)) is ExperimentVerdict.NOT_ENOUGH_DATA
    assert verdict(Counts(10_000, 1000), Counts(10_000, 1010)) is ExperimentVerdict.NO_SIGNIFICANT_DIFFERENCE
    assert verdict(Counts(10_000, 1300), Counts(10_000, 1000), Counts(10_000, 990)) is ExperimentVerdict.CONTROL_BETTER
    assert verdict(Counts(10_000, 1300), Counts(10_000, 1000), Counts(10_000, 1290)) \
        is ExperimentVerdict.NO_SIGNIFICANT_DIFFERENCE
    assert verdict(Counts(10_000, 1300), Counts(10_000, 1000), higher_is_better=False) \
        is ExperimentVerdict.TREATMENT_BETTER
    assert verdict(Counts(10_000, 1000), Counts(9_000, 1300)) is ExperimentVerdict.SAMPLE_RATIO_MISMATCH
    best = experiment_results(MetricKind.BINARY, _variants(Counts(10_000, 1000), Counts(10_000, 1300),
                                                           Counts(10_000, 1400)))
    assert best.winning_variant == "v2"


def test_experiment_results_reject_bad_shapes():
    with pytest.raises(ValueError):
        experiment_results(MetricKind.BINARY, [VariantInput("a", 5000, Counts(1), control=True)])
    with pytest.raises(ValueError):
        experiment_results(MetricKind.BINARY, [VariantInput("a", 5000, Counts(1)), VariantInput("b", 5000, Counts(1))])
    with pytest.raises(ValueError):
        experiment_results(MetricKind.BINARY, [VariantInput("a", 5000, Counts(1), control=True),
                                               VariantInput("a", 5000, Counts(1))])


# --- canary -------------------------------------------------------------------------------------


def test_canary_check_reports_rates_and_the_allowed_rate():
    result = canary_check(10_000, 100, 1000, 30, max_increase=0.01, max_relative_increase=0.5)
    assert result.stable_error_rate == pytest.approx(0.01)
    assert result.canary_error_rate == pytest.approx(0.03)
    assert result.allowed_error_rate == pytest.approx(1.5 * 0.01 + 0.01)
    assert result.excess == pytest.approx(0.03 - 0.025)
    assert not result.breached  # 0.5 points over, on 1000 requests: not confident


def test_canary_check_needs_requests_on_both_sides():
    assert not canary_check(10_000, 0, 10, 10).breached
    assert canary_check(10_000, 0, 10, 10).p_value == 1.0
    assert canary_check(10_000, 0, 200, 100).breached
    assert not canary_check(0, 0, 200, 100).breached


def test_canary_check_one_sided():
    better = canary_check(10_000, 500, 2000, 0)
    assert not better.breached and better.p_value == 1.0
    with pytest.raises(ValueError):
        canary_check(10, 1, 10, 1, alpha=0.0)
    with pytest.raises(ValueError):
        canary_check(10, 1, 10, 1, max_increase=-0.1)
