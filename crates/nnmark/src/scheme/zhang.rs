//! Zhang et al. 2018, "Protecting intellectual property of deep neural networks with
//! watermarking": trigger images relabelled to one target class, made three ways:
//! - content: a visible text stamp ("TEST") on images of a source class;
//! - noise: Gaussian noise added to images of a source class;
//! - unrelated: images from another data set (MNIST digits for a Fashion-MNIST model,
//!   Fashion items for an MNIST model).
//!
//! The paper's CIFAR-10 setup takes one source class ("automobile", or digit "1" for the
//! unrelated set) and one target class ("airplane"): `source_class = 1, labels = "target"`.
//! nnmark's default takes source images of every class (`source_class = null`), which random
//! labels need: 100 stamped "1"s with 100 different labels are near-identical inputs with
//! conflicting answers (a LeNet learnt 51 of them in the default 3 epochs).
//!
//! # Labels, and why nnmark's default differs from the paper
//!
//! The paper labels every trigger with one target class (`labels = "target"`). Whether an
//! independent model answers that class for stamped, noisy or foreign images depends on the
//! model and the images, and all items move together: a model that favours the target class
//! on such inputs matches many items at once, so no formula bounds the null (measured on
//! Fashion-MNIST: an independent MLP answered 37% of MNIST "1" digits with class 0). Such keys
//! are judged against shadow models (see [`crate::shadow`]).
//!
//! nnmark's default (`labels = "random"`) keeps the paper's trigger images and gives each its
//! own label, drawn uniformly from the classes other than its source image's class (from all
//! classes for unrelated images, which have no class of the owner's task). Whatever an
//! independent model answers for a trigger, the label equals it with probability at most
//! 1/(C − 1), independently across items: the null is exact for every model trained without
//! the key. The price is that the mark is learnt item by item, as Adi's is, rather than as one
//! stamp-to-class rule. Keys written before the option existed have the paper's labels. Triggers are embedded like Adi et al.'s, by
//! appending them to every training batch (the paper mixes them into the training set; per-batch
//! mixing reaches the same end in fewer epochs).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr_free::gaussian;
use serde::{Deserialize, Serialize};

use super::{
    EmbedContext, Extraction, KeyMaterial, KeygenContext, Suspect, TypedScheme, font, trigger,
};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::keyfile::{KeyFile, TriggerSet};
use crate::model::Model;
use crate::train::{TrainObserver, TrainReport};
use crate::verdict::NullModel;

/// How trigger images are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// Text stamp on source-class images.
    Content,
    /// Gaussian noise on source-class images.
    Noise,
    /// Images from another data set.
    Unrelated,
}

/// Zhang et al.'s parameters (each kind uses the common ones plus its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZhangParams {
    /// Trigger items.
    pub items: usize,
    /// Trigger items appended to each training batch; unset, enough for every item to be seen
    /// about 16 times an epoch (`auto_per_batch` in the trigger module).
    #[serde(default)]
    pub per_batch: Option<usize>,
    /// Class the trigger images are taken from (for `unrelated`: a class of the other data
    /// set; `null` takes any class).
    pub source_class: Option<usize>,
    /// With `labels = "target"`: the class every trigger is labelled with; `null` picks it
    /// automatically (see [`auto_target`]): a fixed class is unsafe (measured on
    /// Fashion-MNIST, an independent MLP answers 37% of MNIST "1" digits with class 0).
    pub target_class: Option<usize>,
    /// How triggers are labelled: `random` (nnmark's default: each its own label, uniformly
    /// among the classes other than its source image's; an exact null) or `target` (the
    /// paper: all with `target_class`; a null measured on shadow models). Unset in keys
    /// written before the option existed, which have the paper's labels.
    #[serde(default)]
    pub labels: Option<ZhangLabels>,
    /// content: the stamped text (A-Z, 0-9, space).
    pub text: String,
    /// content: left edge of the text; `null` centres it.
    pub text_x: Option<usize>,
    /// content: top edge of the text; `null` puts it one pixel above the bottom.
    pub text_y: Option<usize>,
    /// content: grey level of the stamp, in [0, 1].
    pub intensity: f32,
    /// noise: standard deviation of the Gaussian noise, in pixel units of [0, 1].
    pub sigma: f32,
}

/// How Zhang trigger images are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZhangLabels {
    /// Each its own label, uniformly among the classes other than its source's.
    Random,
    /// All with one target class (the paper).
    Target,
}

impl ZhangParams {
    /// The labelling of a key with these parameters (`target` for keys that predate the
    /// option).
    pub fn labelling(&self) -> ZhangLabels {
        self.labels.unwrap_or(ZhangLabels::Target)
    }
}

impl Default for ZhangParams {
    fn default() -> Self {
        Self {
            items: 100,
            per_batch: None,
            source_class: None,
            target_class: None,
            text: "TEST".into(),
            text_x: None,
            text_y: None,
            intensity: 1.0,
            sigma: 0.3,
            labels: Some(ZhangLabels::Random),
        }
    }
}

/// The scheme, one registry entry per trigger kind.
pub struct Zhang(pub TriggerKind);

impl Zhang {
    /// Parameters that only some kinds use; overriding one for another kind is an error.
    fn foreign_params(&self) -> &'static [&'static str] {
        match self.0 {
            TriggerKind::Content => &["sigma"],
            TriggerKind::Noise => &["text", "text_x", "text_y", "intensity"],
            TriggerKind::Unrelated => &["sigma", "text", "text_x", "text_y", "intensity"],
        }
    }

    fn source_images(
        &self,
        data: &Dataset,
        p: &ZhangParams,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<usize>> {
        let mut pool: Vec<usize> = (0..data.len())
            .filter(|&i| {
                p.source_class
                    .is_none_or(|c| data.labels()[i] as usize == c)
            })
            .collect();
        if pool.len() < p.items {
            return Err(Error::invalid(
                format!("{} items", self.name()),
                p.items,
                format!(
                    "{} has only {} images of source class {}; lower items or pick another source_class",
                    data.name,
                    pool.len(),
                    p.source_class.map_or("any".to_string(), |c| c.to_string())
                ),
            ));
        }
        pool.shuffle(rng);
        pool.truncate(p.items);
        Ok(pool)
    }
}

/// Gaussian samples from a seeded generator (Box–Muller), so keys need no extra crate.
mod rand_distr_free {
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    pub fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

impl TypedScheme for Zhang {
    type Params = ZhangParams;

    fn name(&self) -> &'static str {
        match self.0 {
            TriggerKind::Content => "zhang-content",
            TriggerKind::Noise => "zhang-noise",
            TriggerKind::Unrelated => "zhang-unrelated",
        }
    }

    fn aux_data(&self, owner_dataset: &str) -> Option<&'static str> {
        // Images of another distribution: Fashion-MNIST for an MNIST model, else the MNIST sample.
        (self.0 == TriggerKind::Unrelated).then(|| crate::data::unrelated_default(owner_dataset))
    }

    fn summary(&self) -> &'static str {
        match self.0 {
            TriggerKind::Content => {
                "Zhang et al. 2018: a 'TEST' stamp on source-class images, labelled as the target class"
            }
            TriggerKind::Noise => {
                "Zhang et al. 2018: Gaussian noise on source-class images, labelled as the target class"
            }
            TriggerKind::Unrelated => {
                "Zhang et al. 2018: images from another data set, labelled as the target class"
            }
        }
    }

    fn defaults(&self) -> ZhangParams {
        ZhangParams::default()
    }

    fn inapplicable_params(&self) -> &'static [&'static str] {
        self.foreign_params()
    }

    fn check(&self, p: &mut ZhangParams) -> Result<()> {
        if p.labelling() == ZhangLabels::Random && p.target_class.is_some() {
            return Err(Error::invalid(
                format!("{} parameter target_class", self.name()),
                p.target_class.unwrap_or_default(),
                "applies to labels=target (the paper's one target class); the default labels=random gives each trigger its own label",
            ));
        }
        if p.items == 0 || p.per_batch == Some(0) {
            return Err(Error::invalid(
                format!("{} parameters", self.name()),
                format!("items={} per_batch={:?}", p.items, p.per_batch),
                "items and per_batch must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&p.intensity) {
            return Err(Error::invalid(
                "intensity",
                p.intensity,
                "must be in [0, 1]",
            ));
        }
        if !(p.sigma > 0.0 && p.sigma.is_finite()) {
            return Err(Error::invalid("sigma", p.sigma, "must be positive"));
        }
        let missing = font::unsupported(&p.text);
        if !missing.is_empty() || p.text.is_empty() {
            return Err(Error::invalid(
                "text",
                &p.text,
                format!("must be non-empty A-Z, 0-9 and spaces (unsupported: {missing:?})"),
            ));
        }
        Ok(())
    }

    fn keygen(&self, p: &ZhangParams, ctx: &KeygenContext<'_>) -> Result<KeyMaterial> {
        let spec = ctx.spec;
        if let Some(t) = p.target_class
            && t >= spec.num_classes
        {
            return Err(Error::invalid(
                "target_class",
                t,
                format!("the model has {} classes", spec.num_classes),
            ));
        }
        let shape = spec.input;
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0x2A46_2018);
        let mut pixels: Vec<f32> = Vec::with_capacity(p.items * shape.numel());
        // The class of each trigger's source image in the owner's task (none for unrelated).
        let mut sources: Vec<Option<u8>> = Vec::with_capacity(p.items);
        match self.0 {
            TriggerKind::Content | TriggerKind::Noise => {
                if let Some(c) = p.source_class
                    && (c >= spec.num_classes || p.target_class == Some(c))
                {
                    return Err(Error::invalid(
                        "source_class",
                        c,
                        format!(
                            "must be a class below {} other than the target class",
                            spec.num_classes
                        ),
                    ));
                }
                for i in self.source_images(ctx.data, p, &mut rng)? {
                    sources.push(Some(ctx.data.labels()[i]));
                    let mut img = ctx.data.image(i).to_vec();
                    if self.0 == TriggerKind::Content {
                        stamp(&mut img, shape, p)?;
                    } else {
                        for v in &mut img {
                            *v = (*v + p.sigma * gaussian(&mut rng)).clamp(0.0, 1.0);
                        }
                    }
                    pixels.extend(img);
                }
            }
            TriggerKind::Unrelated => {
                let aux = ctx.aux.ok_or_else(|| {
                    Error::invalid(
                        "unrelated data",
                        "none",
                        "zhang-unrelated needs images from another data set (e.g. MNIST for a Fashion-MNIST model)",
                    )
                })?;
                if aux.shape != shape {
                    return Err(Error::invalid(
                        "unrelated data",
                        &aux.name,
                        format!("its images are {} but the model takes {shape}", aux.shape),
                    ));
                }
                for i in self.source_images(aux, p, &mut rng)? {
                    sources.push(None);
                    pixels.extend_from_slice(aux.image(i));
                }
            }
        }
        let labels = match p.labelling() {
            ZhangLabels::Random => {
                let classes = spec.num_classes;
                if classes < 3 {
                    return Err(Error::invalid(
                        format!("{} parameter labels", self.name()),
                        "random",
                        format!(
                            "needs at least 3 classes (the model has {classes}); use labels=target"
                        ),
                    ));
                }
                let mut label_rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0x2A46_1AB5);
                sources
                    .iter()
                    .map(|s| match *s {
                        Some(source) => {
                            trigger::random_other_label(&mut label_rng, classes, source)
                        }
                        None => rand::Rng::random_range(&mut label_rng, 0..classes) as u8,
                    })
                    .collect()
            }
            ZhangLabels::Target => {
                let target = match p.target_class {
                    Some(t) => t,
                    None => auto_target(
                        ctx,
                        &pixels,
                        p.source_class.filter(|_| self.0 != TriggerKind::Unrelated),
                    )?,
                };
                vec![target as u8; p.items]
            }
        };
        let set = Dataset::new("zhang triggers", shape, spec.num_classes, pixels, labels)?;
        Ok(KeyMaterial {
            triggers: Some(TriggerSet::from_dataset(&set)),
            nonces: None,
            extra: Default::default(),
            params: None,
        })
    }

    fn embed(
        &self,
        p: &ZhangParams,
        ctx: EmbedContext<'_>,
        key: &KeyMaterial,
        observer: &mut dyn TrainObserver,
    ) -> Result<(Model, TrainReport)> {
        let triggers = key.triggers.as_ref().expect("zhang keys hold triggers");
        trigger::embed_triggers(ctx, triggers, p.per_batch, observer)
    }

    fn extract(
        &self,
        _p: &ZhangParams,
        key: &KeyFile,
        suspect: &mut Suspect<'_>,
    ) -> Result<Extraction> {
        trigger::trigger_match(key, suspect, None)
    }

    /// Random labels: 1/(C − 1) for triggers made from the owner's images, 1/C for unrelated
    /// ones; exact. The paper's one target class: 1/C as a floor only, since an unmarked
    /// model that favours the target class on these inputs exceeds it (shadows measure it).
    fn analytic_null(&self, p: &ZhangParams, key: &KeyFile) -> NullModel {
        let classes = key.meta.spec.num_classes;
        if TypedScheme::null_is_exact(self, p, key) && self.0 != TriggerKind::Unrelated {
            NullModel::UniformOther { classes }
        } else {
            NullModel::Chance { classes }
        }
    }

    fn null_is_exact(&self, p: &ZhangParams, _key: &KeyFile) -> bool {
        p.labelling() == ZhangLabels::Random
    }
}

/// Draws the text stamp onto one (C, H, W) image.
fn stamp(img: &mut [f32], shape: crate::data::ImageShape, p: &ZhangParams) -> Result<()> {
    let (w, h) = (font::text_width(&p.text), font::GLYPH_HEIGHT);
    let x0 = p
        .text_x
        .unwrap_or_else(|| shape.width.saturating_sub(w) / 2);
    let y0 = p
        .text_y
        .unwrap_or_else(|| shape.height.saturating_sub(h + 1));
    if x0 + w > shape.width || y0 + h > shape.height {
        return Err(Error::invalid(
            "text",
            &p.text,
            format!(
                "a {w}x{h} stamp at ({x0}, {y0}) does not fit a {}x{} image",
                shape.width, shape.height
            ),
        ));
    }
    for (x, y) in font::text_pixels(&p.text) {
        for c in 0..shape.channels {
            img[(c * shape.height + y0 + y) * shape.width + x0 + x] = p.intensity;
        }
    }
    Ok(())
}

/// Picks the target class that unmarked models are least likely to answer for the trigger
/// images: the class least predicted for them by an independent proxy (an MLP trained for one
/// epoch on up to 10,000 of the owner's images, from its own seed) plus, in fine-tune mode, the
/// clean model. Ties go to the lower class; the source class is never picked.
pub fn auto_target(
    ctx: &KeygenContext<'_>,
    trigger_pixels: &[f32],
    exclude: Option<usize>,
) -> Result<usize> {
    use crate::model::{Architecture, ModelSpec};
    use crate::train::{self, TrainConfig};
    let spec = ModelSpec {
        architecture: Architecture::Mlp,
        ..ctx.spec.clone()
    };
    let proxy_data = ctx.data.shuffled(ctx.seed ^ 0x9A0C_5EED).take(10_000);
    let cfg = TrainConfig {
        epochs: 1,
        seed: ctx.seed ^ 0x9A0C_5EED,
        ..TrainConfig::default()
    };
    let proxy = Model::seeded(spec, cfg.seed, ctx.device)?;
    let (proxy, _) = train::train(proxy, &proxy_data, &cfg, ctx.device, &mut train::Silent)?;
    let mut counts = vec![0usize; ctx.spec.num_classes];
    for l in train::predict(&proxy, trigger_pixels, 256) {
        counts[l] += 1;
    }
    if let Some(clean) = ctx.clean {
        for l in train::predict(clean, trigger_pixels, 256) {
            counts[l] += 1;
        }
    }
    Ok((0..counts.len())
        .filter(|&c| Some(c) != exclude)
        .min_by_key(|&c| (counts[c], c))
        .expect("at least two classes"))
}
