//! Sequential verification: query the key in batches and stop as soon as the evidence is
//! decisive, so a clearly marked suspect answers far fewer queries than the whole key.
//!
//! The test is an always-valid one built on a nonnegative martingale (Ville's inequality), not
//! a repeated fixed-n binomial test (which, looked at after every batch, would exceed its
//! false-positive rate). Under the null, each key item matches with probability at most p0.
//! The statistic is the likelihood ratio of the data under a uniform mixture of alternatives
//! p ∈ [p0, 1] against p0:
//!
//! Λₙ = [∫ₚ₀¹ pᵏ (1−p)ⁿ⁻ᵏ dp / (1−p0)] / [p0ᵏ (1−p0)ⁿ⁻ᵏ]
//!    = B(k+1, n−k+1) · I₁₋ₚ₀(n−k+1, k+1) / ((1−p0) · p0ᵏ (1−p0)ⁿ⁻ᵏ),
//!
//! with k matches in n answers. For every fixed p ≤ p0 the per-alternative ratios are
//! supermartingales with expectation ≤ 1, so their mixture is too, and Ville's inequality gives
//! P(Λₙ ≥ 1/α for some n) ≤ α: stopping the first time Λₙ ≥ 1/α (or never) keeps the
//! false-positive rate at α whatever the stopping time, the batch sizes or the order of the
//! key. The always-valid p-value is min(1, 1 / maxₙ Λₙ). The mixture needs no guess of the
//! marked model's match rate; it pays for that with a few more queries than an SPRT tuned to
//! the true rate would need.

use statrs::function::beta::{beta_reg, ln_beta};

use crate::error::{Error, Result};

/// ln Λₙ for k matches in n answers against null rate p0.
pub(crate) fn ln_mixture_ratio(k: u64, n: u64, p0: f64) -> f64 {
    let (kf, nf) = (k as f64, n as f64);
    let tail = beta_reg(nf - kf + 1.0, kf + 1.0, 1.0 - p0);
    if tail <= 0.0 {
        return f64::NEG_INFINITY;
    }
    let ln_null = if k == 0 { 0.0 } else { kf * p0.ln() } + (nf - kf) * (1.0 - p0).ln();
    ln_beta(kf + 1.0, nf - kf + 1.0) + tail.ln() - (1.0 - p0).ln() - ln_null
}

/// Where a sequential check stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SequentialState {
    /// Not decided yet: query more.
    Continue,
    /// Decisive: the suspect matches the key beyond the null at the false-positive rate.
    Watermarked,
    /// Even if every remaining key item matched, the test could not become decisive.
    Futile,
}

/// A running sequential test over at most `budget` key items.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SequentialTest {
    /// Null match rate.
    pub p0: f64,
    /// False-positive rate.
    pub fpr: f64,
    /// Key items available (the hard query budget for key queries).
    pub budget: u64,
    /// Matches so far.
    pub matches: u64,
    /// Answers so far.
    pub answers: u64,
    /// Largest ln Λ seen.
    pub max_ln_ratio: f64,
}

impl SequentialTest {
    /// A test at false-positive rate `fpr` against null rate `p0`, over `budget` key items.
    pub fn new(p0: f64, fpr: f64, budget: u64) -> Result<Self> {
        if !(p0 > 0.0 && p0 < 1.0) {
            return Err(Error::invalid("null rate", p0, "must be in (0, 1)"));
        }
        if !(fpr > 0.0 && fpr < 1.0) {
            return Err(Error::invalid("fpr", fpr, "must be in (0, 1)"));
        }
        if budget == 0 {
            return Err(Error::invalid("key items", 0, "need at least one"));
        }
        Ok(Self {
            p0,
            fpr,
            budget,
            matches: 0,
            answers: 0,
            max_ln_ratio: f64::NEG_INFINITY,
        })
    }

    /// Adds a batch of answers (`matched` of `answered` were as the key says) and says where
    /// the test stands.
    pub fn observe(&mut self, matched: u64, answered: u64) -> Result<SequentialState> {
        if matched > answered || self.answers + answered > self.budget {
            return Err(Error::invalid(
                "sequential batch",
                format!("{matched} of {answered}"),
                format!(
                    "matches cannot exceed answers, nor answers the {} key items ({} used)",
                    self.budget, self.answers
                ),
            ));
        }
        self.matches += matched;
        self.answers += answered;
        let r = ln_mixture_ratio(self.matches, self.answers, self.p0);
        self.max_ln_ratio = self.max_ln_ratio.max(r);
        Ok(self.state())
    }

    /// Where the test stands now.
    pub fn state(&self) -> SequentialState {
        let target = (1.0 / self.fpr).ln();
        if self.max_ln_ratio >= target {
            return SequentialState::Watermarked;
        }
        let left = self.budget - self.answers;
        // The best case: every remaining item matches (Λ grows with each match).
        let best = ln_mixture_ratio(self.matches + left, self.budget, self.p0);
        if left == 0 || best < target {
            SequentialState::Futile
        } else {
            SequentialState::Continue
        }
    }

    /// The always-valid p-value: min(1, 1 / max Λ).
    pub fn p_value(&self) -> f64 {
        (-self.max_ln_ratio).exp().min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn ratio_matches_direct_integration() {
        // Midpoint rule for ∫ p^k (1-p)^(n-k) dp over [p0, 1], small n.
        for (k, n, p0) in [(3u64, 5u64, 0.1f64), (0, 4, 0.3), (5, 5, 0.5), (7, 20, 0.2)] {
            let steps = 200_000;
            let h = (1.0 - p0) / steps as f64;
            let integral: f64 = (0..steps)
                .map(|i| {
                    let p = p0 + (i as f64 + 0.5) * h;
                    p.powi(k as i32) * (1.0 - p).powi((n - k) as i32) * h
                })
                .sum();
            let direct =
                integral / (1.0 - p0) / (p0.powi(k as i32) * (1.0 - p0).powi((n - k) as i32));
            let ours = ln_mixture_ratio(k, n, p0).exp();
            assert!(
                (ours - direct).abs() / direct < 1e-6,
                "{k}/{n} at {p0}: {ours} vs {direct}"
            );
        }
    }

    /// The exact probability that a statistic crosses its boundary within `budget` answers,
    /// one answer at a time (the most peeking possible), when each item matches with
    /// probability `p0`: dynamic programming over the match count of the paths that have not
    /// crossed yet. `crosses(k, n)` says whether k matches in n answers is decisive.
    fn exact_crossing_probability(p0: f64, budget: u64, crosses: impl Fn(u64, u64) -> bool) -> f64 {
        let mut alive = vec![1.0f64]; // alive[k]: P(k matches so far, not crossed)
        let mut crossed = 0.0;
        for n in 1..=budget {
            let mut next = vec![0.0f64; alive.len() + 1];
            for (k, &mass) in alive.iter().enumerate() {
                next[k] += mass * (1.0 - p0);
                next[k + 1] += mass * p0;
            }
            for (k, mass) in next.iter_mut().enumerate() {
                if *mass > 0.0 && crosses(k as u64, n) {
                    crossed += *mass;
                    *mass = 0.0;
                }
            }
            alive = next;
        }
        crossed
    }

    /// The false-positive rate, computed exactly rather than simulated: under the null the
    /// mixture test crosses 1/fpr within the whole budget, peeking after every answer, with
    /// probability at most fpr, down to fpr 1e-6. The same computation shows a naive repeated
    /// binomial test (decide at fpr after every answer) exceeding its rate, so it can fail.
    #[test]
    fn exact_false_positive_rate_of_continuous_peeking() {
        for (p0, fpr, budget) in [
            (0.1f64, 1e-6f64, 200u64),
            (1.0 / 9.0, 1e-6, 100),
            (0.5, 1e-6, 300),
            (0.1, 1e-3, 400),
            (0.5, 0.05, 500),
        ] {
            let target = (1.0 / fpr).ln();
            let rate =
                exact_crossing_probability(p0, budget, |k, n| ln_mixture_ratio(k, n, p0) >= target);
            assert!(rate <= fpr, "p0 {p0} fpr {fpr} budget {budget}: {rate:e}");
            // Conservative (Ville's bound is not tight for a discrete walk), but not vacuous.
            assert!(rate > fpr / 100.0, "p0 {p0} fpr {fpr}: {rate:e}");
            let naive = exact_crossing_probability(p0, budget, |k, n| {
                crate::stats::binomial_upper_tail(k, n, p0).unwrap() <= fpr
            });
            assert!(naive > fpr, "naive peeking p0 {p0} fpr {fpr}: {naive:e}");
        }
    }

    /// Under the null (matches at rate p0, or below), the test stops with "watermarked" in at
    /// most fpr of runs, checked after every single answer (the most peeking possible).
    #[test]
    fn false_positive_rate_holds_under_continuous_peeking() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for (p0, fpr) in [(0.1, 0.05), (0.5, 0.05), (0.1, 0.01)] {
            let runs = 4000;
            let mut accused = 0;
            for _ in 0..runs {
                let mut t = SequentialTest::new(p0, fpr, 200).unwrap();
                loop {
                    let hit = rng.random_bool(p0) as u64;
                    match t.observe(hit, 1).unwrap() {
                        SequentialState::Continue => continue,
                        SequentialState::Watermarked => {
                            accused += 1;
                            break;
                        }
                        SequentialState::Futile => break,
                    }
                }
            }
            let rate = accused as f64 / runs as f64;
            // The bound is fpr; allow three binomial standard errors of Monte Carlo noise.
            let slack = 3.0 * (fpr * (1.0 - fpr) / runs as f64).sqrt();
            assert!(rate <= fpr + slack, "p0 {p0} fpr {fpr}: {rate}");
        }
    }

    /// A marked suspect (matches at 0.95 against chance 0.1) is decided after a fraction of a
    /// 100-item key at fpr 1e-6; a clean one runs into futility.
    #[test]
    fn a_clear_case_stops_early() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut t = SequentialTest::new(0.1, 1e-6, 100).unwrap();
        let mut state = SequentialState::Continue;
        while state == SequentialState::Continue {
            let hits = (0..5).filter(|_| rng.random_bool(0.95)).count() as u64;
            state = t.observe(hits, 5).unwrap();
        }
        assert_eq!(state, SequentialState::Watermarked);
        assert!(t.answers <= 20, "{} answers", t.answers);
        assert!(t.p_value() <= 1e-6);
        let mut clean = SequentialTest::new(0.1, 1e-6, 100).unwrap();
        let mut s = SequentialState::Continue;
        while s == SequentialState::Continue {
            s = clean.observe(0, 10).unwrap();
        }
        assert_eq!(s, SequentialState::Futile);
        assert!(
            clean.answers < 100,
            "futility is seen before the key runs out"
        );
        assert!(
            SequentialTest::new(0.1, 1e-6, 10)
                .unwrap()
                .observe(3, 2)
                .is_err()
        );
        assert!(SequentialTest::new(1.0, 0.05, 10).is_err());
    }
}
