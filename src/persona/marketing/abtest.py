r"""A/B analysis of conversion rates: tests, intervals, and how many users a test needs.

Formulas (``a`` is the control or variant A, ``b`` the treatment or variant B; ``z_q`` the
standard normal quantile):

* **two-proportion z-test** (pooled): :math:`\hat p = (x_a + x_b) / (n_a + n_b)`,
  :math:`z = (\hat p_b - \hat p_a) / \sqrt{\hat p (1 - \hat p)(1/n_a + 1/n_b)}`; two-sided
  :math:`p = 2 (1 - \Phi(|z|))`. Its square is Pearson's chi-square of the 2x2 table without
  continuity correction.
* **Wilson score interval** of one rate :math:`\hat p = x / n`:
  :math:`\left(\hat p + \frac{z^2}{2n} \pm z \sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}\right)
  / \left(1 + \frac{z^2}{n}\right)`.
* **difference** :math:`\hat p_b - \hat p_a` with a ``"newcombe"`` interval (hybrid score: from the
  two Wilson intervals :math:`(l_a, u_a), (l_b, u_b)`:
  :math:`\delta - \sqrt{(\hat p_b - l_b)^2 + (u_a - \hat p_a)^2}`,
  :math:`\delta + \sqrt{(u_b - \hat p_b)^2 + (\hat p_a - l_a)^2}`; Newcombe 1998, method 10),
  a ``"wald"`` interval (:math:`\delta \pm z \sqrt{\hat p_a \hat q_a / n_a + \hat p_b \hat q_b / n_b}`),
  or a ``"bootstrap"`` percentile interval.
* **sample size** per group for power :math:`1 - \beta` at level :math:`\alpha` with
  :math:`n_b = r\, n_a` and :math:`\bar p = (p_a + r p_b) / (1 + r)`:
  :math:`n_a = \left(z_{1-\alpha/2} \sqrt{\bar p \bar q (1 + 1/r)} + z_{1-\beta}
  \sqrt{p_a q_a + p_b q_b / r}\right)^2 / (p_b - p_a)^2` (Fleiss, no continuity correction).

Only the standard library's :class:`statistics.NormalDist` and numpy are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ..typing import ArrayLike

from .._validate import check_int, check_number
from ..errors import ParameterError

__all__ = ["ABResult", "ab_test", "ab_test_means", "wilson_interval", "two_proportion_ztest", "sample_size",
           "power"]

_N = NormalDist()
ALTERNATIVES = ("two-sided", "larger", "smaller")


def _counts(x, n, what):
    for name, v in ((f"{what} successes", x), (f"{what} size", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (
                isinstance(v, (float, np.floating)) and float(v).is_integer()):
            raise ParameterError(f"{name}: expected a whole number, got {v!r}")
    x, n = int(x), int(n)
    if n <= 0 or x < 0 or x > n:
        raise ParameterError(f"{what}: expected 0 <= successes <= size and size > 0, got {x} of {n}")
    return x, n


#: Largest bootstrap resample count: the work and memory grow with it, and intervals settle far below.
MAX_BOOT = 100_000


def _n_boot(n_boot) -> int:
    return check_int(n_boot, "n_boot", min=2, max=MAX_BOOT, hint="1000-10000 resamples give a stable interval")


def _conf(conf):
    return check_number(conf, "conf", min=0.0, max=1.0, min_open=True, max_open=True,
                        expected="a level in (0, 1) such as 0.95")


def wilson_interval(x: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the rate ``x / n``.

    Examples
    --------
    >>> lo, hi = wilson_interval(10, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.0552, 0.1744)
    """
    x, n = _counts(x, n, "wilson_interval")
    z = _N.inv_cdf(0.5 + _conf(conf) / 2)
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if x == 0:
        lo = 0.0
    if x == n:
        hi = 1.0
    return lo, hi


def two_proportion_ztest(x_a: int, n_a: int, x_b: int, n_b: int, alternative: str = "two-sided") -> tuple[float, float]:
    """Pooled two-proportion z-test of ``p_b - p_a``; returns ``(z, p_value)``.

    ``alternative="larger"`` tests ``p_b > p_a``, ``"smaller"`` tests ``p_b < p_a``.

    Examples
    --------
    >>> z, p = two_proportion_ztest(100, 1000, 120, 1000)
    >>> round(z, 4), round(p, 4)
    (1.4293, 0.1529)
    """
    x_a, n_a = _counts(x_a, n_a, "a")
    x_b, n_b = _counts(x_b, n_b, "b")
    if alternative not in ALTERNATIVES:
        raise ParameterError(f"alternative: expected one of {ALTERNATIVES}, got {alternative!r}")
    pool = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pool * (1 - pool) * (1 / n_a + 1 / n_b))
    diff = x_b / n_b - x_a / n_a
    if se == 0:
        return 0.0, 1.0
    z = diff / se
    # erfc keeps the tail accurate far out (1 - cdf would round to 0 beyond z ~ 8)
    if alternative == "two-sided":
        p = math.erfc(abs(z) / math.sqrt(2.0))
    elif alternative == "larger":
        p = 0.5 * math.erfc(z / math.sqrt(2.0))
    else:
        p = 0.5 * math.erfc(-z / math.sqrt(2.0))
    return z, min(1.0, p)


@dataclass(frozen=True)
class ABResult:
    """The comparison of two rates (or means): ``diff = b - a`` with its interval and test.

    ``significant`` is ``p_value < 1 - conf``.
    """

    rate_a: float
    rate_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    statistic: float
    n_a: int
    n_b: int
    x_a: float = float("nan")
    x_b: float = float("nan")
    ci_a: tuple = (float("nan"), float("nan"))
    ci_b: tuple = (float("nan"), float("nan"))
    relative_lift: float = float("nan")
    method: str = "newcombe"
    conf: float = 0.95
    name_a: str = "a"
    name_b: str = "b"

    @property
    def significant(self) -> bool:
        return self.p_value < 1.0 - self.conf

    def __str__(self) -> str:
        lift = "" if not math.isfinite(self.relative_lift) else f" ({self.relative_lift:+.1%} relative)"
        return (f"{self.name_b} {self.rate_b:.4g} vs {self.name_a} {self.rate_a:.4g}: difference {self.diff:+.4g}"
                f"{lift}, {self.conf:.0%} CI [{self.ci_low:+.4g}, {self.ci_high:+.4g}] ({self.method}), "
                f"p = {self.p_value:.3g} (n = {self.n_b} vs {self.n_a})")


def ab_test(x_a: int, n_a: int, x_b: int, n_b: int, *, conf: float = 0.95, ci: str = "newcombe",
            alternative: str = "two-sided", n_boot: int = 4000, random_state: int = 0,
            names: tuple[str, str] = ("a", "b")) -> ABResult:
    """Compare the conversion rates ``x_a / n_a`` (control, A) and ``x_b / n_b`` (treatment, B).

    Parameters
    ----------
    x_a, n_a, x_b, n_b : int
        Conversions and recipients of each group.
    conf : float
        Confidence level of the intervals.
    ci : {"newcombe", "wald", "bootstrap"}
        Interval of the difference (see the module docstring); the p-value always comes from the
        pooled two-proportion z-test.
    alternative : {"two-sided", "larger", "smaller"}
    n_boot, random_state : for ``ci="bootstrap"``.

    Examples
    --------
    >>> r = ab_test(100, 1000, 120, 1000)
    >>> round(r.diff, 3), round(r.p_value, 4), r.significant
    (0.02, 0.1529, False)
    """
    x_a, n_a = _counts(x_a, n_a, "a")
    x_b, n_b = _counts(x_b, n_b, "b")
    conf = _conf(conf)
    z_stat, p_value = two_proportion_ztest(x_a, n_a, x_b, n_b, alternative)
    pa, pb = x_a / n_a, x_b / n_b
    d = pb - pa
    q = _N.inv_cdf(0.5 + conf / 2)
    ci_a, ci_b = wilson_interval(x_a, n_a, conf), wilson_interval(x_b, n_b, conf)
    if ci == "newcombe":
        lo = d - math.sqrt((pb - ci_b[0]) ** 2 + (ci_a[1] - pa) ** 2)
        hi = d + math.sqrt((ci_b[1] - pb) ** 2 + (pa - ci_a[0]) ** 2)
    elif ci == "wald":
        half = q * math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
        lo, hi = d - half, d + half
    elif ci == "bootstrap":
        n_boot = _n_boot(n_boot)
        rng = np.random.default_rng(random_state)
        boot = rng.binomial(n_b, pb, n_boot) / n_b - rng.binomial(n_a, pa, n_boot) / n_a
        lo, hi = (float(v) for v in np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2]))
    else:
        raise ParameterError(f"ci: expected 'newcombe', 'wald' or 'bootstrap', got {ci!r}")
    return ABResult(rate_a=pa, rate_b=pb, diff=d, ci_low=lo, ci_high=hi, p_value=p_value, statistic=z_stat,
                    n_a=n_a, n_b=n_b, x_a=x_a, x_b=x_b, ci_a=ci_a, ci_b=ci_b,
                    relative_lift=d / pa if pa > 0 else float("nan"), method=ci, conf=conf,
                    name_a=str(names[0]), name_b=str(names[1]))


def ab_test_means(values_a: ArrayLike, values_b: ArrayLike, *, conf: float = 0.95, ci: str = "bootstrap",
                  n_boot: int = 4000, random_state: int = 0,
                  names: tuple[str, str] = ("a", "b")) -> ABResult:
    """Compare means of a per-recipient metric (revenue, margin): Welch's z and a bootstrap or
    normal interval of ``mean(b) - mean(a)``.

    Examples
    --------
    >>> r = ab_test_means([0, 0, 10, 0, 5] * 40, [0, 20, 10, 0, 5] * 40, ci="normal")
    >>> round(r.diff, 2), r.ci_low > 0
    (4.0, True)
    """
    try:
        a = np.asarray(values_a, dtype=np.float64).reshape(-1)
        b = np.asarray(values_b, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ParameterError("ab_test_means: expected two sequences of numbers (one value per recipient), got "
                             f"{type(values_a).__name__} and {type(values_b).__name__}") from None
    if len(a) < 2 or len(b) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ParameterError("ab_test_means: expected at least two finite values per group")
    conf = _conf(conf)
    d = float(b.mean() - a.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    stat = d / se if se > 0 else 0.0
    p_value = math.erfc(abs(stat) / math.sqrt(2.0)) if se > 0 else 1.0
    if ci == "normal":
        q = _N.inv_cdf(0.5 + conf / 2)
        lo, hi = d - q * se, d + q * se
    elif ci == "bootstrap":
        n_boot = _n_boot(n_boot)
        rng = np.random.default_rng(random_state)
        ma = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(axis=1)
        mb = b[rng.integers(0, len(b), (n_boot, len(b)))].mean(axis=1)
        lo, hi = (float(v) for v in np.quantile(mb - ma, [(1 - conf) / 2, (1 + conf) / 2]))
    else:
        raise ParameterError(f"ci: expected 'bootstrap' or 'normal', got {ci!r}")
    return ABResult(rate_a=float(a.mean()), rate_b=float(b.mean()), diff=d, ci_low=lo, ci_high=hi, p_value=p_value,
                    statistic=stat, n_a=len(a), n_b=len(b), relative_lift=d / a.mean() if a.mean() else float("nan"),
                    method=ci, conf=conf, name_a=str(names[0]), name_b=str(names[1]))


def _rates(p_a, p_b):
    for name, p in (("p_a", p_a), ("p_b", p_b)):
        check_number(p, name, min=0.0, max=1.0, min_open=True, max_open=True, expected="a rate in (0, 1)")
    if p_a == p_b:
        raise ParameterError("the two rates are equal: there is no difference to detect")
    return float(p_a), float(p_b)


def _alpha_power(alpha, power_, alternative):
    if not 0.0 < alpha < 1.0 or not 0.0 < power_ < 1.0:
        raise ParameterError(f"alpha and power: expected values in (0, 1), got {alpha!r}, {power_!r}")
    if alternative not in ("two-sided", "one-sided"):
        raise ParameterError(f"alternative: expected 'two-sided' or 'one-sided', got {alternative!r}")
    return _N.inv_cdf(1 - alpha / 2 if alternative == "two-sided" else 1 - alpha), _N.inv_cdf(power_)


def sample_size(p_a: float, p_b: float | None = None, *, mde: float | None = None, relative: bool = False,
                alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0,
                alternative: str = "two-sided") -> tuple[int, int]:
    """Users needed per group to detect ``p_a -> p_b`` with the pooled z-test.

    Parameters
    ----------
    p_a : float
        Baseline (control) conversion rate.
    p_b : float, optional
        The rate to detect; or give ``mde``.
    mde : float, optional
        Minimum detectable effect: ``p_b = p_a + mde`` (or ``p_a * (1 + mde)`` with ``relative=True``).
    alpha, power : float
        Significance level and power.
    ratio : float
        ``n_b / n_a`` (e.g. 9 for a 10 % holdout).
    alternative : {"two-sided", "one-sided"}

    Returns
    -------
    (n_a, n_b) : tuple of int

    Examples
    --------
    >>> sample_size(0.10, 0.12)
    (3841, 3841)
    >>> sample_size(0.02, mde=0.10, relative=True, ratio=9)
    (45476, 409284)
    """
    if (p_b is None) == (mde is None):
        raise ParameterError("sample_size: give exactly one of p_b and mde")
    if p_b is None:
        p_b = p_a * (1 + mde) if relative else p_a + mde
    p_a, p_b = _rates(p_a, p_b)
    check_number(ratio, "ratio", min=0.0, min_open=True, finite=False, expected="n_b / n_a > 0")
    za, zb = _alpha_power(alpha, power, alternative)
    r = float(ratio)
    pbar = (p_a + r * p_b) / (1 + r)
    num = za * math.sqrt(pbar * (1 - pbar) * (1 + 1 / r)) + zb * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b) / r)
    n_a = math.ceil(num * num / (p_b - p_a) ** 2 - 1e-9)
    return n_a, math.ceil(r * n_a - 1e-9)


def power(p_a: float, p_b: float, n_a: int, n_b: int | None = None, *, alpha: float = 0.05,
          alternative: str = "two-sided") -> float:
    """Power of the pooled z-test to detect ``p_a -> p_b`` with ``n_a`` and ``n_b`` users (normal
    approximation, the far tail ignored -- the same approximation :func:`sample_size` inverts).

    Examples
    --------
    >>> round(power(0.10, 0.12, 3841), 3)
    0.8
    """
    p_a, p_b = _rates(p_a, p_b)
    n_b = n_a if n_b is None else n_b
    if n_a <= 0 or n_b <= 0:
        raise ParameterError("power: group sizes must be positive")
    za, _ = _alpha_power(alpha, 0.5, alternative)
    r = n_b / n_a
    pbar = (p_a + r * p_b) / (1 + r)
    se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_a + 1 / n_b))
    se1 = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    return _N.cdf((abs(p_b - p_a) - za * se0) / se1)
