//! Transfer learning as a removal attack (one of the Watermark-Robustness-Toolbox's): the thief
//! fine-tunes the stolen model on another data set, through a new output layer sized to that
//! set's classes, then brings it back to the task on its own data through another new output
//! layer. Every layer moves twice and the task's head starts afresh, so a mark that lives in
//! the decision layer or in fragile features may not come back with the task.
//!
//! The other set is named (`data=fashion`) and read from the data folders (`nnmark data fetch`
//! puts Fashion-MNIST there; nothing is downloaded here); it must have the model's image shape.

use burn::nn::LinearConfig;

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::data::{DataSource, Dataset};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::train::{self, Silent};

/// The transfer-learning attack.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The other data set, by name.
    pub data: String,
    /// Epochs on the other data set.
    pub epochs: usize,
    /// Epochs back on the attacker's data.
    pub back: usize,
    /// Learning rate of both phases.
    pub lr: f64,
}

pub(super) const TRANSFER: AttackInfo = AttackInfo {
    name: "transfer",
    summary: "fine-tune on another data set with its own head, then back on the attacker's data with a fresh head (transfer:data=fashion,epochs=3,back=3,lr=0.01)",
    build: |a: &mut AttackArgs| {
        let data = a.text("data").ok_or_else(|| {
            Error::invalid(
                "attack transfer data",
                "(none)",
                "name the other data set: transfer:data=NAME",
            )
        })?;
        Ok(Box::new(Transfer {
            data,
            epochs: a.usize("epochs", false, 3, 1)?,
            back: a.usize("back", false, 3, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

/// Replaces the model's output layer by a freshly initialised one of `classes` outputs.
fn new_head(model: &mut Model, classes: usize, ctx: &AttackContext<'_>, salt: u64) {
    let head = model.net.head_mut();
    let [d_in, _] = head.weight.dims();
    let _rng = train::rng_guard();
    ctx.device.seed(ctx.seed ^ salt);
    *head = LinearConfig::new(d_in, classes).init(ctx.device);
    model.spec.num_classes = classes;
}

impl Attack for Transfer {
    fn describe(&self) -> String {
        format!(
            "transfer:data={},epochs={},back={},lr={}",
            self.data, self.epochs, self.back, self.lr
        )
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, mut model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        let own = ctx.attacker_data("transfer")?;
        model.check_data(own)?;
        let other: Dataset = crate::data::load(&DataSource::Named(self.data.clone()), None)?.train;
        if other.shape != model.spec.input {
            return Err(Error::invalid(
                "attack transfer data",
                &self.data,
                format!(
                    "holds {} images; the stolen model takes {}",
                    other.shape, model.spec.input
                ),
            ));
        }
        let classes = model.spec.num_classes;
        let arch = model.spec.architecture;
        new_head(&mut model, other.num_classes, ctx, 0x7EA5_F0E1);
        let away = attacker_recipe(self.epochs, self.lr, ctx.seed).fitted_to(arch);
        let (mut model, _) = train::train(model, &other, &away, ctx.device, &mut Silent)?;
        new_head(&mut model, classes, ctx, 0xBAC4_0001);
        let back = attacker_recipe(self.back, self.lr, ctx.seed ^ 1).fitted_to(arch);
        Ok(train::train(model, own, &back, ctx.device, &mut Silent)?.0)
    }
}
