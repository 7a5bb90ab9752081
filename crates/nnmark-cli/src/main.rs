//! The `nnmark` command: turns flags into requests for the library's workflows
//! (`nnmark::workflow`, `nnmark_remote::workflow`) and prints their reports.

mod evaluate;
mod marks;
mod model;
mod progress;
mod remote;
mod timestamp;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use nnmark::data;
use nnmark::train::{Silent, TrainObserver};
use nnmark_args as args;

use args::{
    Cli, Command, DataArgs, DataCommand, EvidenceCommand, KeyCommand, KeysCommand, OutputArgs,
    TimestampCommand, VkCommand,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad value is one line naming the flag and what it accepts; usage errors and help
        // keep clap's own rendering.
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::ValueValidation) => {
            let text = e.render().to_string();
            eprintln!("{}", text.lines().next().unwrap_or_default());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    // A server logs every request by default; other commands only warnings.
    let default_log = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NNMARK_LOG")
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, without repeating a cause the message already quotes (an I/O
            // error names the file and says what the OS said, which is also its source).
            let mut text = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
            }
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}

/// A progress bar for people, nothing for scripts.
pub(crate) fn observer(out: &OutputArgs) -> Box<dyn TrainObserver> {
    if out.quiet || out.json {
        Box::new(Silent)
    } else {
        Box::new(progress::Bar::default())
    }
}

/// Prints a report: its JSON with `--json`, else its text.
pub(crate) fn emit(
    json: bool,
    value: impl FnOnce() -> serde_json::Value,
    text: impl std::fmt::Display,
) {
    if json {
        println!("{}", value());
    } else {
        println!("{text}");
    }
}

pub(crate) fn load_data(d: &DataArgs) -> Result<data::DataSplit> {
    Ok(data::load(&d.source()?, d.data_dir.as_deref())?)
}

fn run(cli: Cli) -> Result<()> {
    let device = nnmark::device::parse_device(&cli.device)?;
    match cli.command {
        Command::Train(a) => model::train(a, &device),
        Command::Eval(a) if a.cmd.is_some() || a.config.is_some() => evaluate::run(a, &device),
        Command::Eval(a) => model::evaluate_file(a, &device),
        Command::Data(DataCommand::Fetch(f)) => model::fetch(f),
        Command::Data(DataCommand::Inspect(a)) => model::inspect(a),
        Command::Embed(a) => marks::embed(a, &device),
        Command::Attack(a) => marks::attack(a, &device),
        Command::Verify(a) => marks::verify(a, &device),
        Command::Key(KeyCommand::Inspect(a)) => marks::key_inspect(a),
        Command::Key(KeyCommand::Commit(a)) => timestamp::key_commit(a),
        Command::Timestamp(TimestampCommand::Request(a)) => timestamp::request(a),
        Command::Timestamp(TimestampCommand::Attach(a)) => timestamp::attach(a),
        Command::Timestamp(TimestampCommand::Verify(a)) => timestamp::verify(a),
        Command::Serve(a) => remote::serve(a, &device),
        Command::Export(a) => {
            let sha = nnmark_remote::export::export(&a.model, &a.onnx)?;
            println!("wrote {} (sha256 {sha})", a.onnx.display());
            Ok(())
        }
        Command::Keys(KeysCommand::Generate(a)) => remote::keys_generate(a),
        Command::Evidence(EvidenceCommand::Check(a)) => remote::evidence_check(a),
        Command::Vk(VkCommand::Export(a)) => marks::vk_export(a),
        Command::Demo(a) => model::demo(a, &device),
    }
}
