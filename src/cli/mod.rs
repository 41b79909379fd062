//! Command-line definition (clap derive): each field's doc comment is its help text.

pub mod eval;
pub mod features;
pub mod fit;
pub mod heatmap;
pub mod output;
pub mod progress;
pub mod score;
pub mod synth;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use anodet::backbone::{DeviceSpec, Levels, Precision};
use anodet::data::image::{Aspect, InputSize};

const EXIT_CODES: &str = "EXIT STATUS:\n  0  success\n  1  (score) at least one image is anomalous\n  2  error (bad input, bad flags, missing model…)";

/// anodet: learn what good parts look like from good images only, then flag defective parts.
#[derive(Debug, Parser)]
#[command(name = "anodet", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fit a model on a category's good images and write a run folder.
    #[command(after_long_help = concat!(
        "EXAMPLES:\n  anodet fit --category wood\n  anodet fit --data ../shared/data --category mvtec-bottle --levels 6,7,8\n  anodet fit --category elpv-mono --aspect keep --out runs/mono-keep\n\n",
        "EXIT STATUS:\n  0  the run folder was written\n  2  error; nothing was written"))]
    Fit(fit::FitArgs),
    /// Score images with a fitted model: one line per image with its score and verdict.
    #[command(after_long_help = concat!(
        "EXAMPLES:\n  anodet score data/wood/test/hole/*.png\n  anodet score --json --model runs/wood part.png | jq .score\n  if anodet score part.png; then echo good; fi\n\n",
        "EXIT STATUS:\n  0  every image is good\n  1  at least one image is anomalous\n  2  an image could not be read (the others are still scored) or another error"))]
    Score(score::ScoreArgs),
    /// Evaluate a category: cross-validated (or MVTec-protocol) AUC, F1, confusion matrices, plots.
    #[command(after_long_help = concat!(
        "EXAMPLES:\n  anodet eval --folds 3 --level 7\n  anodet eval --data ../shared/data --category mvtec-bottle --levels 6,7,8 --repeats 5\n  anodet eval --category mvtec-bottle --data ../shared/data --protocol mvtec --json\n\n",
        "OUTPUTS (in --out): scores.csv, metrics.json, roc.png, histogram.png, strip.png, confusion.png\n\n",
        "EXIT STATUS:\n  0  evaluated (warnings, e.g. no defective images, go to stderr)\n  2  error; nothing was written"))]
    Eval(eval::EvalArgs),
    /// Show where the anomaly is: overlay PNG and raw map (.npy) per image, or --eval against masks.
    #[command(after_long_help = concat!(
        "EXAMPLES:\n  anodet heatmap data/wood/test/hole/000.png\n  anodet heatmap --method feature --levels 2,4,7 part.png   # levels side by side\n  anodet heatmap --eval --method patch,feature,gradient        # pixel AUC per method\n\n",
        "The colours use one fixed scale per run, from its good training images: transparent at their\nmedian map value, red at their 99.9% quantile and above.\n\n",
        "EXIT STATUS:\n  0  maps written\n  2  an image could not be read (the others are still drawn) or another error"))]
    Heatmap(heatmap::HeatmapArgs),
    /// Export pooled features to .npy (images × features, levels concatenated) + a JSON sidecar.
    #[command(
        after_long_help = "EXAMPLES:\n  anodet features --category wood --split train --out train.npy\n  anodet features --levels 6,7,8 --out parts.npy part1.png part2.png\n\nEXIT STATUS:\n  0  written\n  2  error; nothing was written"
    )]
    Features(features::FeaturesArgs),
    /// Generate a synthetic MVTec-layout category (wood texture with defects and masks).
    #[command(
        after_long_help = "EXAMPLES:\n  anodet synth --category wood\n  anodet synth --category wood2 --seed 7 --size 320\n\nEXIT STATUS:\n  0  the category was written\n  2  error; nothing was written"
    )]
    Synth(synth::SynthArgs),
}

/// Where the network runs and how it is fed.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// Network precision on the CPU: auto (bf16 where the CPU has bf16 units and the backbone's
    /// bf16 variant fits the input size, else fp32), fp32, bf16.
    #[arg(long, default_value = "auto", value_parser = parse::<Precision>)]
    pub precision: Precision,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Folder with exported backbones (default: ./models, else the project's models/).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,
}

/// How features are made: backbone, levels and input size.
#[derive(Debug, Clone, Args)]
pub struct FeatureArgs {
    /// Backbone: a name in the models folder, a path to an exported .pt file, or hlac (the
    /// built-in weight-free HLAC features, no network).
    #[arg(long, default_value = "efficientnet_lite0")]
    pub backbone: String,
    /// Feature level 1–9 (1 stem, 2–8 block stages, 9 conv head). Same as --levels N.
    #[arg(long, value_parser = parse::<Levels>, conflicts_with = "levels")]
    pub level: Option<Levels>,
    /// Several levels, scores summed: e.g. 6,7,8 or 6-8. Default: 7 (CNN), 1-9 (hlac: 1-5 grey
    /// features at displacements 1-16 px, 6-9 binary ones at 1-8 px).
    #[arg(long, value_parser = parse::<Levels>)]
    pub levels: Option<Levels>,
    /// Network input size, N or WxH (default: the backbone's, 224 for Lite0).
    #[arg(long, value_parser = parse::<InputSize>)]
    pub size: Option<InputSize>,
    /// squash: resize to the input size; keep: short side to the input size, long side in
    /// proportion (for long strips); auto: keep for an image whose long side is more than 1.5
    /// times its short side, squash the others (decided per image, stored in the run).
    #[arg(long, value_enum, default_value = "squash")]
    pub aspect: AspectArg,
}

impl FeatureArgs {
    /// The checked feature settings.
    pub fn spec(&self) -> anodet::features::FeatureSpec {
        anodet::features::FeatureSpec {
            backbone: self.backbone.clone(),
            levels: self.levels(),
            size: self.size,
            aspect: self.aspect.into(),
        }
    }

    /// The chosen levels, or the backbone's default (7 for CNNs, 1-9 for HLAC).
    pub fn levels(&self) -> Levels {
        let default: Vec<u8> = if self.backbone == "hlac" { (1..=9).collect() } else { vec![7] };
        self.level
            .clone()
            .or_else(|| self.levels.clone())
            .unwrap_or_else(|| Levels::new(default).expect("valid default levels"))
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AspectArg {
    Squash,
    Keep,
    Auto,
}

impl From<AspectArg> for Aspect {
    fn from(value: AspectArg) -> Aspect {
        match value {
            AspectArg::Squash => Aspect::Squash,
            AspectArg::Keep => Aspect::Keep,
            AspectArg::Auto => Aspect::Auto,
        }
    }
}

impl RuntimeArgs {
    /// The runtime without a feature cache (scoring new images).
    pub fn runtime(&self) -> anodet::pipeline::Runtime {
        anodet::pipeline::Runtime {
            models_dir: self.models.clone().unwrap_or_else(anodet::pipeline::default_models_dir),
            device: self.device,
            batch_size: self.batch,
            cache_root: None,
            precision: self.precision,
        }
    }
}

/// Reuse of pooled features across runs.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Feature cache folder: pooled features per image content, backbone and input size, so a
    /// second fit or eval (other levels, folds or seeds) does not run the network again.
    #[arg(long, default_value = "runs/cache", value_name = "DIR")]
    pub cache: PathBuf,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    pub fn with(&self, mut runtime: anodet::pipeline::Runtime) -> anodet::pipeline::Runtime {
        runtime.cache_root = (!self.no_cache).then(|| self.cache.clone());
        runtime
    }
}

/// clap value parser for anodet's `FromStr` types (their errors already name the flag).
fn parse<T: std::str::FromStr<Err = anodet::Error>>(text: &str) -> Result<T, String> {
    text.parse::<T>().map_err(|e| match e {
        anodet::Error::InvalidParam { problem, .. } => problem,
        other => other.to_string(),
    })
}

/// The folder holding runs and the `latest` pointer.
pub fn runs_root() -> PathBuf {
    PathBuf::from("runs")
}
