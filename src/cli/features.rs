//! `anodet features`: export pooled features (levels concatenated) to a .npy file, with a JSON
//! sidecar naming the images and the width of each level, for use outside anodet.

use std::path::PathBuf;

use clap::Args;

use super::{output, progress::Bar, CacheArgs, FeatureArgs, RuntimeArgs};
use anodet::data::Category;
use anodet::features::OnBadImage;
use anodet::report::{atomic, npy};

#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Images to export (or use --category).
    #[arg(value_name = "IMG", required_unless_present = "category")]
    pub images: Vec<PathBuf>,
    /// A category under --data instead of a list of images.
    #[arg(long, conflicts_with = "images")]
    pub category: Option<String>,
    /// Folder holding the categories.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data: PathBuf,
    /// With --category: train (good training images), test, or all.
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitArg,
    /// Output .npy file (float32, images × features); FILE.json describes it.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    Train,
    Test,
    All,
}

pub fn run(args: FeaturesArgs) -> anyhow::Result<i32> {
    let paths: Vec<PathBuf> = match &args.category {
        Some(name) => {
            let category = Category::discover(&args.data, name)?;
            let samples = match args.split {
                SplitArg::Train => category.training_good(),
                SplitArg::Test => category.test_samples(),
                SplitArg::All => category.all().iter().collect(),
            };
            samples.iter().map(|s| s.path.clone()).collect()
        }
        None => args.images.clone(),
    };
    let runtime = args.cache.with(args.runtime.runtime());
    let spec = args.features.spec(&anodet::scorer::ScorerSpec::Gaussian);
    let (backbone, preprocess) = runtime.open_backbone(&spec)?;
    let levels = spec.levels.clone();
    let extractor = runtime.extractor(&backbone, &preprocess, &levels)?;
    let features = extractor.extract(&paths, OnBadImage::Stop, &Bar::new())?.features;
    let widths: Vec<usize> = features.per_level.iter().map(|m| m.ncols()).collect();
    let total: usize = widths.iter().sum();
    let mut values = Vec::with_capacity(features.len() * total);
    for row in 0..features.len() {
        for matrix in &features.per_level {
            values.extend(matrix.row(row).iter().copied());
        }
    }
    npy::write(&args.out, &values, features.len(), total)?;
    let meta_path = PathBuf::from(format!("{}.json", args.out.display()));
    atomic::write_json(
        &meta_path,
        &serde_json::json!({
            "version": 1,
            "backbone": backbone.info().name,
            "precision": backbone.precision(),
            "input": preprocess,
            "levels": levels,
            "widths": widths,
            "paths": features.paths,
        }),
    )?;
    output::line(&format!(
        "wrote {} ({} images × {total} features) and {}",
        args.out.display(),
        features.len(),
        meta_path.display()
    ))?;
    Ok(0)
}
