//! nnmark: watermark neural-network classifiers and prove ownership of suspect models.
//!
//! This crate holds everything; the `nnmark` binary only parses arguments and calls it.
//! The foundation modules are [`data`], [`model`], [`train`] and [`weights`]; [`device`] picks
//! the compute backend at run time.

#![warn(missing_docs)]

pub mod attack;
pub mod commit;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
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
