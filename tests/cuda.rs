//! `--device cuda`. Where a CUDA device exists: fit, eval, score and heatmap run on it, fit
//! records the device and the fp16 autocast precision, and CUDA fp32 scores agree with the
//! CPU's. Where none exists (CI): asking for CUDA is a one-line error, and the GPU part says on
//! stderr that it was skipped.
//!
//! To run it on a GPU machine with a prebuilt binary: `ANODET_TEST_BIN=<anodet>
//! ANODET_TEST_MODELS=<models dir> <this test binary>`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Workspace;

fn binary() -> PathBuf {
    std::env::var_os("ANODET_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_anodet")))
}

fn models() -> PathBuf {
    std::env::var_os("ANODET_TEST_MODELS").map(PathBuf::from).unwrap_or_else(common::models_dir)
}

/// Runs `anodet ARGS` in `ws` with the models folder and a small input size (no implicit
/// `--device`, unlike `Workspace::anodet`).
fn anodet(ws: &Workspace, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    command.current_dir(ws.path()).args(args).arg("--models").arg(models());
    if ["fit", "eval"].contains(&args[0]) {
        command.args(["--size", "64"]);
    }
    command.output().expect("run anodet")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// path → (score, oracle verdict) from an eval's scores.csv.
fn scores(dir: &Path) -> BTreeMap<String, (f64, String)> {
    let mut reader = csv::Reader::from_path(dir.join("scores.csv")).expect("scores.csv");
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (path, score, verdict) = (column("path"), column("score"), column("predicted_oracle"));
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[path].to_string(), (r[score].parse().unwrap(), r[verdict].to_string()))
        })
        .collect()
}

fn auc(dir: &Path) -> f64 {
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    metrics["runs"][0]["auc"].as_f64().expect("auc")
}

fn cuda_available() -> bool {
    anodet::backbone::device::cuda_device_count() > 0
}

#[test]
fn cuda_request_without_cuda_is_a_one_line_error() {
    if cuda_available() {
        eprintln!("skipped: a CUDA device exists here, so --device cuda does not fail");
        return;
    }
    let ws = Workspace::new();
    let output = anodet(&ws, &["fit", "--category", "wood", "--device", "cuda"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("anodet: --device: CUDA is not available"), "{stderr}");
    assert!(!ws.path().join("runs/wood").exists(), "no partial output");
}

#[test]
fn cuda_runs_fit_eval_score_and_heatmap_and_agrees_with_the_cpu() {
    if !cuda_available() {
        // Written to stderr directly, not through eprintln!, so that `cargo test` shows it even
        // though it captures the output of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cuda_runs_fit_eval_score_and_heatmap_and_agrees_with_the_cpu: no CUDA device \
             on this machine (no NVIDIA driver, or libtorch_cuda could not be loaded)"
        );
        return;
    }
    let ws = Workspace::with_images(40, 10, 6);

    // fit on CUDA: the run records the device and the default CUDA precision.
    ok(&anodet(&ws, &["fit", "--category", "wood", "--device", "cuda"]));
    let fit: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join("runs/wood/fit.json")).unwrap(),
    )
    .unwrap();
    assert!(fit["device"].as_str().unwrap().starts_with("cuda"), "{fit}");
    assert_eq!(fit["precision"], "fp16_autocast", "{fit}");

    // The same images through CPU fp32, CUDA fp32 (TF32 convolutions) and CUDA fp16 autocast.
    let eval = |name: &str, device: &str, precision: &str| {
        let out = ws.path().join(name);
        let out_arg = out.to_str().unwrap();
        ok(&anodet(
            &ws,
            &[
                "eval",
                "--category",
                "wood",
                "--folds",
                "3",
                "--no-cache",
                "--device",
                device,
                "--precision",
                precision,
                "--out",
                out_arg,
            ],
        ));
        out
    };
    let cpu = eval("cpu", "cpu", "fp32");
    let cuda = eval("cuda", "cuda", "fp32");
    let half = eval("half", "cuda", "fp16");
    let (cpu_scores, cuda_scores) = (scores(&cpu), scores(&cuda));
    assert_eq!(cpu_scores.len(), cuda_scores.len());
    let mut worst: f64 = 0.0;
    for (path, (score, verdict)) in &cpu_scores {
        let (other, other_verdict) = &cuda_scores[path];
        worst = worst.max((score - other).abs() / score.abs().max(1e-9));
        assert_eq!(verdict, other_verdict, "{path}: CPU and CUDA verdicts differ");
    }
    eprintln!("CPU vs CUDA fp32: max relative score difference {worst:.2e}");
    assert!(worst < 1e-2, "CPU and CUDA scores differ by {worst:.2e} relative");
    assert!((auc(&cpu) - auc(&half)).abs() < 0.02, "fp16 autocast moved AUROC");

    // score and heatmap (patch maps, and gradient maps that need autograd) on CUDA.
    let image = "data/wood/test/good/000.png";
    let scored = anodet(&ws, &["score", "--device", "cuda", image]);
    assert!(scored.status.code().is_some_and(|c| c < 2), "{scored:?}");
    for method in ["patch", "gradient"] {
        let out = ws.path().join(format!("maps-{method}"));
        ok(&anodet(
            &ws,
            &[
                "heatmap",
                "--device",
                "cuda",
                "--method",
                method,
                "--out",
                out.to_str().unwrap(),
                image,
            ],
        ));
    }
    // bf16 is the CPU's variant: asking for it on CUDA is refused before any work.
    let refused =
        anodet(&ws, &["fit", "--category", "wood", "--device", "cuda", "--precision", "bf16"]);
    assert_eq!(refused.status.code(), Some(2));
}
