//! Shared test helpers: a small generated category in a temporary folder, and the built binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anodet::data::synth::{generate, SynthParams};

/// The project's models folder (scripts/setup.sh exports the default backbone there).
pub fn models_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    assert!(
        dir.join("efficientnet_lite0.pt").is_file(),
        "{}/efficientnet_lite0.pt is missing: run scripts/setup.sh first",
        dir.display()
    );
    dir
}

/// A CPU runtime on the project's models, without a feature cache, `batch_size` images a pass.
pub fn cpu_runtime(batch_size: usize) -> anodet::pipeline::Runtime {
    anodet::pipeline::Runtime {
        models_dir: models_dir(),
        device: anodet::backbone::DeviceSpec::Cpu,
        batch_size: Some(batch_size),
        cache_root: None,
        precision: anodet::backbone::Precision::Auto,
    }
}

/// The patch embeddings of the workspace's wood training images and of its test images, read as
/// `features` says on `runtime`, and the test images' paths: a fit in memory to set beside a run
/// the CLI fitted on the same images.
pub fn wood_patch_embeddings(
    ws: &Workspace,
    runtime: &anodet::pipeline::Runtime,
    features: &anodet::features::FeatureSpec,
) -> (anodet::features::Embeddings, anodet::features::Embeddings, Vec<PathBuf>) {
    use anodet::features::{EmbeddingKind, OnBadImage};
    let (backbone, preprocess) = runtime.open_backbone(features).unwrap();
    let extractor = runtime.extractor(&backbone, &preprocess, &features.levels).unwrap();
    let category = anodet::data::Category::discover(&ws.data(), "wood").unwrap();
    let train: Vec<_> = category.training_good().iter().map(|s| s.path.clone()).collect();
    let test: Vec<_> = category.test_samples().iter().map(|s| s.path.clone()).collect();
    let embed = |paths: &[PathBuf]| {
        let silent = &anodet::progress::Silent;
        extractor.embed(paths, EmbeddingKind::Patches, OnBadImage::Stop, silent).unwrap().0
    };
    (embed(&train), embed(&test), test)
}

/// A temporary workspace with `data/wood` (small, 96 px) generated in it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self::with_images(16, 4, 3)
    }

    pub fn with_images(train_good: usize, test_good: usize, per_defect: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Plain data: these tests check the mechanics on defects that are plain to see. The
        // default (knots, lighting, faint defects) is a realistic demo, not a smoke test: at a
        // 64 px input with 16 training images even full-strength holes hide among the knots.
        let params =
            SynthParams { seed: 1, size: 96, train_good, test_good, per_defect, plain: true };
        generate(&dir.path().join("data"), "wood", &params).expect("synthetic data");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Runs `anodet ARGS` in the workspace with the project's models and a small input size
    /// where the verb takes one.
    pub fn anodet(&self, args: &[&str]) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_anodet"));
        command.current_dir(self.path()).args(args);
        let verb = args.first().copied().unwrap_or("");
        if ["fit", "score", "eval", "heatmap", "features", "tune"].contains(&verb) {
            if !args.contains(&"--models") {
                command.arg("--models").arg(models_dir());
            }
            command.args(["--device", "cpu"]);
        }
        if ["fit", "eval", "tune"].contains(&verb)
            && !args.contains(&"--size")
            && !args.contains(&"--tuned")
        {
            command.args(["--size", "64"]);
        }
        Run(command.output().expect("run anodet"))
    }

    /// Every file under the workspace's runs folder.
    pub fn run_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect(&self.path().join("runs"), &mut files);
        files
    }
}

fn collect(dir: &Path, into: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, into);
            } else {
                into.push(path);
            }
        }
    }
}

/// A finished run of the binary.
pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> String {
        assert_eq!(self.code(), 0, "stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr());
        self.stdout()
    }

    /// Asserts exit status 2 with exactly one `anodet: ` error line containing every `needle`.
    pub fn fails_with(&self, needles: &[&str]) {
        let stderr = self.stderr();
        assert_eq!(self.code(), 2, "stdout:\n{}\nstderr:\n{stderr}", self.stdout());
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
        assert!(lines[0].starts_with("anodet: "), "{stderr}");
        for needle in needles {
            assert!(lines[0].contains(needle), "'{needle}' not in: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// scikit-image's data folder inside the project's .venv (installed by scripts/setup.sh).
pub fn skimage_photo(name: &str) -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let entries = std::fs::read_dir(&lib).expect(".venv missing: run scripts/setup.sh");
    for entry in entries.flatten() {
        let candidate = entry.path().join("site-packages/skimage/data").join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("{name} not found under {}: run scripts/setup.sh", lib.display());
}

/// The scores `anodet score` (or `heatmap`) printed: the second tab-separated field of each line.
pub fn printed_scores(stdout: &str) -> Vec<f64> {
    stdout.lines().map(|l| l.split('\t').nth(1).unwrap().parse().unwrap()).collect()
}

/// The values of a 2-D float32 `.npy` file written by `anodet heatmap`.
pub fn read_npy_values(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header_len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The largest gap, relative to the expected value (at least 1), between `map` and `plain`
/// standardised as an ensemble member's score is: (plain − centre) / spread.
pub fn largest_standardised_gap(plain: &[f32], map: &[f32], centre: f64, spread: f64) -> f64 {
    assert_eq!(plain.len(), map.len());
    plain.iter().zip(map).fold(0.0f64, |largest, (&p, &m)| {
        let expected = (p as f64 - centre) / spread;
        largest.max((expected - m as f64).abs() / expected.abs().max(1.0))
    })
}
