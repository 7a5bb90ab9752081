//! Overwriting: the thief embeds a second watermark of the same scheme, with its own key, by
//! fine-tuning on its own data (the ambiguity/overwriting attack of Adi et al. §5 and
//! Uchida et al. §4). The owner's mark survives if the second embedding does not displace it.

use super::{Attack, AttackArgs, AttackContext, AttackInfo, attacker_recipe};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::scheme::EmbedMode;
use crate::train::Silent;
use crate::watermark::{self, EmbedRequest};

/// Overwriting with a second watermark.
#[derive(Debug, Clone)]
pub struct Overwrite {
    /// The scheme to overwrite with (None: the scheme under attack).
    pub scheme: Option<String>,
    /// Fine-tuning epochs of the second embedding.
    pub epochs: usize,
    /// Its learning rate.
    pub lr: f64,
}

pub(super) const OVERWRITE: AttackInfo = AttackInfo {
    name: "overwrite",
    summary: "embed a second watermark of the same scheme with the attacker's own key (overwrite:epochs=10,lr=0.01,scheme=...)",
    build: |a: &mut AttackArgs| {
        let scheme = a.text("scheme");
        if let Some(s) = &scheme {
            crate::scheme::by_name(s)?;
        }
        Ok(Box::new(Overwrite {
            scheme,
            epochs: a.usize("epochs", true, 10, 1)?,
            lr: a.lr(0.01)?,
        }))
    },
};

impl Attack for Overwrite {
    fn describe(&self) -> String {
        let mut s = format!("overwrite:epochs={},lr={}", self.epochs, self.lr);
        if let Some(name) = &self.scheme {
            s.push_str(&format!(",scheme={name}"));
        }
        s
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn remove(&self, model: Model, ctx: &AttackContext<'_>) -> Result<Model> {
        Ok(self.embed_second(model, ctx)?.model)
    }
}

impl Overwrite {
    /// The second embedding, with the attacker's key (the attack keeps only the model).
    pub fn embed_second(
        &self,
        model: Model,
        ctx: &AttackContext<'_>,
    ) -> Result<watermark::Embedded> {
        let data = ctx.attacker_data("overwrite")?;
        let scheme = match (&self.scheme, ctx.scheme) {
            (Some(name), _) => crate::scheme::by_name(name)?,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(Error::invalid(
                    "attack",
                    "overwrite",
                    "needs the scheme to overwrite with: give scheme=NAME or a key",
                ));
            }
        };
        watermark::embed(
            EmbedRequest {
                scheme,
                params: serde_json::Value::Null,
                mode: EmbedMode::FineTune,
                base: model,
                teacher: None,
                data,
                aux: None,
                // The attacker's key comes from its own seed.
                key_seed: ctx.seed ^ 0x0BAD_5EED,
                train: attacker_recipe(self.epochs, self.lr, ctx.seed ^ 0x0BAD_5EED),
                dataset_name: data.name.clone(),
                shadow_cache: None,
            },
            ctx.device,
            &mut Silent,
        )
    }
}
