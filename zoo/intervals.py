"""The confidence intervals the project reports: for a proportion (an accuracy, a sensitivity, a coverage) the 95%
Wilson score interval, from scipy's binomtest; for a balanced accuracy (the mean of per-class recalls) the 95%
interval of the mean of per-class Jeffreys posteriors (balanced_accuracy_interval).

Small samples are the rule here (16 chest X-rays, 17 brain MRIs, a learner's few dozen test images), and the
Wilson interval stays inside [0, 1] and keeps sensible coverage there where the normal approximation does not
("Interval Estimation for a Binomial Proportion", Brown, Cai and DasGupta).
"""
from __future__ import annotations

import numpy as np

__all__ = ["balanced_accuracy_interval", "wilson_interval"]


def wilson_interval(successes: int, n: int, digits: int | None = None) -> tuple[float, float] | None:
    """The 95% Wilson score interval of successes / n, rounded to `digits` places if given; None when n is 0
    (no sample, no interval)."""
    if n == 0:
        return None
    from scipy.stats import binomtest  # noqa: PLC0415  (scipy comes with scikit-learn; loaded only when needed)

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = float(interval.low), float(interval.high)
    return (low, high) if digits is None else (round(low, digits), round(high, digits))


def balanced_accuracy_interval(matrix: np.ndarray, draws: int = 20_000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of balanced accuracy (the mean of per-class recalls) from a confusion matrix (rows: true class).

    Each class's recall k_c/n_c gets its Jeffreys posterior Beta(k_c + 1/2, n_c - k_c + 1/2) (the
    interval Brown, Cai and DasGupta recommend beside Wilson's for small n); the mean over classes of
    independent draws gives the interval's 2.5 and 97.5 percentiles. Widened, if needed, to contain the
    observed value (at 100 % recall the posterior's upper percentile sits just below 1). Classes with no
    image (an empty row) are left out; with none at all the interval is (0, 1).

    Written here rather than taken from a library: scikit-learn and torchmetrics give the balanced accuracy
    itself but no interval for it.
    """
    from scipy.stats import beta  # noqa: PLC0415  (as wilson_interval: scipy loaded only when needed)

    matrix = np.asarray(matrix)
    support = matrix.sum(axis=1)
    present = support > 0
    correct = np.diag(matrix)[present]
    support = support[present]
    if not present.any():
        return (0.0, 1.0)
    rng = np.random.default_rng(seed)
    samples = beta.rvs(correct + 0.5, support - correct + 0.5, size=(draws, len(support)), random_state=rng)
    low, high = np.percentile(samples.mean(axis=1), [2.5, 97.5])
    observed = float(np.mean(correct / support))
    return (float(min(low, observed)), float(max(high, observed)))
