//! The `anodet` binary: parse, dispatch one verb, map the outcome to an exit status.
//! Exit status: 0 success, 1 `score` found an anomalous image, 2 any error.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};

fn main() -> ExitCode {
    anodet::backbone::allocator::keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Fit(args) => cli::fit::run(args),
        Command::Score(args) => cli::score::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Heatmap(args) => cli::heatmap::run(args),
        Command::Features(args) => cli::features::run(args),
        Command::Synth(args) => cli::synth::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Tune(args) => cli::tune::run(args),
    };
    match outcome {
        Ok(code) => ExitCode::from(code as u8),
        Err(error) => {
            // anodet's errors already carry their cause in their message: one line.
            eprintln!("anodet: {error}");
            ExitCode::from(2)
        }
    }
}
