//! `anodet synth`: generate a synthetic category.

use std::path::PathBuf;

use clap::Args;

use super::output;
use anodet::data::synth::{generate, SynthParams};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Name of the category folder to create (replaced if it exists).
    #[arg(long, default_value = "wood")]
    pub category: String,
    /// Folder to create the category in.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data: PathBuf,
    /// Seed: the same seed gives byte-identical images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// Good training images.
    #[arg(long, default_value_t = 80)]
    pub train_good: usize,
    /// Good test images.
    #[arg(long, default_value_t = 20)]
    pub test_good: usize,
    /// Defective test images per defect type (scratch, hole, stain).
    #[arg(long, default_value_t = 12)]
    pub per_defect: usize,
    /// Easy data for smoke tests: no knots, streaks or lighting changes, and every defect at
    /// full strength instead of graded from faint to plain.
    #[arg(long)]
    pub plain: bool,
}

pub fn run(args: SynthArgs) -> anyhow::Result<i32> {
    let params = SynthParams {
        seed: args.seed,
        size: args.size,
        train_good: args.train_good,
        test_good: args.test_good,
        per_defect: args.per_defect,
        plain: args.plain,
    };
    let root = generate(&args.data, &args.category, &params)?;
    output::line(&format!(
        "wrote {} ({} good training, {} good test, {} defective test images)",
        root.display(),
        params.train_good,
        params.test_good,
        3 * params.per_defect
    ))?;
    Ok(0)
}
