//! nnmark: watermark neural-network classifiers and prove ownership of suspect models.
//!
//! This crate holds everything; the `nnmark` binary only parses arguments and calls it.
//! The foundation modules are [`data`], [`model`], [`train`] and [`weights`]; [`device`] picks
//! the compute backend at run time. Owners and researchers mostly need [`workflow`]: typed
//! requests for the main flows, each returning a report.
//!
//! # Embed, verify, attack
//!
//! Train a small model on the embedded MNIST sample, fine-tune Adi et al.'s trigger set into
//! it, judge the marked model and an independently trained one with the key, then prune the
//! marked model and see what the attack did to the mark (this runs as a test):
//!
//! ```
//! use nnmark::model::Architecture;
//! use nnmark::train::{Silent, TrainConfig};
//! use nnmark::workflow::{self, AttackJob, CleanTraining, EmbedJob, NullChoice, Start};
//!
//! # fn main() -> nnmark::Result<()> {
//! let device = nnmark::device::parse_device("cpu")?;
//! let split = nnmark::data::embedded_mnist10k()?;
//! let dir = tempfile::tempdir().map_err(|e| nnmark::Error::io("temp dir", e))?;
//! let recipe = TrainConfig { epochs: 2, seed: 1, ..Default::default() };
//! let clean = workflow::train_clean(
//!     &CleanTraining::new(Architecture::Mlp, &split.train, recipe.clone(), "mnist10k"),
//!     &device,
//!     &mut Silent,
//! )?;
//!
//! // Embed: the mark is refused unless the marked model proves its own key.
//! let adi = nnmark::scheme::by_name("adi")?;
//! let job = EmbedJob::new(adi, Start::FineTune(clean.model), &split, "mnist10k");
//! let marked = workflow::embed(job, &device, &mut Silent)?;
//! let (model_path, key_path) = (dir.path().join("marked.safetensors"), dir.path().join("owner.nnkey"));
//! marked.write(&model_path, &key_path, None)?;
//!
//! // Verify: judged at a false-positive rate of 1e-6 against the key's null (chance, for Adi).
//! let key = workflow::prepare_key(&key_path, None, &NullChoice::Key, None, &[], &device)?;
//! let suspect = nnmark::weights::load(&model_path, None, &device)?.model;
//! let report = workflow::verify_local(&key, suspect, "marked", 1e-6, None)?;
//! assert!(report.verification.verdict.watermarked);
//!
//! let other = workflow::train_clean(
//!     &CleanTraining::new(Architecture::Mlp, &split.train, TrainConfig { seed: 2, ..recipe }, "mnist10k"),
//!     &device,
//!     &mut Silent,
//! )?;
//! let report = workflow::verify_local(&key, other.model, "independent", 1e-6, None)?;
//! assert!(!report.verification.verdict.watermarked);
//!
//! // Attack: prune 30% of the weights; the report holds the key's verdict before and after.
//! let attacked = workflow::attack(
//!     &AttackJob {
//!         attack: "prune:0.3",
//!         model: &model_path,
//!         key: Some(&key_path),
//!         split: &split,
//!         seed: 7,
//!         out: &dir.path().join("pruned.safetensors"),
//!     },
//!     &device,
//! )?;
//! let effect = attacked.watermark.expect("the key has a default null");
//! assert!(effect.before.watermarked);
//! println!("{} of {} key items before, {} after", effect.before.matches, effect.before.queries, effect.after.matches);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod attack;
pub mod commit;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod external;
pub mod io;
pub mod keyfile;
pub mod model;
pub mod oracle;
pub mod public;
pub mod scheme;
pub mod sequential;
pub mod shadow;
pub mod stats;
pub mod train;
pub mod verdict;
pub mod watermark;
pub mod weights;
pub mod workflow;

pub use burn::prelude::Device;
pub use error::{Error, Result};
pub use keyfile::{KeyFile, TriggerSet};
/// nnmark's CPU kernels (crate `nnmark-kernels`), used by the models and the loss.
pub(crate) use nnmark_kernels as kernel;
pub use oracle::Oracle;
pub use scheme::{Scheme, Suspect};
pub use verdict::Verdict;

/// This crate's version, recorded in every output.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The burn version nnmark is built on (pinned in Cargo.toml).
pub const BURN_VERSION: &str = "0.22.1";
