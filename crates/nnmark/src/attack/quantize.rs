//! Weight quantisation: every weight matrix and kernel is rounded to a symmetric uniform grid
//! of 2^bits − 1 levels (−q..q with q = 2^(bits−1) − 1) scaled by its largest magnitude, per
//! tensor or per output channel (dimension 0, the layout of PyTorch's per-channel
//! quantisation), and stored back as floats (fake quantisation: what the thief's int8/int4
//! deployment computes). Biases stay in float, as in PyTorch's dynamic quantisation.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;

use super::{Attack, AttackArgs, AttackContext, AttackInfo};
use crate::error::{Error, Result};
use crate::model::Model;

/// Weight quantisation.
#[derive(Debug, Clone, Copy)]
pub struct Quantize {
    /// Bits per weight, 2 to 16.
    pub bits: u32,
    /// One scale per output channel instead of one per tensor.
    pub per_channel: bool,
}

pub(super) const QUANTIZE: AttackInfo = AttackInfo {
    name: "quantize",
    summary: "round weights to bits (quantize:8, quantize:4,scope=channel; scope tensor|channel)",
    build: |a: &mut AttackArgs| {
        let bits = a.usize("bits", true, 8, 2)?;
        if bits > 16 {
            return Err(Error::invalid(
                "attack quantize bits",
                bits,
                "must be 2 to 16",
            ));
        }
        let scope = a.choice("scope", false, "tensor", &["tensor", "channel"])?;
        Ok(Box::new(Quantize {
            bits: bits as u32,
            per_channel: scope == "channel",
        }))
    },
};

impl Attack for Quantize {
    fn describe(&self) -> String {
        format!(
            "quantize:{},scope={}",
            self.bits,
            if self.per_channel {
                "channel"
            } else {
                "tensor"
            }
        )
    }

    fn remove(&self, model: Model, _ctx: &AttackContext<'_>) -> Result<Model> {
        quantize_weights(model, self.bits, self.per_channel)
    }
}

/// Rounds `v` (one scale group) to the symmetric grid; returns the step used.
fn quantize_group(v: &mut [f32], q: f32) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return 0.0;
    }
    let step = max / q;
    for x in v.iter_mut() {
        // `+ 0.0` turns the -0.0 of small negative weights into 0.0: one zero level, as on
        // the integer grid.
        *x = (*x / step).round().clamp(-q, q) * step + 0.0;
    }
    step
}

struct Quantizer {
    q: f32,
    per_channel: bool,
}

impl ModuleMapper for Quantizer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 {
            return param;
        }
        let (q, per_channel) = (self.q, self.per_channel);
        param.map(|t| {
            let shape = t.shape();
            let device = t.device();
            let mut v: Vec<f32> = t
                .to_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("float tensor");
            if per_channel && D == 2 {
                // burn's Linear stores its weight as [inputs, outputs]: an output channel is
                // a column.
                let [rows, cols] = [shape.dims::<D>()[0], shape.dims::<D>()[1]];
                let mut column = vec![0f32; rows];
                for j in 0..cols {
                    for (i, c) in column.iter_mut().enumerate() {
                        *c = v[i * cols + j];
                    }
                    quantize_group(&mut column, q);
                    for (i, c) in column.iter().enumerate() {
                        v[i * cols + j] = *c;
                    }
                }
            } else if per_channel {
                // Convolution kernels are [outputs, inputs, kh, kw]: a channel is contiguous.
                let per = v.len() / shape.dims::<D>()[0].max(1);
                for group in v.chunks_mut(per.max(1)) {
                    quantize_group(group, q);
                }
            } else {
                quantize_group(&mut v, q);
            }
            Tensor::from_data(TensorData::new(v, shape), &device)
        })
    }
}

/// Quantises every weight matrix and kernel of `model` to `bits` bits.
pub fn quantize_weights(model: Model, bits: u32, per_channel: bool) -> Result<Model> {
    if !(2..=16).contains(&bits) {
        return Err(Error::invalid("quantization bits", bits, "must be 2 to 16"));
    }
    let mut m = Quantizer {
        q: ((1u32 << (bits - 1)) - 1) as f32,
        per_channel,
    };
    Ok(Model {
        spec: model.spec,
        net: model.net.map(&mut m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attack takes 2 to 16 bits, both ends included, and names the value it refuses.
    #[test]
    fn bits_from_2_to_16_are_accepted_and_others_refused() {
        // Parsed specs describe themselves in full (what reports and caches record).
        for (spec, described) in [
            ("quantize:2", "quantize:2,scope=tensor"),
            ("quantize:16", "quantize:16,scope=tensor"),
            ("quantize:8,scope=channel", "quantize:8,scope=channel"),
        ] {
            assert_eq!(crate::attack::parse(spec).unwrap().describe(), described);
        }
        for (spec, value) in [("quantize:1", "1"), ("quantize:17", "17")] {
            let e = crate::attack::parse(spec).err().expect(spec).to_string();
            assert!(e.contains(value) && e.contains("bits"), "{spec}: {e}");
        }
    }

    #[test]
    fn rounds_within_half_a_step_to_at_most_2_pow_bits_levels() {
        let orig: Vec<f32> = (0..1000)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 333.0)
            .collect();
        for bits in [4u32, 8] {
            let q = ((1u32 << (bits - 1)) - 1) as f32;
            let mut v = orig.clone();
            let step = quantize_group(&mut v, q);
            let max = orig.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!((step - max / q).abs() < 1e-7);
            for (a, b) in orig.iter().zip(&v) {
                assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} -> {b}");
            }
            let mut levels: Vec<i64> = v.iter().map(|x| (x / step).round() as i64).collect();
            levels.sort_unstable();
            levels.dedup();
            assert!(levels.len() < (1usize << bits), "{bits}: {}", levels.len());
        }
    }
}
