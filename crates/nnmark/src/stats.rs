//! Exact binomial statistics for verdicts: tail probabilities, decision thresholds and
//! Clopper–Pearson intervals. Tails are summed in log space, so p-values down to ~1e-300 are
//! exact rather than rounded to 0 or 1.

use statrs::distribution::{Beta, ContinuousCDF};
use statrs::function::gamma::ln_gamma;

use crate::error::{Error, Result};

fn ln_pmf(k: u64, n: u64, p: f64) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    let ln_choose = ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0);
    let a = if k == 0 { 0.0 } else { kf * p.ln() };
    let b = if k == n {
        0.0
    } else {
        (nf - kf) * (1.0 - p).ln()
    };
    ln_choose + a + b
}

fn log_sum_exp(terms: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = terms.filter(|t| t.is_finite()).collect();
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    m + v.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

fn check(k: u64, n: u64, p: f64) -> Result<()> {
    if k > n {
        return Err(Error::invalid(
            "matches",
            k,
            format!("cannot exceed the {n} queries"),
        ));
    }
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("null match rate", p, "must be in [0, 1]"));
    }
    Ok(())
}

/// P(X ≥ k) for X ~ Binomial(n, p): the one-sided p-value of k or more matches.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> Result<f64> {
    check(k, n, p)?;
    if k == 0 {
        return Ok(1.0);
    }
    if p == 0.0 {
        return Ok(0.0);
    }
    if p == 1.0 {
        return Ok(1.0);
    }
    Ok(log_sum_exp((k..=n).map(|i| ln_pmf(i, n, p))).exp().min(1.0))
}

/// P(X ≤ k) for X ~ Binomial(n, p).
pub fn binomial_lower_tail(k: u64, n: u64, p: f64) -> Result<f64> {
    check(k, n, p)?;
    if k == n {
        return Ok(1.0);
    }
    if p == 0.0 {
        return Ok(1.0);
    }
    if p == 1.0 {
        return Ok(0.0);
    }
    Ok(log_sum_exp((0..=k).map(|i| ln_pmf(i, n, p))).exp().min(1.0))
}

/// The smallest k with P(X ≥ k) ≤ alpha (n + 1 when no k qualifies).
pub fn upper_threshold(n: u64, p: f64, alpha: f64) -> Result<u64> {
    for k in 0..=n {
        if binomial_upper_tail(k, n, p)? <= alpha {
            return Ok(k);
        }
    }
    Ok(n + 1)
}

/// Two-sided Clopper–Pearson interval for a binomial proportion at `confidence`.
pub fn clopper_pearson(k: u64, n: u64, confidence: f64) -> Result<(f64, f64)> {
    if n == 0 {
        return Err(Error::invalid(
            "queries",
            0,
            "an interval needs at least one query",
        ));
    }
    check(k, n, 0.5)?;
    let a = (1.0 - confidence) / 2.0;
    let (kf, nf) = (k as f64, n as f64);
    let lo = if k == 0 {
        0.0
    } else {
        Beta::new(kf, nf - kf + 1.0)
            .expect("valid shape")
            .inverse_cdf(a)
    };
    let hi = if k == n {
        1.0
    } else {
        Beta::new(kf + 1.0, nf - kf)
            .expect("valid shape")
            .inverse_cdf(1.0 - a)
    };
    Ok((lo, hi))
}

/// One-sided upper Clopper–Pearson bound at `confidence`.
pub fn clopper_pearson_upper(k: u64, n: u64, confidence: f64) -> Result<f64> {
    Ok(clopper_pearson(k, n, 1.0 - 2.0 * (1.0 - confidence))?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_p_of_at_least_k_not_more_than_k() {
        // Binomial(4, 1/2): P(X>=3) = (4 + 1)/16, P(X>3) would be 1/16.
        assert!((binomial_upper_tail(3, 4, 0.5).unwrap() - 5.0 / 16.0).abs() < 1e-12);
        assert!((binomial_upper_tail(4, 4, 0.5).unwrap() - 1.0 / 16.0).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0, 4, 0.5).unwrap(), 1.0);
        // Binomial(10, 0.1): P(X>=2) = 1 - 0.9^10 - 10*0.1*0.9^9, by hand.
        let exact = 1.0 - 0.9f64.powi(10) - 10.0 * 0.1 * 0.9f64.powi(9);
        assert!((binomial_upper_tail(2, 10, 0.1).unwrap() - exact).abs() < 1e-12);
        // Tiny tails stay exact: 100 of 100 at chance 1/10 is 1e-100.
        let t = binomial_upper_tail(100, 100, 0.1).unwrap();
        assert!((t.log10() + 100.0).abs() < 1e-9, "{t}");
    }

    #[test]
    fn frontier_stitching_tolerates_41_errors_of_100() {
        // Accept when P(Binomial(100, 1/2) <= m) < 0.05: m = 41 passes, 42 does not.
        assert!(binomial_lower_tail(41, 100, 0.5).unwrap() < 0.05);
        assert!(binomial_lower_tail(42, 100, 0.5).unwrap() >= 0.05);
    }

    /// Values computed independently (exact binomial sums with Python's `math.comb`, and
    /// bisection on the binomial CDF for the bound), not by these functions.
    #[test]
    fn thresholds_and_bounds_match_an_independent_computation() {
        assert_eq!(upper_threshold(100, 0.1, 1e-6).unwrap(), 28);
        assert_eq!(upper_threshold(100, 0.1, 1e-9).unwrap(), 33);
        assert_eq!(upper_threshold(100, 0.1, 1e-3).unwrap(), 21);
        assert_eq!(upper_threshold(100, 1.0 / 9.0, 1e-6).unwrap(), 29);
        let u = clopper_pearson_upper(35, 100, 0.99).unwrap();
        assert!((u - 0.470_239_051_3).abs() < 1e-8, "{u}");
    }

    #[test]
    fn threshold_and_interval() {
        let k = upper_threshold(100, 0.1, 1e-6).unwrap();
        assert!(binomial_upper_tail(k, 100, 0.1).unwrap() <= 1e-6);
        assert!(binomial_upper_tail(k - 1, 100, 0.1).unwrap() > 1e-6);
        let (lo, hi) = clopper_pearson(5, 10, 0.95).unwrap();
        // Reference values of the exact interval for 5/10.
        assert!(
            (lo - 0.187_086).abs() < 1e-5 && (hi - 0.812_914).abs() < 1e-5,
            "{lo} {hi}"
        );
        assert!(binomial_upper_tail(11, 10, 0.5).is_err());
    }
}
