"""Experiment and canary statistics over sufficient statistics: plain Python, no I/O.

Everything here is a pure function of a few numbers per variant (never per-event data):

* ``n``: distinct users exposed to the variant (the unit of analysis);
* binary metrics: ``successes``, users who converted at least once (``0 <= successes <= n``);
* numeric metrics: ``sum`` and ``sum_sq``, the sum over exposed users of each user's summed
  value, and of its square (a user without outcomes contributes 0 to both).

Per variant: the rate (Wilson score interval) or the mean (Student t interval). Against
control: the difference, the relative lift, and **always-valid** inference for the difference
— a p-value and a confidence sequence that stay valid however often they are looked at, so a
dashboard refreshed every minute does not inflate false positives. They come from the mixture
sequential probability ratio test (mSPRT) with a normal mixture:

    Johari, Koomen, Pekelis, Walsh, "Always Valid Inference: Continuous Monitoring of A/B
    Tests", Operations Research 70(3), 2022 (arXiv:1512.04922), section 3 and eq. (10);
    the boundary is the normal-mixture one of Robbins (1970) and of Howard, Ramdas,
    McAuliffe, Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
    Annals of Statistics 49(2), 2021, eq. (14).

With ``theta_hat`` the observed difference, ``V`` its variance (``s_t^2/n_t + s_c^2/n_c``) and a
mixing distribution ``theta ~ N(theta_0, tau^2)`` over alternatives, the mixture likelihood
ratio against ``H0: theta = theta_0`` is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta_0)^2 / (2 V (V + tau^2)))

(Johari et al. write it for n pairs with per-pair variance 2 sigma^2, i.e. V = 2 sigma^2 / n.)
Under H0 it is a nonnegative martingale with mean 1, so by Ville's inequality
``P(exists n: Lambda_n >= 1/alpha) <= alpha``: the always-valid p-value is
``min(1, 1/Lambda)`` and the confidence sequence is ``{theta_0 : Lambda(theta_0) < 1/alpha}``,

    theta_hat +- sqrt( V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)) ).

``V`` is estimated from the data (plug-in variance), as Johari et al. do for binary data; the
guarantee is then asymptotic (the error is negligible above the minimum sample size). The
p-value is the current ``1/Lambda``, not its running minimum, so it can rise again after a
look where it was small; the guarantee "no look at all ever has p < alpha, with probability
>= 1 - alpha" holds either way. A caller that wants monotone numbers may keep the running
minimum of the p-value and the running intersection of the intervals.

Mixing variance: ``tau = mixing_sd * sigma``, with ``sigma^2`` the mean of the two arms'
per-user variances, i.e. ``mixing_sd`` is the standardized effect size (Cohen's d) the test
is tuned for. The interval is tightest where ``tau^2 / V`` is about 8.2 (minimizing the
half-width above over ``tau^2/V`` at alpha = 0.05), i.e. near ``16.4 / mixing_sd^2`` users per
variant for an even split: about 6,600 for the default 0.05 (experiments), about 410 canary
requests for the canary default 0.2 (a canary step is smaller and breaches of interest are
large). Any fixed choice keeps the guarantee; it only moves where the test is most powerful.

Fixed-horizon numbers (a Wald z interval for a difference of rates, Welch's t for means) are
returned beside them for reference; they are only valid when read once, at a sample size
fixed in advance.

Canary rollback uses the one-sided form (a half-normal mixture over breaches) for
``H0: p_canary <= (1 + relative) * p_stable + absolute``; see ``canary_check``.

Sample ratio mismatch: Pearson's chi-square goodness of fit of the exposures against the
configured weights; a mismatch below p < 0.001.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Mapping, Sequence

from scipy import stats as _stats

from ....errors import InvalidArgument

__all__ = [
    "DEFAULT_CANARY_ALPHA",
    "DEFAULT_CANARY_MIXING_SD",
    "DEFAULT_CONFIDENCE_LEVEL",
    "DEFAULT_MIN_CANARY_REQUESTS",
    "DEFAULT_MIN_EXPOSURES",
    "DEFAULT_MIXING_SD",
    "SRM_P_VALUE_THRESHOLD",
    "CanaryCheck",
    "Comparison",
    "ComparisonVerdict",
    "Counts",
    "Estimate",
    "ExperimentResults",
    "ExperimentVerdict",
    "MetricKind",
    "SampleRatioCheck",
    "SequentialTest",
    "VariantInput",
    "VariantStatistics",
    "always_valid_test",
    "canary_check",
    "check_confidence_level",
    "compare",
    "estimate",
    "experiment_results",
    "mean_interval",
    "mixture_log_likelihood_ratio",
    "one_sided_mixture_log_likelihood_ratio",
    "sample_ratio_check",
    "wilson_interval",
]

DEFAULT_CONFIDENCE_LEVEL = 0.95
"""What GetExperimentResults uses when the request leaves confidence_level at 0."""
DEFAULT_MIN_EXPOSURES = 100
"""Users per variant below which the verdict is NOT_ENOUGH_DATA (and the normal approximation
behind the intervals is not trusted)."""
DEFAULT_MIXING_SD = 0.05
"""mSPRT mixing standard deviation for experiments, in per-user standard deviations."""
SRM_P_VALUE_THRESHOLD = 0.001
"""A sample ratio mismatch is flagged below this chi-square p-value."""
DEFAULT_CANARY_ALPHA = 0.05
"""Canary rollback: the chance that a canary no worse than allowed is ever rolled back."""
DEFAULT_CANARY_MIXING_SD = 0.2
"""mSPRT mixing standard deviation for canaries, in per-request standard deviations."""
DEFAULT_MIN_CANARY_REQUESTS = 50
"""Requests on each side below which a canary is never judged breached."""

_NORMAL = NormalDist()


class MetricKind(enum.Enum):
    BINARY = "binary"  # converted or not: rates
    NUMERIC = "numeric"  # a value per user: means


class ComparisonVerdict(enum.Enum):
    """What one treatment's comparison with control says."""

    NOT_ENOUGH_DATA = "not_enough_data"
    NO_DIFFERENCE_YET = "no_difference_yet"
    VARIANT_BETTER = "variant_better"
    VARIANT_WORSE = "variant_worse"


class ExperimentVerdict(enum.Enum):
    """What the results say; member names mirror the proto's `Verdict` (VERDICT_ + name)."""

    NOT_ENOUGH_DATA = "not_enough_data"
    NO_SIGNIFICANT_DIFFERENCE = "no_significant_difference"
    TREATMENT_BETTER = "treatment_better"
    CONTROL_BETTER = "control_better"
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"


# ----- inputs -----

@dataclass(frozen=True)
class Counts:
    """A variant's sufficient statistics for one metric.

    n: users exposed. Binary: successes, users who converted. Numeric: sum and sum_sq of the
    per-user totals (each user's values summed; 0 for users without outcomes).
    """

    n: int
    successes: int = 0
    sum: float = 0.0
    sum_sq: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0 or self.successes < 0 or self.successes > self.n:
            raise ValueError(f"need 0 <= successes <= n, got n={self.n}, successes={self.successes}")
        if not (math.isfinite(self.sum) and math.isfinite(self.sum_sq)) or self.sum_sq < 0:
            raise ValueError(f"sum and sum_sq must be finite, sum_sq >= 0; got {self.sum}, {self.sum_sq}")


@dataclass(frozen=True)
class VariantInput:
    """One variant of an experiment: its name, configured weight, role and counts."""

    name: str
    weight_bps: int
    counts: Counts
    control: bool = False


# ----- outputs -----

@dataclass(frozen=True)
class Estimate:
    """A rate or mean with its confidence interval (NaN bounds when it cannot be computed)."""

    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class SequentialTest:
    """Always-valid inference for a difference at level alpha."""

    log_likelihood_ratio: float
    p_value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Comparison:
    """A treatment against control: the interval and p-value are the always-valid ones."""

    difference: float  # treatment estimate minus control estimate
    relative_difference: float  # difference / control estimate; 0 for a zero control
    lower: float  # always-valid confidence sequence for the difference
    upper: float
    p_value: float  # always-valid two-sided p-value (Bonferroni-adjusted over `comparisons`)
    significant: bool  # p_value < alpha, and enough data
    verdict: ComparisonVerdict
    fixed_horizon_lower: float  # reference only: valid for one look at a pre-set sample size
    fixed_horizon_upper: float
    fixed_horizon_p_value: float


@dataclass(frozen=True)
class SampleRatioCheck:
    chi_square: float
    p_value: float
    mismatch: bool
    expected_shares: dict[str, float]
    observed_shares: dict[str, float]


@dataclass(frozen=True)
class VariantStatistics:
    name: str
    control: bool
    counts: Counts
    estimate: Estimate
    comparison: Comparison | None  # None for control


@dataclass(frozen=True)
class ExperimentResults:
    kind: MetricKind
    confidence_level: float
    variants: list[VariantStatistics]
    sample_ratio: SampleRatioCheck | None  # None: the weights moved, no split to check against
    verdict: ExperimentVerdict
    winning_variant: str = ""
    comparisons: int = 1  # treatments compared (the Bonferroni factor)


# ----- validation -----

def check_confidence_level(confidence_level: float, field_name: str = "confidence_level") -> float:
    """A confidence level in (0, 1); a request's 0 should be replaced by the default first."""
    if not (0.0 < confidence_level < 1.0):
        raise InvalidArgument(field_name, f"must be in (0, 1), got {confidence_level!r}")
    return float(confidence_level)


# ----- one variant -----

def wilson_interval(successes: int, n: int, confidence_level: float = DEFAULT_CONFIDENCE_LEVEL) -> Estimate:
    """The rate successes/n with its Wilson score interval (Wilson 1927); [0, 1] when n = 0."""
    if n == 0:
        return Estimate(0.0, 0.0, 1.0)
    z = _NORMAL.inv_cdf(0.5 + confidence_level / 2)
    p = successes / n
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return Estimate(p, max(0.0, center - half), min(1.0, center + half))


def _sample_variance(counts: Counts) -> float:
    """Unbiased variance of the per-user values (n >= 2), clamped at 0 against rounding."""
    n = counts.n
    mean = counts.sum / n
    return max(0.0, (counts.sum_sq - n * mean * mean) / (n - 1))


def mean_interval(counts: Counts, confidence_level: float = DEFAULT_CONFIDENCE_LEVEL) -> Estimate:
    """The mean per exposed user with its Student t interval; NaN bounds when n < 2."""
    if counts.n == 0:
        return Estimate(0.0, math.nan, math.nan)
    mean = counts.sum / counts.n
    if counts.n < 2:
        return Estimate(mean, math.nan, math.nan)
    se = math.sqrt(_sample_variance(counts) / counts.n)
    half = float(_stats.t.ppf(0.5 + confidence_level / 2, counts.n - 1)) * se
    return Estimate(mean, mean - half, mean + half)


def estimate(kind: MetricKind, counts: Counts, confidence_level: float = DEFAULT_CONFIDENCE_LEVEL) -> Estimate:
    if kind is MetricKind.BINARY:
        return wilson_interval(counts.successes, counts.n, confidence_level)
    return mean_interval(counts, confidence_level)


def _unit_variance(kind: MetricKind, counts: Counts) -> float:
    """Per-user variance for the difference's standard error. Binary: p(1-p) at the
    Agresti-Caffo rate (s+1)/(n+2), never 0, so an all-0 or all-1 arm still has an honest
    uncertainty. Numeric: the sample variance."""
    if kind is MetricKind.BINARY:
        p = (counts.successes + 1) / (counts.n + 2)
        return p * (1 - p)
    return _sample_variance(counts)


# ----- always-valid inference (mSPRT, normal mixture) -----

def mixture_log_likelihood_ratio(difference: float, variance: float, tau2: float, null: float = 0.0) -> float:
    """log Lambda of the normal-mixture SPRT (Johari et al. 2022, eq. 10): the observed
    difference ~ N(theta, variance), theta ~ N(null, tau2) under the alternative."""
    if not tau2 > 0:
        raise ValueError(f"mixing variance must be positive, got {tau2}")
    if variance <= 0:
        return 0.0 if difference == null else math.inf
    d = difference - null
    return 0.5 * math.log(variance / (variance + tau2)) + tau2 * d * d / (2 * variance * (variance + tau2))


def one_sided_mixture_log_likelihood_ratio(difference: float, variance: float, tau2: float,
                                           null: float = 0.0) -> float:
    """log Lambda with a half-normal mixture over theta > null (density 2 N(null, tau2) there):

        Lambda = 2 sqrt(V/(V+tau2)) exp(tau2 d^2 / (2 V (V+tau2))) Phi(d tau / sqrt(V (V+tau2)))

    with d = difference - null. Increasing in d, so it also bounds every theta < null."""
    if not tau2 > 0:
        raise ValueError(f"mixing variance must be positive, got {tau2}")
    d = difference - null
    if variance <= 0:
        return math.inf if d > 0 else -math.inf if d < 0 else 0.0
    scale = math.sqrt(variance * (variance + tau2))
    log_phi = _log_normal_cdf(d * math.sqrt(tau2) / scale)
    return (math.log(2.0) + 0.5 * math.log(variance / (variance + tau2))
            + tau2 * d * d / (2 * variance * (variance + tau2)) + log_phi)


def _log_normal_cdf(x: float) -> float:
    if x > -30:
        return math.log(max(_NORMAL.cdf(x), 1e-300))
    return float(_stats.norm.logcdf(x))


def always_valid_test(difference: float, variance: float, tau2: float, alpha: float) -> SequentialTest:
    """The always-valid p-value min(1, 1/Lambda) and the (1 - alpha) confidence sequence for
    the difference (the theta_0 whose Lambda(theta_0) stays below 1/alpha)."""
    log_lr = mixture_log_likelihood_ratio(difference, variance, tau2)
    p_value = 1.0 if log_lr <= 0 else math.exp(-log_lr)
    if variance <= 0:
        return SequentialTest(log_lr, p_value, difference, difference)
    half = math.sqrt(variance * (variance + tau2) / tau2
                     * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance)))
    return SequentialTest(log_lr, p_value, difference - half, difference + half)


# ----- a treatment against control -----

def _fixed_horizon(kind: MetricKind, control: Counts, treatment: Counts, difference: float,
                   variance: float, alpha: float) -> tuple[float, float, float]:
    """Wald z (rates) or Welch t (means) interval and two-sided p-value: one look only."""
    if variance <= 0:
        return difference, difference, (1.0 if difference == 0 else 0.0)
    se = math.sqrt(variance)
    if kind is MetricKind.BINARY:
        q = _NORMAL.inv_cdf(1 - alpha / 2)
        p_value = 2 * _NORMAL.cdf(-abs(difference) / se)
    else:
        vt = _sample_variance(treatment) / treatment.n
        vc = _sample_variance(control) / control.n
        df = variance ** 2 / (vt ** 2 / (treatment.n - 1) + vc ** 2 / (control.n - 1))
        q = float(_stats.t.ppf(1 - alpha / 2, df))
        p_value = float(2 * _stats.t.sf(abs(difference) / se, df))
    return difference - q * se, difference + q * se, min(1.0, p_value)


def compare(kind: MetricKind, control: Counts, treatment: Counts, *,
            confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
            min_exposures: int = DEFAULT_MIN_EXPOSURES,
            mixing_sd: float = DEFAULT_MIXING_SD,
            higher_is_better: bool = True,
            comparisons: int = 1) -> Comparison:
    """Treatment against control. `comparisons` treatments are compared with the same control
    in the experiment: each test runs at alpha / comparisons (Bonferroni) and reports its
    p-value times `comparisons` (capped at 1), so the experiment's verdict keeps its level."""
    check_confidence_level(confidence_level)
    if min_exposures < 2 or comparisons < 1 or not mixing_sd > 0:
        raise ValueError("need min_exposures >= 2, comparisons >= 1 and mixing_sd > 0")
    alpha = (1 - confidence_level) / comparisons
    ct, tt = estimate(kind, control, confidence_level).value, estimate(kind, treatment, confidence_level).value
    difference = tt - ct
    relative = difference / ct if ct != 0 else 0.0
    smallest = 1 if kind is MetricKind.BINARY else 2
    if control.n < smallest or treatment.n < smallest:
        return Comparison(difference, relative, math.nan, math.nan, 1.0, False, ComparisonVerdict.NOT_ENOUGH_DATA,
                          math.nan, math.nan, 1.0)
    sc, st = _unit_variance(kind, control), _unit_variance(kind, treatment)
    variance = st / treatment.n + sc / control.n
    tau2 = mixing_sd ** 2 * (sc + st) / 2
    if tau2 <= 0:  # numeric with no spread at all on either side: nothing to mix over
        tau2, variance = 1.0, 0.0
    test = always_valid_test(difference, variance, tau2, alpha)
    fixed_lower, fixed_upper, fixed_p = _fixed_horizon(kind, control, treatment, difference, variance, alpha)
    p_value = min(1.0, test.p_value * comparisons)
    significant = p_value < 1 - confidence_level
    if control.n < min_exposures or treatment.n < min_exposures:
        significant, verdict = False, ComparisonVerdict.NOT_ENOUGH_DATA
    elif not significant:
        verdict = ComparisonVerdict.NO_DIFFERENCE_YET
    elif (difference > 0) == higher_is_better:
        verdict = ComparisonVerdict.VARIANT_BETTER
    else:
        verdict = ComparisonVerdict.VARIANT_WORSE
    return Comparison(difference, relative, test.lower, test.upper, p_value, significant, verdict,
                      fixed_lower, fixed_upper, min(1.0, fixed_p * comparisons))


# ----- sample ratio mismatch -----

def sample_ratio_check(exposures: Mapping[str, int], weights_bps: Mapping[str, int],
                       threshold: float = SRM_P_VALUE_THRESHOLD) -> SampleRatioCheck:
    """Pearson chi-square goodness of fit of the exposures against the weights' shares.

    Weights are shares in basis points (normalized by their sum). A variant with weight 0
    and exposures is a mismatch outright; one with weight 0 and none is left out. Without
    exposures there is nothing to check (p = 1). If weights changed during the experiment,
    pass the exposure-weighted average weights of the periods, not the current ones."""
    if set(exposures) != set(weights_bps):
        raise ValueError("exposures and weights must name the same variants")
    if any(w < 0 for w in weights_bps.values()) or any(n < 0 for n in exposures.values()):
        raise ValueError("weights and exposures must be non-negative")
    total_weight = sum(weights_bps.values())
    total = sum(exposures.values())
    if total_weight <= 0:
        raise ValueError("weights must not all be 0")
    expected_shares = {name: w / total_weight for name, w in weights_bps.items()}
    observed_shares = {name: (n / total if total else 0.0) for name, n in exposures.items()}
    if total == 0:
        return SampleRatioCheck(0.0, 1.0, False, expected_shares, observed_shares)
    if any(exposures[name] > 0 and share == 0 for name, share in expected_shares.items()):
        return SampleRatioCheck(math.inf, 0.0, True, expected_shares, observed_shares)
    cells = [(exposures[name], share * total) for name, share in expected_shares.items() if share > 0]
    chi_square = sum((observed - expected) ** 2 / expected for observed, expected in cells)
    if len(cells) < 2:
        return SampleRatioCheck(chi_square, 1.0, False, expected_shares, observed_shares)
    p_value = float(_stats.chi2.sf(chi_square, len(cells) - 1))
    return SampleRatioCheck(chi_square, p_value, p_value < threshold, expected_shares, observed_shares)


# ----- a whole experiment -----

def experiment_results(kind: MetricKind, variants: Sequence[VariantInput], *,
                       confidence_level: float = DEFAULT_CONFIDENCE_LEVEL,
                       min_exposures: int = DEFAULT_MIN_EXPOSURES,
                       mixing_sd: float = DEFAULT_MIXING_SD,
                       higher_is_better: bool = True,
                       srm_threshold: float = SRM_P_VALUE_THRESHOLD,
                       fixed_weights: bool = True) -> ExperimentResults:
    """Per-variant results, in the given order, the SRM check and the verdict.

    With `fixed_weights` False (the weights moved during the experiment, as adaptive allocation
    moves them) no single set of weights is expected, so the SRM check is left out (None).

    Verdict: SAMPLE_RATIO_MISMATCH when the split is off (nothing else can be trusted);
    NOT_ENOUGH_DATA while any variant has fewer than min_exposures users; TREATMENT_BETTER
    when some treatment is significantly better (winning_variant: the best of those);
    CONTROL_BETTER when every treatment is significantly worse; else NO_SIGNIFICANT_DIFFERENCE.
    With several treatments the comparisons are Bonferroni-adjusted (see `compare`)."""
    check_confidence_level(confidence_level)
    controls = [v for v in variants if v.control]
    if len(controls) != 1 or len(variants) < 2:
        raise ValueError("need at least two variants, exactly one of them control")
    if len({v.name for v in variants}) != len(variants):
        raise ValueError("variant names must be unique")
    control = controls[0]
    comparisons = len(variants) - 1
    rows: list[VariantStatistics] = []
    for variant in variants:
        comparison = None if variant.control else compare(
            kind, control.counts, variant.counts, confidence_level=confidence_level,
            min_exposures=min_exposures, mixing_sd=mixing_sd, higher_is_better=higher_is_better,
            comparisons=comparisons)
        rows.append(VariantStatistics(variant.name, variant.control, variant.counts,
                                      estimate(kind, variant.counts, confidence_level), comparison))
    srm = sample_ratio_check({v.name: v.counts.n for v in variants}, {v.name: v.weight_bps for v in variants},
                             srm_threshold) if fixed_weights else None
    treatments = [(row, row.comparison) for row in rows if row.comparison is not None]
    verdicts = [comparison.verdict for _, comparison in treatments]
    winner = ""
    if srm is not None and srm.mismatch:
        verdict = ExperimentVerdict.SAMPLE_RATIO_MISMATCH
    elif any(v.counts.n < min_exposures for v in variants):
        verdict = ExperimentVerdict.NOT_ENOUGH_DATA
    elif ComparisonVerdict.VARIANT_BETTER in verdicts:
        verdict = ExperimentVerdict.TREATMENT_BETTER
        better = [row for row, comparison in treatments if comparison.verdict is ComparisonVerdict.VARIANT_BETTER]
        sign = 1 if higher_is_better else -1
        winner = max(better, key=lambda row: sign * row.estimate.value).name
    elif all(v is ComparisonVerdict.VARIANT_WORSE for v in verdicts):
        verdict = ExperimentVerdict.CONTROL_BETTER
    else:
        verdict = ExperimentVerdict.NO_SIGNIFICANT_DIFFERENCE
    return ExperimentResults(kind, confidence_level, rows, srm, verdict, winner, comparisons)


# ----- canary rollback -----

@dataclass(frozen=True)
class CanaryCheck:
    stable_error_rate: float
    canary_error_rate: float
    allowed_error_rate: float  # (1 + relative) * stable rate + absolute, at the observed stable rate
    excess: float  # canary rate minus the allowed rate (positive: over the threshold as observed)
    p_value: float  # always-valid one-sided p-value of "the canary is within the threshold"
    breached: bool  # p_value < alpha with at least min_requests on each side


def canary_check(stable_requests: int, stable_errors: int, canary_requests: int, canary_errors: int, *,
                 max_increase: float = 0.0, max_relative_increase: float = 0.0,
                 alpha: float = DEFAULT_CANARY_ALPHA, mixing_sd: float = DEFAULT_CANARY_MIXING_SD,
                 min_requests: int = DEFAULT_MIN_CANARY_REQUESTS) -> CanaryCheck:
    """Is the canary's error rate above stable's by more than allowed, with confidence?

    Tests H0: p_canary <= (1 + max_relative_increase) * p_stable + max_increase against the
    one-sided alternative with the half-normal mixture SPRT on theta = p_canary - (1 + r) p_stable
    - a (variance from Agresti-Caffo rates, so zero-error sides still count). Always valid:
    checked after every batch of requests, a canary within the threshold is rolled back with
    probability at most alpha over the whole step (near the threshold; far less below it)."""
    if not (0 < alpha < 1) or max_increase < 0 or max_relative_increase < 0 or not mixing_sd > 0:
        raise ValueError("need 0 < alpha < 1, non-negative thresholds and mixing_sd > 0")
    stable, canary = Counts(stable_requests, stable_errors), Counts(canary_requests, canary_errors)
    ps = stable_errors / stable_requests if stable_requests else 0.0
    pc = canary_errors / canary_requests if canary_requests else 0.0
    k = 1 + max_relative_increase
    allowed = k * ps + max_increase
    excess = pc - allowed
    if stable_requests < max(min_requests, 1) or canary_requests < max(min_requests, 1):
        return CanaryCheck(ps, pc, allowed, excess, 1.0, False)
    vs, vc = _unit_variance(MetricKind.BINARY, stable), _unit_variance(MetricKind.BINARY, canary)
    variance = vc / canary_requests + k * k * vs / stable_requests
    tau2 = mixing_sd ** 2 * (vs + vc) / 2
    log_lr = one_sided_mixture_log_likelihood_ratio(excess, variance, tau2)
    p_value = 1.0 if log_lr <= 0 else math.exp(-log_lr)
    return CanaryCheck(ps, pc, allowed, excess, p_value, p_value < alpha)
