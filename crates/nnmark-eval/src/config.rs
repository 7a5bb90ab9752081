//! The evaluation matrix's configuration (`eval.toml`): data sets and architectures, schemes
//! with their embedding settings, attacks, seeds. Everything is checked before any work.

use serde::{Deserialize, Serialize};

use nnmark::attack;
use nnmark::error::{Error, Result};
use nnmark::model::Architecture;
use nnmark::scheme::{self, EmbedMode};

/// A whole matrix: models × schemes × attacks × seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// A name for the report.
    pub name: String,
    /// Seeds: each seeds the clean model, the key and the attacks of one repetition.
    pub seeds: Vec<u64>,
    /// False-positive rate of the verdicts.
    #[serde(default = "default_fpr")]
    pub fpr: f64,
    /// An attack only counts as removing a mark when the attacked model's accuracy is within
    /// this many percentage points of the marked model's (frontier stitching, WRT).
    #[serde(default = "default_plausible")]
    pub plausible_drop_pp: f64,
    /// Independent reference models per model entry (seeds 10001, 10002, ...), for the null
    /// distribution of match rates; 0 for none.
    #[serde(default)]
    pub references: usize,
    /// The suspects' families.
    pub models: Vec<ModelEntry>,
    /// The schemes.
    pub schemes: Vec<SchemeEntry>,
    /// Attack specs (`none` is the unattacked baseline), for schemes without their own list.
    #[serde(default)]
    pub attacks: Vec<String>,
    /// Smaller attacker budgets: every attack that trains on the attacker's data also runs
    /// with this share of it (`budget:B+attack`), besides the whole third. The
    /// Watermark-Robustness-Toolbox's 1% and 10% of the training set are 0.03 and 0.3.
    #[serde(default)]
    pub attacker_budgets: Vec<f64>,
}

fn default_fpr() -> f64 {
    nnmark::verdict::DEFAULT_FPR
}
fn default_plausible() -> f64 {
    5.0
}

/// One model family: data set, architecture, training length.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Data set name (`mnist10k`, `fashion`).
    pub dataset: String,
    /// Architecture name.
    pub arch: String,
    /// Training epochs of the clean model (the default recipe otherwise).
    pub epochs: usize,
}

/// One scheme with its embedding settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeEntry {
    /// Registry name.
    pub name: String,
    /// Parameter overrides.
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    /// `fine-tune` (default), `from-scratch` or `distillation`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Embedding epochs.
    pub epochs: usize,
    /// Embedding learning rate (SGD momentum 0.9, constant) for fine-tuning; the default
    /// recipe's otherwise.
    #[serde(default)]
    pub lr: Option<f64>,
    /// Only these architectures (empty: all of `models`).
    #[serde(default)]
    pub archs: Vec<String>,
    /// Attacks for this scheme instead of the matrix-wide list (empty: that list).
    #[serde(default)]
    pub attacks: Vec<String>,
    /// Data set whose training images are the unrelated triggers (Zhang's `unrelated` kind).
    #[serde(default)]
    pub aux_dataset: Option<String>,
}

fn default_mode() -> String {
    "fine-tune".into()
}

impl EvalConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let cfg: EvalConfig = toml::from_str(text)
            .map_err(|e| Error::invalid("evaluation config", origin, e.to_string()))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Every name and value, before any work.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, v: &dyn ToString, why: &str| {
            Err(Error::invalid(
                format!("eval config {field}"),
                v.to_string(),
                why,
            ))
        };
        if self.seeds.is_empty() {
            return bad("seeds", &"[]", "give at least one seed");
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                // The same seed twice is the same cells twice: duplicate records.
                return bad("seeds", s, "appears twice");
            }
        }
        if !(self.fpr > 0.0 && self.fpr < 1.0) {
            return bad("fpr", &self.fpr, "must be in (0, 1)");
        }
        for (i, b) in self.attacker_budgets.iter().enumerate() {
            if !(*b > 0.0 && *b <= 1.0) {
                return bad("attacker_budgets", b, "each must be in (0, 1]");
            }
            if self.attacker_budgets[..i].contains(b) {
                return bad("attacker_budgets", b, "appears twice");
            }
        }
        if !(self.plausible_drop_pp >= 0.0 && self.plausible_drop_pp <= 100.0) {
            return bad(
                "plausible_drop_pp",
                &self.plausible_drop_pp,
                "must be 0 to 100",
            );
        }
        if self.models.is_empty()
            || self.schemes.is_empty()
            || (self.attacks.is_empty() && self.schemes.iter().any(|s| s.attacks.is_empty()))
        {
            return bad(
                "models/schemes/attacks",
                &"(empty)",
                "each needs at least one entry",
            );
        }
        for m in &self.models {
            m.arch.parse::<Architecture>()?;
            if m.epochs == 0 {
                return bad("models.epochs", &0, "must be at least 1");
            }
            nnmark::data::canonical_name(&m.dataset).ok_or_else(|| {
                Error::invalid(
                    "eval config models.dataset",
                    &m.dataset,
                    "known data sets: mnist10k, fashion",
                )
            })?;
        }
        for s in &self.schemes {
            let sc = scheme::by_name(&s.name)?;
            sc.params(s.params.as_ref().unwrap_or(&serde_json::Value::Null))?;
            s.mode.parse::<EmbedMode>()?;
            if s.epochs == 0 {
                return bad("schemes.epochs", &0, "must be at least 1");
            }
            if let Some(lr) = s.lr
                && !(lr > 0.0 && lr < 10.0)
            {
                return bad("schemes.lr", &lr, "must be in (0, 10)");
            }
            for a in &s.archs {
                a.parse::<Architecture>()?;
            }
            if let Some(d) = &s.aux_dataset {
                nnmark::data::canonical_name(d).ok_or_else(|| {
                    Error::invalid(
                        "eval config schemes.aux_dataset",
                        d,
                        "known data sets: mnist10k, fashion",
                    )
                })?;
            }
            for a in &s.attacks {
                if a != "none" {
                    attack::parse(a)?;
                }
            }
        }
        for a in &self.attacks {
            if a != "none" {
                attack::parse(a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_seeds_are_refused() {
        let text = r#"
name = "dup"
seeds = [1, 2, 1]
attacks = ["none"]
[[models]]
arch = "mlp"
dataset = "mnist10k"
epochs = 1
[[schemes]]
name = "adi"
epochs = 1
"#;
        let err = EvalConfig::from_toml(text, "dup.toml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("seeds") && err.contains("appears twice"),
            "{err}"
        );
    }

    #[test]
    fn cached_floats_read_back_exactly() {
        // Cells are cached as JSON; a resumed run must read back the very p-values it wrote.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if !v.is_finite() {
                continue;
            }
            let back: f64 = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v:e}");
        }
    }
}
