//! The shadow-calibrated null's false-positive rate, inside and outside its assumptions.
//!
//! The null (see `nnmark::shadow`) takes p0 = max(floor, the largest 99% upper Clopper–Pearson
//! bound of one shadow's match rate) and accuses when the suspect's matches reach the binomial
//! threshold at α. It assumes the suspect matches at a mean rate of at most p0, items
//! independently. Inside those assumptions the level holds however unevenly the rate spreads
//! over items (exact Poisson-binomial tails below). Outside them, in a population model where
//! unmarked models' match rates follow a Beta distribution and the shadows and the suspect are
//! independent draws from it, the rate of accusing an innocent model is computed by drawing the
//! shadows and the suspect's rate and averaging the exact binomial tail at the threshold (a
//! Rao–Blackwellised estimate, precise enough at α = 1e-6).

use nnmark::stats;
use nnmark::verdict::NullModel;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Binomial, Distribution};

struct Population {
    name: &'static str,
    /// Beta(a, b) mixture components with weights.
    components: Vec<(f64, f64, f64)>,
}

impl Population {
    fn draw(&self, rng: &mut ChaCha8Rng) -> f64 {
        let u: f64 = rand::Rng::random(rng);
        let mut acc = 0.0;
        for &(w, a, b) in &self.components {
            acc += w;
            if u <= acc {
                return Beta::new(a, b).unwrap().sample(rng);
            }
        }
        let &(_, a, b) = self.components.last().unwrap();
        Beta::new(a, b).unwrap().sample(rng)
    }
}

/// Mean accusation probability of an innocent suspect.
fn false_positive_rate(
    pop: &Population,
    n: u64,
    shadows: usize,
    floor: f64,
    alpha: f64,
    trials: usize,
    seed: u64,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for _ in 0..trials {
        let matches: Vec<u64> = (0..shadows)
            .map(|_| {
                let theta = pop.draw(&mut rng);
                Binomial::new(n, theta).unwrap().sample(&mut rng)
            })
            .collect();
        let null = NullModel::Calibrated {
            queries: vec![n; shadows],
            matches,
            confidence: 0.99,
            references: vec![String::new(); shadows],
            floor,
        };
        let p0 = null.rate().unwrap();
        let t = stats::upper_threshold(n, p0, alpha).unwrap();
        if t > n {
            continue;
        }
        let theta_s = pop.draw(&mut rng);
        total += stats::binomial_upper_tail(t, n, theta_s).unwrap();
    }
    total / trials as f64
}

fn populations() -> Vec<Population> {
    vec![
        // Zhang-like: most models never answer the target class, a few sometimes do.
        Population {
            name: "rare matches, Beta(0.5, 20)",
            components: vec![(1.0, 0.5, 20.0)],
        },
        // AIME-like: models share about 40% of the mispredictions, with spread.
        Population {
            name: "shared mistakes, Beta(8, 12)",
            components: vec![(1.0, 8.0, 12.0)],
        },
        // Heterogeneous: mean 0.1, sd 0.065.
        Population {
            name: "spread, Beta(2, 18)",
            components: vec![(1.0, 2.0, 18.0)],
        },
    ]
}

/// P(S ≥ t) for S a sum of independent Bernoulli(q_i): the exact Poisson-binomial tail.
fn poisson_binomial_tail(q: &[f64], t: usize) -> f64 {
    let mut dist = vec![1.0f64];
    for &p in q {
        let mut next = vec![0.0; dist.len() + 1];
        for (k, &d) in dist.iter().enumerate() {
            next[k] += d * (1.0 - p);
            next[k + 1] += d * p;
        }
        dist = next;
    }
    dist.iter().skip(t).sum()
}

/// Under the null's stated assumptions (the suspect's mean match rate at most p0, items
/// independent) the test keeps its level however unevenly the rate spreads over items: a
/// suspect that matches some items always and others never, or a few items often, is accused
/// no more often than the binomial test allows (Hoeffding 1956).
#[test]
fn uneven_items_under_the_stated_assumptions_keep_the_level() {
    let n = 100;
    for p0 in [0.05, 0.1, 0.3, 0.6] {
        for alpha in [1e-3, 1e-6] {
            let t = stats::upper_threshold(n as u64, p0, alpha).unwrap() as usize;
            let budget = p0 * n as f64;
            let whole = budget.floor() as usize;
            let profiles: Vec<(&str, Vec<f64>)> = vec![
                ("even", vec![p0; n]),
                (
                    "some items always, the rest never",
                    (0..n)
                        .map(|i| match i.cmp(&whole) {
                            std::cmp::Ordering::Less => 1.0,
                            std::cmp::Ordering::Equal => budget - whole as f64,
                            std::cmp::Ordering::Greater => 0.0,
                        })
                        .collect(),
                ),
                (
                    "half the items at twice the rate",
                    (0..n)
                        .map(|i| if i % 2 == 0 { (2.0 * p0).min(1.0) } else { 0.0 })
                        .collect(),
                ),
                (
                    "a gradient",
                    (0..n)
                        .map(|i| 2.0 * p0 * i as f64 / (n - 1) as f64)
                        .map(|q| q.min(1.0))
                        .collect(),
                ),
            ];
            for (name, q) in profiles {
                let mean: f64 = q.iter().sum::<f64>() / n as f64;
                assert!(mean <= p0 + 1e-12, "{name}: mean {mean}");
                let tail = poisson_binomial_tail(&q, t);
                assert!(
                    tail <= alpha * (1.0 + 1e-9),
                    "p0 {p0}, alpha {alpha:e}, {name}: P(accused) = {tail:e}"
                );
            }
        }
    }
}

/// Outside those assumptions: when unmarked models' match rates vary across a population (a
/// Beta distribution) and the suspect is one more draw from it, six shadows cannot see the
/// population's tail, and the rate of accusing an innocent model at a nominal 1e-6 is far above
/// 1e-6. The README and BENCHMARKS.md state this range (1e-5 to 4e-4 in 20,000-draw runs); the
/// test keeps that statement honest in both directions.
#[test]
fn six_shadows_do_not_certify_one_in_a_million_under_a_population_model() {
    for pop in populations() {
        let fpr = false_positive_rate(&pop, 100, 6, 0.0, 1e-6, 3_000, 1);
        eprintln!(
            "{}: nominal 1e-6, 6 shadows, 100 items: FPR {fpr:.3e}",
            pop.name
        );
        assert!(
            (1e-6..=1e-3).contains(&fpr),
            "{}: FPR {fpr:e} outside the documented range",
            pop.name
        );
    }
}
