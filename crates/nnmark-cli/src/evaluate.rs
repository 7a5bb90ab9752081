//! `nnmark eval --config`, `eval merge`, `eval report`: the evaluation matrix.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nnmark::Device;
use nnmark::eval::{self, CellRecord, EvalConfig, EvalOptions, EvalProgress, Shard};
use serde_json::json;

use crate::args::{EvalArgs, EvalCommand};
use nnmark::workflow::versions;

struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl EvalProgress for Bar {
    fn start(&mut self, cells: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(cells as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "cells [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }
    fn stage(&mut self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(what.to_string());
        }
    }
    fn cell(&mut self, r: &CellRecord, cached: bool) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!(
                "{} {} {} seed {}{}",
                r.arch,
                r.scheme,
                r.attack,
                r.seed,
                if cached { " (cached)" } else { "" }
            ));
        }
    }
}

pub fn run(a: EvalArgs, device: &Device) -> Result<()> {
    match a.cmd {
        Some(EvalCommand::Merge { inputs, out }) => {
            let n = eval::merge(&inputs, &out)?;
            println!(
                "merged {n} cells from {} files into {}",
                inputs.len(),
                out.display()
            );
            return Ok(());
        }
        Some(EvalCommand::Report { inputs, out }) => {
            let mut records = Vec::new();
            for i in &inputs {
                records.extend(eval::read_jsonl(i)?);
            }
            let (md, html) = eval::report::write(&records, &out)?;
            println!("wrote {} and {}", md.display(), html.display());
            return Ok(());
        }
        None => {}
    }
    let path = a.config.expect("clap: --config or a subcommand");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg = EvalConfig::from_toml(&text, &path.display().to_string())?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s, |v| std::env::var(v).ok())?,
        None => Shard::ALL,
    };
    let quiet = a.output.quiet || a.output.json;
    let summary = eval::run(
        &cfg,
        &EvalOptions {
            out_dir: &a.out,
            data_dir: a.data.data_dir.as_deref(),
            shard,
            device,
        },
        &mut Bar { bar: None, quiet },
    )?;
    let report = if shard.count == 1 {
        let records = eval::read_jsonl(&summary.results)?;
        Some(eval::report::write(&records, &a.out)?)
    } else {
        None
    };
    if a.output.json {
        println!(
            "{}",
            json!({ "versions": versions(), "config": cfg.name, "seeds": cfg.seeds, "shard": shard, "summary": summary, "report": report })
        );
    } else {
        println!(
            "{}: {} cells ({} computed, {} cached), shard {}/{} -> {}",
            cfg.name,
            summary.cells,
            summary.computed,
            summary.cached,
            shard.index,
            shard.count,
            summary.results.display()
        );
        if let Some((md, html)) = report {
            println!("report: {} and {}", md.display(), html.display());
        }
    }
    Ok(())
}
