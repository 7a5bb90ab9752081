//! How a suspect's service wants its input tensor, read from the shape its metadata declares:
//! channels first (`[N, C, H, W]`, nnmark's and PyTorch's order), channels last
//! (`[N, H, W, C]`, Keras' and TF's), one flat vector per image (`[N, C·H·W]`), or a grey image
//! without a channel axis (`[N, H, W]`). A positive first axis is a fixed batch size, which caps
//! the images per request. The key's images are resized only when asked (`--resize`): by
//! default a service that declares another size is refused, naming both shapes.

use std::borrow::Cow;

use nnmark::data::ImageShape;
use serde_json::Value;

/// The order of a request's input values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputLayout {
    /// `[N, C, H, W]`.
    #[default]
    Nchw,
    /// `[N, H, W, C]`.
    Nhwc,
    /// `[N, C·H·W]`.
    Flat,
    /// `[N, H, W]` (one channel).
    Nhw,
}

/// What a service's metadata says about its tensors, as far as a request needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TensorPlan {
    /// The input's name (None: `input`).
    pub input_name: Option<String>,
    /// The input's layout.
    pub layout: InputLayout,
    /// The output to read (None: the first that holds answers, scores before labels).
    pub output: Option<String>,
    /// Most images one request may hold, when the input declares a fixed batch size.
    pub batch_cap: Option<usize>,
    /// The image size the service takes, when it is not the key's and resizing was asked for:
    /// every image sent (key items and decoys alike) is resized to it.
    pub resize_to: Option<ImageShape>,
}

impl InputLayout {
    /// Reads a declared input shape (its first axis the batch, -1 where any size goes) for
    /// images of `shape`; also returns a fixed batch size when one is declared.
    pub fn from_dims(dims: &[i64], shape: ImageShape) -> Result<(Self, Option<usize>), String> {
        let fits = |d: i64, want: usize| d < 0 || d as usize == want;
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        let Some((&batch, rest)) = dims.split_first() else {
            return Err("declares an input without dimensions".into());
        };
        let cap = usize::try_from(batch).ok().filter(|&b| b > 0);
        let layout = match *rest {
            [a, b, d] if fits(a, c) && fits(b, h) && fits(d, w) => InputLayout::Nchw,
            [a, b, d] if fits(a, h) && fits(b, w) && fits(d, c) => InputLayout::Nhwc,
            [a] if fits(a, shape.numel()) => InputLayout::Flat,
            [a, b] if c == 1 && fits(a, h) && fits(b, w) => InputLayout::Nhw,
            _ => {
                return Err(format!(
                    "declares input shape {dims:?}, which holds no {c}x{h}x{w} image (as [N, {c}, {h}, {w}], [N, {h}, {w}, {c}], [N, {}]{}); the key's images are not resized",
                    shape.numel(),
                    if c == 1 {
                        format!(" or [N, {h}, {w}]")
                    } else {
                        String::new()
                    }
                ));
            }
        };
        Ok((layout, cap))
    }

    /// The request's shape for `count` images.
    pub fn dims(self, count: usize, shape: ImageShape) -> Vec<usize> {
        let (c, h, w) = (shape.channels, shape.height, shape.width);
        match self {
            InputLayout::Nchw => vec![count, c, h, w],
            InputLayout::Nhwc => vec![count, h, w, c],
            InputLayout::Flat => vec![count, shape.numel()],
            InputLayout::Nhw => vec![count, h, w],
        }
    }

    /// Images in this layout's value order (nnmark holds them channels first).
    pub fn arrange(self, pixels: &[f32], shape: ImageShape) -> Cow<'_, [f32]> {
        if self != InputLayout::Nhwc || shape.channels == 1 {
            return Cow::Borrowed(pixels);
        }
        let (c, hw) = (shape.channels, shape.height * shape.width);
        let mut out = Vec::with_capacity(pixels.len());
        for image in pixels.chunks(shape.numel()) {
            for p in 0..hw {
                out.extend((0..c).map(|ch| image[ch * hw + p]));
            }
        }
        Cow::Owned(out)
    }
}

/// The image a declared input shape holds, whatever its size: channels first or last with one
/// or three channels, a grey `[N, H, W]`, or a flat vector of a square grey (or colour) image.
pub fn declared_image(dims: &[i64]) -> Option<(InputLayout, ImageShape)> {
    let pos = |d: i64| usize::try_from(d).ok().filter(|&d| d > 0);
    let image = |channels, height, width| ImageShape {
        channels,
        height,
        width,
    };
    match *dims.get(1..)? {
        [c, h, w] if matches!(c, 1 | 3) => {
            Some((InputLayout::Nchw, image(pos(c)?, pos(h)?, pos(w)?)))
        }
        [h, w, c] if matches!(c, 1 | 3) => {
            Some((InputLayout::Nhwc, image(pos(c)?, pos(h)?, pos(w)?)))
        }
        [h, w] => Some((InputLayout::Nhw, image(1, pos(h)?, pos(w)?))),
        [n] => {
            let n = pos(n)?;
            let side = |m: usize| (1..=m).find(|s| s * s >= m).filter(|s| s * s == m);
            match (side(n), n % 3 == 0) {
                (Some(s), _) => Some((InputLayout::Flat, image(1, s, s))),
                (None, true) => side(n / 3).map(|s| (InputLayout::Flat, image(3, s, s))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Resizes images (channels first, values in [0, 1]) from `from` to `to`: bilinear (the
/// `image` crate's triangle filter), grey to colour by repeating the grey, colour to grey by
/// the channels' mean.
pub fn resize_images(pixels: &[f32], from: ImageShape, to: ImageShape) -> Vec<f32> {
    use image::{ImageBuffer, Luma, imageops};
    let plane = from.height * from.width;
    let mut out = Vec::with_capacity(pixels.len() / from.numel().max(1) * to.numel());
    // Whole images only: a trailing partial image (never sent by the client) is dropped.
    for img in pixels.chunks_exact(from.numel().max(1)) {
        for c in 0..to.channels {
            let source: Vec<f32> = if from.channels == to.channels {
                img[c * plane..(c + 1) * plane].to_vec()
            } else if from.channels == 1 {
                img[..plane].to_vec()
            } else {
                (0..plane)
                    .map(|p| {
                        (0..from.channels)
                            .map(|ch| img[ch * plane + p])
                            .sum::<f32>()
                            / from.channels as f32
                    })
                    .collect()
            };
            let buf: ImageBuffer<Luma<f32>, Vec<f32>> =
                ImageBuffer::from_raw(from.width as u32, from.height as u32, source)
                    .expect("a plane of height x width values");
            let resized = imageops::resize(
                &buf,
                to.width as u32,
                to.height as u32,
                imageops::FilterType::Triangle,
            );
            out.extend(resized.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)));
        }
    }
    out
}

impl TensorPlan {
    /// Reads a declared input shape into this plan: the layout the key's images fit, or, when
    /// they do not and `resize` is set, the layout and size of the image the service declares.
    fn read_dims(&mut self, dims: &[i64], shape: ImageShape, resize: bool) -> Result<(), String> {
        match InputLayout::from_dims(dims, shape) {
            Ok((layout, cap)) => {
                (self.layout, self.batch_cap) = (layout, cap);
                Ok(())
            }
            Err(e) if !resize => Err(format!("{e} (--resize resizes them)")),
            Err(e) => {
                let (layout, image) = declared_image(dims).ok_or(e)?;
                self.layout = layout;
                self.batch_cap = usize::try_from(dims[0]).ok().filter(|&b| b > 0);
                self.resize_to = Some(image);
                Ok(())
            }
        }
    }

    /// The images as the service takes them, and their shape: resized when the plan says so.
    pub fn prepare<'a>(
        &self,
        pixels: &'a [f32],
        shape: ImageShape,
    ) -> (Cow<'a, [f32]>, ImageShape) {
        match self.resize_to {
            Some(to) if to != shape => (Cow::Owned(resize_images(pixels, shape, to)), to),
            _ => (Cow::Borrowed(pixels), shape),
        }
    }

    /// Reads a v2 model metadata document (`inputs`, `outputs`) for images of `shape` and
    /// `classes` classes (resizing them to a declared size when `resize`); a document without
    /// inputs gives the defaults.
    pub fn from_v2_metadata(
        meta: &Value,
        shape: ImageShape,
        classes: usize,
        resize: bool,
    ) -> Result<Self, String> {
        let mut plan = TensorPlan::default();
        let inputs = meta.get("inputs").and_then(Value::as_array);
        if let Some(inputs) = inputs.filter(|i| !i.is_empty()) {
            if inputs.len() > 1 {
                return Err(format!(
                    "declares {} inputs; nnmark sends one image tensor",
                    inputs.len()
                ));
            }
            let input = &inputs[0];
            if let Some(dt) = input
                .get("datatype")
                .and_then(Value::as_str)
                .filter(|dt| *dt != "FP32")
            {
                return Err(format!(
                    "declares {dt} inputs; nnmark sends FP32 images in [0, 1]"
                ));
            }
            plan.input_name = input.get("name").and_then(Value::as_str).map(String::from);
            if let Some(dims) = input.get("shape").and_then(Value::as_array) {
                let dims: Vec<i64> = dims.iter().map(|d| d.as_i64().unwrap_or(-1)).collect();
                plan.read_dims(&dims, shape, resize)?;
            }
        }
        plan.output = choose_output(meta.get("outputs").and_then(Value::as_array), classes);
        Ok(plan)
    }

    /// Reads TF Serving's model metadata (the `serving_default` signature) for images of
    /// `shape`; metadata without a signature gives the defaults.
    pub fn from_tf_metadata(meta: &Value, shape: ImageShape, resize: bool) -> Result<Self, String> {
        let mut plan = TensorPlan::default();
        let input = meta
            .pointer("/metadata/signature_def/signature_def/serving_default/inputs")
            .and_then(Value::as_object)
            .and_then(|o| o.values().next());
        if let Some(dims) = input
            .and_then(|t| t.pointer("/tensor_shape/dim"))
            .and_then(Value::as_array)
        {
            let dims: Vec<i64> = dims
                .iter()
                .map(|x| {
                    let size = x.get("size");
                    size.and_then(Value::as_i64)
                        .or_else(|| size.and_then(Value::as_str).and_then(|s| s.parse().ok()))
                        .unwrap_or(-1)
                })
                .collect();
            plan.read_dims(&dims, shape, resize)?;
        }
        Ok(plan)
    }
}

/// The output answers are read from: the first floating-point output of one score per class,
/// else the first integer output of one value per image, else the first string output.
fn choose_output(outputs: Option<&Vec<Value>>, classes: usize) -> Option<String> {
    let outputs = outputs?;
    let last_dim = |o: &Value| {
        o.get("shape")
            .and_then(Value::as_array)
            .and_then(|s| s.last())
            .and_then(Value::as_i64)
    };
    let per_image = |o: &Value| {
        o.get("shape").and_then(Value::as_array).map_or(1, |s| {
            s.iter().skip(1).filter_map(Value::as_i64).product::<i64>()
        })
    };
    let datatype = |o: &Value| {
        o.get("datatype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let name = |o: &Value| o.get("name").and_then(Value::as_str).map(String::from);
    let scores = outputs.iter().find(|o| {
        datatype(o).starts_with("FP") && last_dim(o).is_some_and(|d| d < 0 || d as usize == classes)
    });
    let labels = || {
        outputs
            .iter()
            .find(|o| datatype(o).contains("INT") && per_image(o).abs() <= 1)
    };
    let strings = || outputs.iter().find(|o| datatype(o) == "BYTES");
    scores.or_else(labels).or_else(strings).and_then(name)
}

/// Nests flat values into arrays of `dims` (row-major), as TF Serving's `instances` want them.
pub fn nest(values: &[f32], dims: &[usize]) -> Value {
    match dims {
        [] | [_] => Value::from(values.to_vec()),
        [_, inner @ ..] => {
            let step: usize = inner.iter().product::<usize>().max(1);
            Value::Array(values.chunks(step).map(|c| nest(c, inner)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MNIST: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    const RGB: ImageShape = ImageShape {
        channels: 3,
        height: 2,
        width: 2,
    };

    #[test]
    fn declared_shapes_give_their_layouts() {
        let l = |d: &[i64], s| InputLayout::from_dims(d, s);
        assert_eq!(l(&[-1, 1, 28, 28], MNIST), Ok((InputLayout::Nchw, None)));
        assert_eq!(l(&[-1, 28, 28, 1], MNIST), Ok((InputLayout::Nhwc, None)));
        assert_eq!(l(&[-1, 784], MNIST), Ok((InputLayout::Flat, None)));
        assert_eq!(l(&[-1, 28, 28], MNIST), Ok((InputLayout::Nhw, None)));
        assert_eq!(l(&[1, 1, 28, 28], MNIST), Ok((InputLayout::Nchw, Some(1))));
        assert_eq!(l(&[-1, -1, -1, -1], MNIST), Ok((InputLayout::Nchw, None)));
        assert_eq!(l(&[-1, 2, 2, 3], RGB), Ok((InputLayout::Nhwc, None)));
        assert!(
            l(&[-1, 2, 2], RGB).is_err(),
            "three channels need a channel axis"
        );
        let e = l(&[-1, 3, 32, 32], MNIST).unwrap_err();
        assert!(
            e.contains("[-1, 3, 32, 32]") && e.contains("not resized"),
            "{e}"
        );
        assert!(l(&[], MNIST).is_err());
    }

    #[test]
    fn channels_last_reorders_each_image() {
        // Two 3-channel 2x2 images, channels first: channel ch, pixel p = 100·image + 10·ch + p.
        let px: Vec<f32> = (0..2)
            .flat_map(|i| {
                (0..3).flat_map(move |ch| (0..4).map(move |p| (100 * i + 10 * ch + p) as f32))
            })
            .collect();
        let hwc = InputLayout::Nhwc.arrange(&px, RGB);
        assert_eq!(&hwc[..6], &[0.0, 10.0, 20.0, 1.0, 11.0, 21.0]);
        assert_eq!(&hwc[12..15], &[100.0, 110.0, 120.0]);
        assert!(matches!(
            InputLayout::Nchw.arrange(&px, RGB),
            Cow::Borrowed(_)
        ));
        assert_eq!(InputLayout::Nhwc.dims(2, RGB), vec![2, 2, 2, 3]);
        assert_eq!(InputLayout::Flat.dims(2, RGB), vec![2, 12]);
    }

    #[test]
    fn declared_images_of_other_sizes_are_read_and_resized_to() {
        let img = |c, h, w| ImageShape {
            channels: c,
            height: h,
            width: w,
        };
        assert_eq!(
            declared_image(&[-1, 3, 32, 32]),
            Some((InputLayout::Nchw, img(3, 32, 32)))
        );
        assert_eq!(
            declared_image(&[-1, 32, 32, 3]),
            Some((InputLayout::Nhwc, img(3, 32, 32)))
        );
        assert_eq!(
            declared_image(&[-1, 1024]),
            Some((InputLayout::Flat, img(1, 32, 32)))
        );
        assert_eq!(
            declared_image(&[-1, 3072]),
            Some((InputLayout::Flat, img(3, 32, 32)))
        );
        assert_eq!(declared_image(&[-1, 1000]), None);
        assert_eq!(declared_image(&[-1, -1, 32, 32]), None);
        // Asked for: the plan resizes; not asked for: the error says how.
        let meta = serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]});
        let plan = TensorPlan::from_v2_metadata(&meta, MNIST, 10, true).unwrap();
        assert_eq!(plan.resize_to, Some(img(3, 32, 32)));
        let e = TensorPlan::from_v2_metadata(&meta, MNIST, 10, false).unwrap_err();
        assert!(e.contains("--resize"), "{e}");
        // Same size: no resizing even when allowed.
        let meta =
            serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 784]}]});
        let plan = TensorPlan::from_v2_metadata(&meta, MNIST, 10, true).unwrap();
        assert_eq!((plan.layout, plan.resize_to), (InputLayout::Flat, None));
    }

    #[test]
    fn resizing_keeps_flat_images_flat_and_converts_channels() {
        let up = resize_images(&[0.5; 4], MNIST_2, RGB_4);
        assert_eq!(up.len(), 3 * 16);
        assert!(up.iter().all(|v| (v - 0.5).abs() < 1e-6), "{up:?}");
        // Colour to grey is the channels' mean; a left-dark, right-bright image stays so.
        let rgb: Vec<f32> = [0.0, 1.0, 0.0, 1.0].repeat(3);
        let g = resize_images(&rgb, RGB, MNIST_2);
        assert_eq!(g.len(), 4);
        assert!(g[0] < 0.5 && g[1] > 0.5, "{g:?}");
        let mixed: Vec<f32> = [[0.0f32; 4], [0.3; 4], [0.9; 4]].concat();
        let m = resize_images(&mixed, RGB, MNIST_2);
        assert!(m.iter().all(|v| (v - 0.4).abs() < 1e-6), "{m:?}");
    }

    const MNIST_2: ImageShape = ImageShape {
        channels: 1,
        height: 2,
        width: 2,
    };
    const RGB_4: ImageShape = ImageShape {
        channels: 3,
        height: 4,
        width: 4,
    };

    #[test]
    fn values_nest_row_major() {
        let v = nest(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
        assert_eq!(v, serde_json::json!([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]));
        let v = nest(&[1.0, 2.0, 3.0, 4.0], &[1, 2, 2]);
        assert_eq!(v, serde_json::json!([[[1.0, 2.0], [3.0, 4.0]]]));
    }
}
