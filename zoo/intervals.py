"""The one confidence interval the project reports for a proportion (an accuracy, a sensitivity, a coverage):
the 95% Wilson score interval, from scipy's binomtest.

Small samples are the rule here (16 chest X-rays, 17 brain MRIs, a learner's few dozen test images), and the
Wilson interval stays inside [0, 1] and keeps sensible coverage there where the normal approximation does not
("Interval Estimation for a Binomial Proportion", Brown, Cai and DasGupta).
"""
from __future__ import annotations

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, n: int, digits: int | None = None) -> tuple[float, float] | None:
    """The 95% Wilson score interval of successes / n, rounded to `digits` places if given; None when n is 0
    (no sample, no interval)."""
    if n == 0:
        return None
    from scipy.stats import binomtest  # noqa: PLC0415  (scipy comes with scikit-learn; loaded only when needed)

    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = float(interval.low), float(interval.high)
    return (low, high) if digits is None else (round(low, digits), round(high, digits))
