//! Command-line definition (clap derive): each field's doc comment is its help text.

pub mod eval;
pub mod features;
pub mod fit;
pub mod heatmap;
pub mod output;
pub mod progress;
pub mod score;
pub mod serve;
pub mod synth;
pub mod tune;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use anodet::backbone::{DeviceSpec, Levels, Precision};
use anodet::data::image::{Aspect, InputSize};
use anodet::scorer::nearest::{set_search_precision, SearchPrecision};
use anodet::scorer::{
    EnsembleParams, KnnParams, MemberSpec, PadimParams, ScorerSpec, SubspaceParams,
};

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
    /// Serve a run over HTTP for an inspection line: POST an image, get its score and verdict.
    #[command(after_long_help = concat!(
        "EXAMPLES:\n  anodet serve --model runs/wood\n  curl -s -H 'Content-Type: image/png' --data-binary @part.png http://127.0.0.1:8080/v1/score\n  anodet serve --listen 0.0.0.0:8080 --token-file /etc/anodet/token --max-batch 8\n\n",
        "ROUTES: POST /v1/score (image body), POST /v1/score/batch (multipart), POST /v1/heatmap\n(PNG overlay), GET /v1/model, POST /v1/reload (or SIGHUP), GET /healthz, /readyz, /metrics.\nSIGTERM/SIGINT: finish the requests in flight, then exit 0.\n\n",
        "EXIT STATUS:\n  0  stopped by SIGTERM/SIGINT after draining\n  2  error (bad flags, the run cannot be loaded, the address is taken)"))]
    Serve(serve::ServeArgs),
    /// Choose the pipeline for a category by nested cross-validation (also without defects).
    #[command(after_long_help = tune::LONG_HELP)]
    Tune(tune::TuneArgs),
}

/// Where the network runs and how it is fed.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Device: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse::<DeviceSpec>)]
    pub device: DeviceSpec,
    /// Network precision: auto (CPU: bf16 where the CPU has bf16 units and the backbone's bf16
    /// variant fits the input size, else fp32; CUDA: fp16 autocast), fp32, bf16 (CPU), fp16
    /// (CUDA autocast). knn's patch search and coreset on the CPU follow it (bf16 products with
    /// exact float32 distances where the CPU has bf16 units, unless fp32).
    #[arg(long, default_value = "auto", value_parser = parse::<Precision>)]
    pub precision: Precision,
    /// Images per forward pass (default: 64 on CUDA; on the CPU 16, fewer for large inputs so
    /// that a pass's largest activation stays under 32 MiB: 6 at 224 px in fp32, 13 in bf16).
    #[arg(long)]
    pub batch: Option<usize>,
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
    /// The checked feature settings for `scorer`.
    pub fn spec(&self, scorer: &ScorerSpec) -> anodet::features::FeatureSpec {
        anodet::features::FeatureSpec {
            backbone: self.backbone.clone(),
            levels: self.levels(scorer),
            size: self.size,
            aspect: self.aspect.into(),
        }
    }

    /// The chosen levels, or the default: 1-9 for HLAC, else the scorer's (7 for the Gaussian,
    /// 6,7 for knn).
    pub fn levels(&self, scorer: &ScorerSpec) -> Levels {
        let default = if self.backbone == "hlac" {
            Levels::new((1..=9).collect()).expect("valid default levels")
        } else {
            scorer.default_levels()
        };
        self.level.clone().or_else(|| self.levels.clone()).unwrap_or(default)
    }
}

/// Which scorer a fit or evaluation uses, and its settings.
#[derive(Debug, Clone, Args)]
pub struct ScorerArgs {
    /// gaussian: a Gaussian per level of pooled features (Gaussian AD); knn: patch memory, the
    /// distance of each position to its nearest good position (PatchCore-style, default levels
    /// 6,7), image score = the worst position; padim: a Gaussian per grid position on features
    /// made as knn's (PaDiM, default levels 5,6,7), the worst position's Mahalanobis distance,
    /// for aligned parts (one input size for all images); subspace (--backbone hlac): residual
    /// of each grid cell's HLAC features outside the principal subspace of good cells, image
    /// score = the worst cell; ensemble: the members given with --member, each standardised by its
    /// cross-fitted good-image scores, summed.
    #[arg(long, value_enum, default_value = "gaussian")]
    pub scorer: ScorerKind,
    /// ensemble: a member, SCORER[:LEVELS][@BACKBONE] (scorer gaussian, knn or padim; levels default
    /// to the scorer's; backbone to --backbone). Repeat for each member, e.g.
    /// --member gaussian:6-8 --member knn:6,7@efficientnet_lite1.
    #[arg(long = "member", value_name = "SPEC")]
    pub members: Vec<String>,
    /// knn: share of good positions kept in the memory bank by greedy k-center selection, in
    /// (0, 1] (default 0.1; 1 keeps all).
    #[arg(long, value_name = "F")]
    pub coreset: Option<f64>,
    /// knn, padim: outer rings of positions the image score ignores (default 1).
    #[arg(long, value_name = "N")]
    pub border: Option<usize>,
    /// HLAC cells a side: the subspace scorer's grid (default 4); with the Gaussian, eval's
    /// HLAC patch mode (features per cell, one Gaussian shared by all cells, image score = the
    /// highest cell's).
    #[arg(long, value_name = "N")]
    pub grid: Option<usize>,
    /// subspace: share of the good cells' variance the principal subspace keeps, in (0, 1)
    /// (default 0.99).
    #[arg(long, value_name = "F")]
    pub variance: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScorerKind {
    Gaussian,
    Knn,
    Padim,
    Subspace,
    Ensemble,
}

impl ScorerArgs {
    /// The scorer settings (`backbone`: the members' default); a flag of another scorer is an
    /// error.
    pub fn spec(&self, backbone: &str) -> Result<ScorerSpec, anodet::Error> {
        let given = [
            ("--coreset", self.coreset.is_some(), ScorerKind::Knn),
            ("--border", self.border.is_some(), ScorerKind::Knn),
            ("--variance", self.variance.is_some(), ScorerKind::Subspace),
            ("--member", !self.members.is_empty(), ScorerKind::Ensemble),
        ];
        // knn settings also serve an ensemble's knn members; the border also padim (members).
        let applies = |owner: ScorerKind, flag: &str| {
            owner == self.scorer
                || (owner == ScorerKind::Knn && self.scorer == ScorerKind::Ensemble)
                || (flag == "--border" && self.scorer == ScorerKind::Padim)
        };
        if let Some((flag, _, owner)) =
            given.iter().find(|(flag, present, owner)| *present && !applies(*owner, flag))
        {
            let owner = match owner {
                ScorerKind::Knn if *flag == "--border" => "knn or padim",
                ScorerKind::Knn => "knn",
                ScorerKind::Subspace => "subspace",
                _ => "ensemble",
            };
            return Err(anodet::Error::param(*flag, format!("applies to --scorer {owner} only")));
        }
        if self.grid.is_some()
            && matches!(self.scorer, ScorerKind::Knn | ScorerKind::Padim | ScorerKind::Ensemble)
        {
            return Err(anodet::Error::param(
                "--grid",
                "knn and padim read the network's positions; --grid is for HLAC (gaussian, subspace)",
            ));
        }
        let defaults = KnnParams::default();
        let knn = KnnParams {
            coreset: self.coreset.unwrap_or(defaults.coreset),
            border: self.border.unwrap_or(defaults.border),
            seed: 0,
        };
        knn.check()?;
        let spec = match self.scorer {
            ScorerKind::Gaussian => ScorerSpec::Gaussian,
            ScorerKind::Knn => ScorerSpec::Knn(knn),
            ScorerKind::Padim => ScorerSpec::Padim(PadimParams { border: knn.border }),
            ScorerKind::Ensemble => {
                let members = self
                    .members
                    .iter()
                    .map(|text| MemberSpec::parse(text, &knn, backbone))
                    .collect::<Result<Vec<_>, _>>()?;
                let params = EnsembleParams::new(members);
                params.check()?;
                ScorerSpec::Ensemble(params)
            }
            ScorerKind::Subspace => {
                let defaults = SubspaceParams::default();
                let params = SubspaceParams {
                    grid: self.grid.unwrap_or(defaults.grid),
                    variance: self.variance.unwrap_or(defaults.variance),
                };
                params.check()?;
                ScorerSpec::Subspace(params)
            }
        };
        Ok(spec)
    }

    /// HLAC patch mode of the Gaussian (eval only).
    pub fn gaussian_grid(&self) -> Option<usize> {
        self.grid.filter(|_| self.scorer == ScorerKind::Gaussian)
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
    /// The runtime without a feature cache (scoring new images). Also sets the process's patch
    /// search precision: `--precision fp32` asks for float32 products there too, `bf16` for bf16
    /// ones; otherwise bf16 where the CPU has bf16 units.
    pub fn runtime(&self) -> anodet::pipeline::Runtime {
        set_search_precision(match self.precision {
            Precision::Fp32 => Some(SearchPrecision::Fp32),
            Precision::Bf16 => Some(SearchPrecision::Bf16),
            Precision::Auto | Precision::Fp16 => None,
        });
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
