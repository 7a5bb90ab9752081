//! Workflows end to end: typed requests in, typed reports out.
//!
//! This is the layer the `nnmark` binary, the demo, the evaluation matrix and the benchmarks
//! call. It owns the decisions that sit between the building blocks: which model to start
//! embedding from, which auxiliary data a scheme gets, whether a mark is provable before
//! anything is written, which null model a verdict is judged against, and which key commitment
//! a verification checks. The layers below ([`crate::watermark`], [`crate::scheme`],
//! [`crate::train`], [`crate::commit`]) do the work; the binary only turns flags into requests
//! and prints the reports (each has a `Display` for people and a `json()` for machines).
//!
//! ```no_run
//! use nnmark::workflow::{self, CleanTraining, EmbedJob, NullChoice, ProofPolicy, Start};
//! use nnmark::model::Architecture;
//! use nnmark::train::{Silent, TrainConfig};
//!
//! # fn main() -> nnmark::Result<()> {
//! let device = nnmark::device::parse_device("cpu")?;
//! let split = nnmark::data::embedded_mnist10k()?;
//! // Train a clean model, fine-tune Adi et al.'s trigger set into it, refuse an unprovable mark.
//! let clean = workflow::train_clean(
//!     &CleanTraining::new(Architecture::Lenet, &split.train, TrainConfig { epochs: 2, ..Default::default() }, "mnist10k"),
//!     &device,
//!     &mut Silent,
//! )?;
//! let marked = workflow::embed(
//!     EmbedJob::new(nnmark::scheme::by_name("adi")?, Start::FineTune(clean.model), &split, "mnist10k"),
//!     &device,
//!     &mut Silent,
//! )?;
//! marked.write("marked.safetensors".as_ref(), "owner.nnkey".as_ref(), None)?;
//! # Ok(()) }
//! ```

mod attack;
mod clean;
mod embed;
mod evaluate;
mod keys;
mod render;
mod timestamps;
mod verify;

pub use attack::{AttackJob, AttackReport, attack};
pub use clean::{
    CleanModel, CleanTraining, TrainedFile, train_and_save, train_and_save_many, train_clean,
    train_clean_many,
};
pub use embed::{
    EmbedJob, EmbedReport, ProofPolicy, Start, WrittenMark, aux_data_for, embed, start_models,
};
pub use evaluate::{FileEvaluation, evaluate_file};
pub use keys::{KeySummary, inspect_key};
pub use render::{commitment_line, verdict_lines, versions};
pub use timestamps::{
    CommitmentWritten, TimestampAttached, TimestampCheck, TimestampRequestWritten, commit_key,
    timestamp_attach, timestamp_request, timestamp_verify,
};
pub use verify::{
    Calibration, CommitmentCheck, NullChoice, PreparedKey, PublicCheck, PublicReport,
    ReferenceRate, RevealJob, VerifyReport, check_commitment, default_commitment_path,
    load_suspect, load_tsa_certs, prepare_key, reveal_and_verify, verify_local,
    verify_public_files,
};
