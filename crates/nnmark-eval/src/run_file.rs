//! A matrix run from a config file, as `nnmark eval --config` asks for it: read and check the
//! config, run the shard, and write the report when the run covered every shard.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use nnmark::error::{Error, Result};
use serde_json::json;

use crate::{EvalConfig, EvalOptions, EvalProgress, EvalSummary, Shard};

/// What a matrix run did.
pub struct MatrixRun {
    /// The config's name and seeds.
    pub config: EvalConfig,
    /// The shard run.
    pub shard: Shard,
    /// Cells computed and cached, and the results file.
    pub summary: EvalSummary,
    /// The report (Markdown, HTML), written when the run covered every shard.
    pub report: Option<(PathBuf, PathBuf)>,
}

/// Runs the matrix of the TOML config at `path` into `out`; `shard` is `i/n`, `n` (index from
/// the environment), or None for everything; `jobs` groups at once (0: one per core).
pub fn run_config_file(
    path: &Path,
    out: &Path,
    data_dir: Option<&Path>,
    shard: Option<&str>,
    jobs: usize,
    device: &Device,
    progress: &mut (dyn EvalProgress + Send),
) -> Result<MatrixRun> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config = EvalConfig::from_toml(&text, &path.display().to_string())?;
    let shard = match shard {
        Some(s) => Shard::parse(s, |v| std::env::var(v).ok())?,
        None => Shard::ALL,
    };
    let summary = crate::run(
        &config,
        &EvalOptions {
            out_dir: out,
            data_dir,
            shard,
            device,
            jobs,
        },
        progress,
    )?;
    let report = if shard.count == 1 {
        let records = crate::read_jsonl(&summary.results)?;
        Some(crate::report::write(&records, out)?)
    } else {
        None
    };
    Ok(MatrixRun {
        config,
        shard,
        summary,
        report,
    })
}

impl MatrixRun {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        json!({ "versions": nnmark::workflow::versions(), "config": self.config.name, "seeds": self.config.seeds, "shard": self.shard, "summary": self.summary, "report": self.report })
    }
}

impl fmt::Display for MatrixRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "{}: {} cells ({} computed, {} cached), shard {}/{} -> {}",
            self.config.name,
            s.cells,
            s.computed,
            s.cached,
            self.shard.index,
            self.shard.count,
            s.results.display()
        )?;
        if let Some((md, html)) = &self.report {
            write!(f, "\nreport: {} and {}", md.display(), html.display())?;
        }
        Ok(())
    }
}
