//! Magnitude pruning (Han et al. 2015; the removal attack of Uchida et al. and most watermark
//! papers): set the smallest-magnitude weights to zero, per layer or over the whole network.
//! Only weight matrices and kernels (tensors of rank ≥ 2) are pruned; biases and
//! normalisation parameters are left as they are, as in the papers.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::error::{Error, Result};
use crate::model::Model;

/// Where the pruning threshold is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneScope {
    /// Each layer loses `rate` of its own weights.
    Layer,
    /// One threshold over all weights of the network.
    Global,
}

/// Magnitude pruning at a rate.
#[derive(Debug, Clone, Copy)]
pub struct Prune {
    /// Fraction of weights set to zero, in [0, 1).
    pub rate: f64,
    /// Per layer or global.
    pub scope: PruneScope,
}

fn build(scope: PruneScope, a: &mut AttackArgs) -> Result<Box<dyn Attack>> {
    Ok(Box::new(Prune {
        rate: a.rate()?,
        scope,
    }))
}

pub(super) const PRUNE: AttackInfo = AttackInfo {
    name: "prune",
    summary: "layer-wise magnitude pruning: zero the rate fraction of smallest weights in each layer (prune:0.5)",
    build: |a| build(PruneScope::Layer, a),
};
pub(super) const PRUNE_GLOBAL: AttackInfo = AttackInfo {
    name: "prune-global",
    summary: "global magnitude pruning: one threshold over all weights (prune-global:0.5)",
    build: |a| build(PruneScope::Global, a),
};

impl Attack for Prune {
    fn describe(&self) -> String {
        match self.scope {
            PruneScope::Layer => format!("prune:{}", self.rate),
            PruneScope::Global => format!("prune-global:{}", self.rate),
        }
    }

    fn remove(&self, model: Model, _ctx: &AttackContext<'_>) -> Result<Model> {
        prune_magnitude(model, self.rate, self.scope)
    }
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensor")
}

/// The magnitude at or below which the `rate` fraction of `abs` lies (None: prune nothing).
fn threshold(mut abs: Vec<f32>, rate: f64) -> Option<f32> {
    let k = (rate * abs.len() as f64).round() as usize;
    if k == 0 || abs.is_empty() {
        return None;
    }
    let (_, kth, _) = abs.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
    Some(*kth)
}

struct Magnitudes(Vec<f32>);
impl ModuleVisitor for Magnitudes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D >= 2 {
            self.0
                .extend(values(&param.val()).into_iter().map(f32::abs));
        }
    }
}

struct Pruner {
    rate: f64,
    global: Option<f32>,
}
impl ModuleMapper for Pruner {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 {
            return param;
        }
        let (rate, global) = (self.rate, self.global);
        param.map(|t| {
            let shape = t.shape();
            let device = t.device();
            let mut v = values(&t);
            let thr = match global {
                Some(g) => Some(g),
                None => threshold(v.iter().map(|x| x.abs()).collect(), rate),
            };
            let Some(thr) = thr else { return t };
            for x in &mut v {
                if x.abs() <= thr {
                    *x = 0.0;
                }
            }
            Tensor::from_data(TensorData::new(v, shape), &device)
        })
    }
}

/// Sets the `rate` fraction of smallest-magnitude weights to zero.
pub fn prune_magnitude(model: Model, rate: f64, scope: PruneScope) -> Result<Model> {
    if !(0.0..1.0).contains(&rate) {
        return Err(Error::invalid("pruning rate", rate, "must be in [0, 1)"));
    }
    let global = match scope {
        PruneScope::Layer => None,
        PruneScope::Global => {
            let mut m = Magnitudes(Vec::new());
            model.net.visit(&mut m);
            match threshold(m.0, rate) {
                Some(t) => Some(t),
                None => return Ok(model),
            }
        }
    };
    let mut pruner = Pruner { rate, global };
    Ok(Model {
        spec: model.spec,
        net: model.net.map(&mut pruner),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::model::{Architecture, ModelSpec, Normalization};

    fn zeros_in(model: &Model) -> (usize, usize) {
        let mut m = Magnitudes(Vec::new());
        model.net.visit(&mut m);
        (m.0.iter().filter(|&&x| x == 0.0).count(), m.0.len())
    }

    /// Each weight tensor's values, in visiting order.
    struct Layers(Vec<Vec<f32>>);
    impl ModuleVisitor for Layers {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D >= 2 {
                self.0.push(values(&param.val()));
            }
        }
    }

    fn layers(model: &Model) -> Vec<Vec<f32>> {
        let mut l = Layers(Vec::new());
        model.net.visit(&mut l);
        l.0
    }

    /// The largest magnitude zeroed and the smallest kept, over `pairs` of (before, after);
    /// kept weights must be unchanged.
    fn split<'a>(pairs: impl Iterator<Item = (&'a f32, &'a f32)>) -> (f32, f32) {
        let (mut max_pruned, mut min_kept) = (0f32, f32::INFINITY);
        for (&b, &a) in pairs {
            if a == 0.0 && b != 0.0 {
                max_pruned = max_pruned.max(b.abs());
            } else {
                assert_eq!(a, b, "a kept weight changed");
                min_kept = min_kept.min(b.abs());
            }
        }
        (max_pruned, min_kept)
    }

    /// Magnitude pruning removes the smallest weights, not any weights: every weight it zeroes
    /// is no larger than every weight it keeps (per layer for layer-wise pruning, over the
    /// network for global pruning), kept weights are untouched, and global pruning spreads the
    /// rate unevenly over layers where layer-wise pruning gives each layer the same.
    #[test]
    fn prunes_the_smallest_weights_per_layer_or_over_the_network() {
        let device = Device::flex();
        let spec = ModelSpec {
            architecture: Architecture::Lenet,
            input: ImageShape::MNIST,
            num_classes: 10,
            normalization: Normalization::identity(1),
        };
        let model = Model::seeded(spec, 3, &device).unwrap();
        let before = layers(&model);
        let per_layer = layers(&prune_magnitude(model.clone(), 0.5, PruneScope::Layer).unwrap());
        let zeros = |w: &[f32]| w.iter().filter(|&&x| x == 0.0).count();
        for (b, a) in before.iter().zip(&per_layer) {
            let (max_pruned, min_kept) = split(b.iter().zip(a));
            assert!(max_pruned <= min_kept, "layer: {max_pruned} > {min_kept}");
            // Freshly initialised weights are distinct, so exactly the rate is pruned: the
            // round(rate × n) smallest, not one more or one fewer.
            let want = (0.5 * a.len() as f64).round() as usize;
            assert_eq!(zeros(a), want, "a layer of {} weights", a.len());
        }
        let global = layers(&prune_magnitude(model.clone(), 0.5, PruneScope::Global).unwrap());
        let (max_pruned, min_kept) = split(before.iter().flatten().zip(global.iter().flatten()));
        assert!(max_pruned <= min_kept, "global: {max_pruned} > {min_kept}");
        let total: usize = global.iter().map(|a| a.len()).sum();
        let pruned: usize = global.iter().map(|a| zeros(a)).sum();
        assert_eq!(pruned, (0.5 * total as f64).round() as usize);
        // A rate too small to prune one weight of a layer prunes nothing there, and rate 0
        // nothing at all.
        for scope in [PruneScope::Layer, PruneScope::Global] {
            assert_eq!(
                layers(&prune_magnitude(model.clone(), 0.0, scope).unwrap()),
                before
            );
        }
        let smallest = before.iter().map(|l| l.len()).min().unwrap();
        let tiny = 0.4 / smallest as f64;
        for (b, a) in before.iter().zip(&layers(
            &prune_magnitude(model.clone(), tiny, PruneScope::Layer).unwrap(),
        )) {
            let want = (tiny * b.len() as f64).round() as usize;
            assert_eq!(zeros(a), want, "rate {tiny} on {} weights", b.len());
        }
        // LeNet's layers are initialised at different scales (fan-in), so one threshold prunes
        // them unevenly.
        let spread: Vec<f64> = global
            .iter()
            .map(|a| a.iter().filter(|&&x| x == 0.0).count() as f64 / a.len() as f64)
            .collect();
        assert!(
            spread.iter().any(|f| (f - 0.5).abs() > 0.1),
            "global pruning left every layer at half: {spread:?}"
        );
    }

    #[test]
    fn prunes_the_requested_fraction_of_weights() {
        let device = Device::flex();
        let spec = ModelSpec {
            architecture: Architecture::Lenet,
            input: ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            },
            num_classes: 10,
            normalization: Normalization::identity(1),
        };
        let model = Model::new(spec, &device).unwrap();
        assert_eq!(zeros_in(&model).0, 0);
        for scope in [PruneScope::Layer, PruneScope::Global] {
            let pruned = prune_magnitude(model.clone(), 0.5, scope).unwrap();
            let (z, n) = zeros_in(&pruned);
            let frac = z as f64 / n as f64;
            assert!((frac - 0.5).abs() < 0.01, "{scope:?}: {frac}");
        }
        assert!(prune_magnitude(model.clone(), 1.0, PruneScope::Layer).is_err());
        assert!(prune_magnitude(model, -0.1, PruneScope::Global).is_err());
    }
}
