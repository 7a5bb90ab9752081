//! `nnmark eval --config`, `eval merge`, `eval report`: the evaluation matrix.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use nnmark::Device;
use nnmark_eval::{self as eval, CellRecord, EvalProgress};

use crate::args::{EvalArgs, EvalCommand};
use crate::emit;

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
    let path = a.config.context("give --config or a subcommand")?;
    let quiet = a.output.quiet || a.output.json;
    let run = eval::run_config_file(
        &path,
        &a.out,
        a.data.data_dir.as_deref(),
        a.shard.as_deref(),
        a.jobs,
        device,
        &mut Bar { bar: None, quiet },
    )?;
    emit(a.output.json, || run.json(), &run);
    Ok(())
}
