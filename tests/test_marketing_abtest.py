"""A/B analysis: hand-computed cases, scipy.stats references, published values, simulation checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import persona as ps
from persona.marketing import ab_test, ab_test_means, power, sample_size, two_proportion_ztest, wilson_interval


def test_ztest_hand_computed():
    # p_a = 0.10, p_b = 0.12, pooled 0.11: se = sqrt(0.11 * 0.89 * 2 / 1000) = 0.0139929
    z, p = two_proportion_ztest(100, 1000, 120, 1000)
    se = math.sqrt(0.11 * 0.89 * 2 / 1000)
    assert z == pytest.approx(0.02 / se, rel=1e-12)
    assert z == pytest.approx(1.42930, abs=1e-5)
    assert p == pytest.approx(0.152918, abs=1e-6)
    zl, pl = two_proportion_ztest(100, 1000, 120, 1000, alternative="larger")
    zs, ps_ = two_proportion_ztest(100, 1000, 120, 1000, alternative="smaller")
    assert pl == pytest.approx(p / 2) and ps_ == pytest.approx(1 - p / 2)
    # far tails stay accurate instead of rounding to 0
    z, p = two_proportion_ztest(100, 10000, 300, 10000)
    assert p == pytest.approx(2 * stats.norm.sf(z), rel=1e-9) and 0 < p < 1e-20


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.data())
def test_ztest_equals_chi_square_without_continuity_correction(n_a, n_b, data):
    x_a = data.draw(st.integers(0, n_a))
    x_b = data.draw(st.integers(0, n_b))
    if x_a + x_b in (0, n_a + n_b):
        return  # a degenerate table: no variance
    z, p = two_proportion_ztest(x_a, n_a, x_b, n_b)
    chi2, p_ref, _, _ = stats.chi2_contingency([[x_a, n_a - x_a], [x_b, n_b - x_b]], correction=False)
    assert z * z == pytest.approx(chi2, rel=1e-9, abs=1e-12)
    assert p == pytest.approx(p_ref, rel=1e-7, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.data(), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_matches_scipy(n, data, conf):
    x = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(x, n, conf)
    ref = stats.binomtest(x, n).proportion_ci(confidence_level=conf, method="wilson")
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= lo <= x / n <= hi <= 1.0


def test_wilson_hand_computed():
    # x = 10, n = 100, z = 1.959964: centre (0.1 + 0.019207) / 1.038415, half 0.059592 / 1.038415
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.055229, abs=1e-6) and hi == pytest.approx(0.174366, abs=1e-6)


def test_newcombe_interval_reproduces_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, method 10: 56/70 - 48/80 -> (0.0524, 0.3339)
    r = ab_test(48, 80, 56, 70)
    assert r.diff == pytest.approx(0.2)
    assert r.ci_low == pytest.approx(0.0524, abs=5e-5) and r.ci_high == pytest.approx(0.3339, abs=5e-5)
    assert r.significant


def test_wald_interval_hand_computed_and_bootstrap_close_to_it():
    r = ab_test(100, 1000, 120, 1000, ci="wald")
    half = 1.959964 * math.sqrt(0.1 * 0.9 / 1000 + 0.12 * 0.88 / 1000)
    assert r.ci_low == pytest.approx(0.02 - half, abs=1e-6) and r.ci_high == pytest.approx(0.02 + half, abs=1e-6)
    b = ab_test(100, 1000, 120, 1000, ci="bootstrap", n_boot=4000, random_state=1)
    assert b.ci_low == pytest.approx(r.ci_low, abs=0.003) and b.ci_high == pytest.approx(r.ci_high, abs=0.003)
    assert b.p_value == r.p_value and not r.significant
    assert r.relative_lift == pytest.approx(0.2)
    assert "difference +0.02" in str(r)


def test_newcombe_interval_covers_the_true_difference_at_about_its_level():
    rng = np.random.default_rng(7)
    pa, pb, n = 0.05, 0.08, 600
    xa, xb = rng.binomial(n, pa, 3000), rng.binomial(n, pb, 3000)
    cover = np.mean([(r := ab_test(a, n, b, n)).ci_low <= pb - pa <= r.ci_high for a, b in zip(xa, xb)])
    assert 0.93 <= cover <= 0.97


def test_sample_size_hand_computed():
    # classic textbook case: 10 % -> 12 %, alpha 0.05 two-sided, power 0.8
    za, zb = 1.959964, 0.841621
    n = (za * math.sqrt(2 * 0.11 * 0.89) + zb * math.sqrt(0.1 * 0.9 + 0.12 * 0.88)) ** 2 / 0.02**2
    assert sample_size(0.10, 0.12) == (math.ceil(n), math.ceil(n)) == (3841, 3841)
    assert sample_size(0.10, mde=0.02) == (3841, 3841)
    assert sample_size(0.10, mde=0.2, relative=True) == (3841, 3841)
    n1, _ = sample_size(0.10, 0.12, alternative="one-sided")
    assert n1 < 3841


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 0.5), st.floats(0.05, 1.0), st.sampled_from([1.0, 0.5, 3.0, 9.0]),
       st.sampled_from([0.8, 0.9]))
def test_sample_size_is_the_smallest_n_with_the_power(p_a, rel, ratio, target):
    p_b = min(0.99, p_a * (1 + rel))
    n_a, n_b = sample_size(p_a, p_b, ratio=ratio, power=target)
    assert n_b == math.ceil(ratio * n_a - 1e-9)
    assert power(p_a, p_b, n_a, ratio * n_a) >= target - 1e-9
    if n_a > 1:
        assert power(p_a, p_b, n_a - 1, ratio * (n_a - 1)) < target


def test_sample_size_gives_the_power_in_simulation():
    n_a, n_b = sample_size(0.10, 0.15)
    rng = np.random.default_rng(3)
    xa, xb = rng.binomial(n_a, 0.10, 2000), rng.binomial(n_b, 0.15, 2000)
    hits = np.mean([two_proportion_ztest(a, n_a, b, n_b)[1] < 0.05 for a, b in zip(xa, xb)])
    assert 0.76 <= hits <= 0.84


def test_means_normal_interval_hand_computed_and_bootstrap():
    a = np.array([0, 0, 10, 0, 5] * 40, dtype=float)
    b = np.array([0, 20, 10, 0, 5] * 40, dtype=float)
    se = math.sqrt(a.var(ddof=1) / 200 + b.var(ddof=1) / 200)
    r = ab_test_means(a, b, ci="normal")
    assert r.diff == pytest.approx(4.0) and r.ci_low == pytest.approx(4.0 - 1.959964 * se, abs=1e-5)
    assert r.p_value == pytest.approx(2 * stats.norm.sf(4.0 / se))
    boot = ab_test_means(a, b, random_state=0)
    assert boot.ci_low == pytest.approx(r.ci_low, abs=0.35) and boot.ci_high == pytest.approx(r.ci_high, abs=0.35)


@pytest.mark.parametrize("call, match", [
    (lambda: ab_test(5, 3, 1, 10), "successes"),
    (lambda: ab_test(1, 10, 1, 10, ci="exact"), "ci"),
    (lambda: ab_test(1, 10, 1, 10, conf=95), "conf"),
    (lambda: two_proportion_ztest(1, 10, 1, 10, alternative="up"), "alternative"),
    (lambda: sample_size(0.1), "exactly one"),
    (lambda: sample_size(0.1, 0.1), "equal"),
    (lambda: sample_size(0.1, 0.2, ratio=0), "ratio"),
    (lambda: wilson_interval(1.5, 10), "whole"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ps.ParameterError, match=match):
        call()
