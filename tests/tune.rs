//! `anodet tune`: nested CV without leakage, agreement with eval, `fit --tuned`, synthetic
//! defects and bad input. Small generated sets at 64 px.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use anodet::backbone::Levels;
use anodet::data::image::Aspect;
use anodet::data::split::stratified_folds;
use anodet::pipeline::tune::{tune, Candidate, Seen, Stage, TuneHooks, TuneParams};
use anodet::progress::Silent;
use anodet::scorer::{KnnParams, ScorerSpec};
use common::Workspace;

#[derive(Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl TuneHooks for Recorder {
    fn seen(&self, seen: &Seen) {
        self.0.lock().unwrap().push(seen.clone());
    }
}

fn candidate(levels: &[u8], scorer: ScorerSpec) -> Candidate {
    Candidate {
        backbone: "efficientnet_lite0".into(),
        levels: Levels::new(levels.to_vec()).unwrap(),
        size: Some("64".parse().unwrap()),
        aspect: Aspect::Squash,
        scorer,
    }
}

/// `anodet VERB` (tune, eval, fit) on the workspace's wood category, `args` added.
fn on_wood(ws: &Workspace, verb: &str, args: &[&str]) -> common::Run {
    let mut all = vec![verb, "--data", "data", "--category", "wood"];
    all.extend_from_slice(args);
    ws.anodet(&all)
}

/// The `fit_flags` of the tune.json in `tune_dir`.
fn fit_flags(ws: &Workspace, tune_dir: &str) -> Vec<String> {
    let text = std::fs::read_to_string(ws.path().join(tune_dir).join("tune.json")).unwrap();
    let tune_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    tune_json["fit_flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().into()).collect()
}

/// Fits the choice of the tune in `tune_dir` with `--tuned` (into runs/tuned) and with its
/// `fit_flags` given by hand (into runs/hand); both must store the same model and score alike.
/// Returns both runs' model.json.
fn fit_tuned_and_by_hand(ws: &Workspace, tune_dir: &str) -> (serde_json::Value, serde_json::Value) {
    let fitted = on_wood(ws, "fit", &["--tuned", tune_dir, "--out", "runs/tuned"]);
    assert!(fitted.ok().contains("pipeline chosen by tune"));
    let flags = fit_flags(ws, tune_dir);
    let mut by_hand: Vec<&str> = vec!["--out", "runs/hand"];
    by_hand.extend(flags.iter().map(String::as_str));
    on_wood(ws, "fit", &by_hand).ok();
    let bytes = |p: &str| std::fs::read(ws.path().join(p)).unwrap();
    assert_eq!(bytes("runs/tuned/model.safetensors"), bytes("runs/hand/model.safetensors"));
    let score = |run: &str| {
        ws.anodet(&[
            "score",
            "--model",
            run,
            "data/wood/test/scratch/000.png",
            "data/wood/test/good/000.png",
        ])
        .stdout()
    };
    assert_eq!(score("runs/tuned"), score("runs/hand"));
    assert!(!score("runs/tuned").is_empty());
    let meta = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&bytes(&format!("{p}/model.json"))).unwrap()
    };
    (meta("runs/tuned"), meta("runs/hand"))
}

#[test]
fn no_outer_test_image_reaches_an_inner_fit_or_ranking() {
    let ws = Workspace::with_images(20, 4, 4);
    let params = TuneParams {
        data_root: ws.data(),
        category: "wood".into(),
        candidates: vec![
            candidate(&[7], ScorerSpec::Gaussian),
            candidate(&[6, 7, 8], ScorerSpec::Gaussian),
            candidate(&[6, 7], ScorerSpec::Knn(KnnParams { coreset: 0.5, border: 1, seed: 0 })),
        ],
        grid_source: "test grid".into(),
        folds: 3,
        inner_folds: 3,
        seed: 5,
        budget_minutes: None,
        min_defects: 10,
        synthetic: true,
        synthetic_dir: ws.path().join("synthetic"),
    };
    let runtime = common::cpu_runtime(16);
    let recorder = Recorder::default();
    let report = tune(&params, &runtime, &Silent, &recorder).unwrap();
    assert!(report.synthetic.is_none());
    assert_eq!(report.images, 36);
    // The outer allocation is eval's: recompute it from the labels.
    let labels: Vec<bool> = report.images_seen.iter().map(|(_, t)| t != "good").collect();
    let outer = stratified_folds(&labels, 3, 5).unwrap();
    for (sample, &fold) in report.outer.samples.iter().zip(&outer) {
        assert_eq!(sample.fold, Some(fold));
    }
    let events = recorder.0.into_inner().unwrap();
    let mut covered = HashSet::new();
    for seen in &events {
        let test: HashSet<&PathBuf> = report
            .images_seen
            .iter()
            .zip(&outer)
            .filter(|(_, &f)| f == seen.outer_fold)
            .map(|((p, _), _)| p)
            .collect();
        for path in &seen.paths {
            assert!(
                !test.contains(path),
                "{:?} of outer fold {} saw its test image {}",
                seen.stage,
                seen.outer_fold + 1,
                path.display()
            );
        }
        assert!(!seen.paths.is_empty());
        covered.insert((seen.stage, seen.outer_fold, seen.candidate));
    }
    // Every inner evaluation and ranking of every candidate and outer fold was audited.
    for fold in 0..3 {
        for c in 0..3 {
            assert!(covered.contains(&(Stage::InnerEvaluation, fold, c)));
            assert!(covered.contains(&(Stage::InnerRanking, fold, c)));
        }
        assert!(covered.iter().any(|&(s, f, _)| s == Stage::OuterFit && f == fold));
    }
    // The inner CV of an outer fold sees exactly that fold's training part.
    let inner =
        events.iter().find(|s| s.stage == Stage::InnerEvaluation && s.outer_fold == 1).unwrap();
    assert_eq!(inner.paths.len(), outer.iter().filter(|&&f| f != 1).count());
    assert_eq!(report.candidates.len(), 3);
    for c in &report.candidates {
        assert_eq!(c.inner_auc.len(), 3);
        assert!(c.inner_auc_spread.is_some());
    }
}

#[test]
fn a_one_candidate_grid_gives_exactly_evals_figures() {
    let ws = Workspace::with_images(20, 4, 4);
    std::fs::write(ws.path().join("grid.json"), r#"{"candidates": [{"levels": "6-8"}]}"#).unwrap();
    on_wood(&ws, "tune", &["--grid", "grid.json", "--out", "t"]).ok();
    on_wood(&ws, "eval", &["--levels", "6-8", "--out", "e"]).ok();
    let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).unwrap();
    assert_eq!(read("t/scores.csv"), read("e/scores.csv"));
    let tuned: serde_json::Value = serde_json::from_str(&read("t/metrics.json")).unwrap();
    let eval: serde_json::Value = serde_json::from_str(&read("e/metrics.json")).unwrap();
    let run = &eval["runs"][0];
    for key in ["auc", "honest", "oracle", "auc_per_defect_type"] {
        assert_eq!(tuned["outer"][key], run[key], "{key}");
    }
    assert!(tuned["outer"]["auc"].as_f64().is_some());

    // --repeats 2: the second seed's nested figures are eval's at that seed.
    on_wood(&ws, "tune", &["--grid", "grid.json", "--repeats", "2", "--no-report", "--out", "t2"])
        .ok();
    on_wood(&ws, "eval", &["--levels", "6-8", "--seed", "1", "--no-report", "--out", "e1"]).ok();
    let repeated: serde_json::Value = serde_json::from_str(&read("t2/tune.json")).unwrap();
    let seed1: serde_json::Value = serde_json::from_str(&read("e1/metrics.json")).unwrap();
    let repeats = repeated["repeats"].as_array().unwrap();
    assert_eq!(repeats.len(), 2);
    assert_eq!(repeats[0]["auc"], run["auc"]);
    assert_eq!(repeats[1]["seed"], 1);
    assert_eq!(repeats[1]["auc"], seed1["runs"][0]["auc"]);
    assert_eq!(repeats[1]["honest_f1"], seed1["runs"][0]["honest"]["f1"]);
    assert!(repeated["repeat_auc"]["mean"].as_f64().is_some());
}

#[test]
fn knn_candidates_sharing_a_fit_give_each_evals_figures() {
    // Borders 1 and 0 share one bank and one search per fold; each must still be exactly what
    // eval gives for that setting alone.
    let ws = Workspace::with_images(20, 4, 4);
    std::fs::write(
        ws.path().join("grid.json"),
        r#"{"candidates": [{"scorer": "knn", "coreset": 0.5, "border": 1},
                           {"levels": "7"},
                           {"scorer": "knn", "coreset": 0.5, "border": 0}]}"#,
    )
    .unwrap();
    let run = on_wood(&ws, "tune", &["--grid", "grid.json", "--no-report", "--out", "t"]);
    run.ok();
    assert!(run.stderr().contains("candidates 1, 3 share one fit"), "{}", run.stderr());
    let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).unwrap();
    let tuned: serde_json::Value = serde_json::from_str(&read("t/tune.json")).unwrap();
    let candidates = tuned["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 3);
    for border in ["1", "0"] {
        let out = format!("e{border}");
        let knn = ["--scorer", "knn", "--coreset", "0.5", "--border", border];
        on_wood(&ws, "eval", &[&knn[..], &["--no-report", "--out", &out]].concat()).ok();
        let eval: serde_json::Value =
            serde_json::from_str(&read(&format!("{out}/metrics.json"))).unwrap();
        let label = format!("knn(coreset 0.5, border {border})");
        let result = candidates
            .iter()
            .find(|c| c["label"].as_str().unwrap().contains(&label))
            .unwrap_or_else(|| panic!("no candidate {label}"));
        assert_eq!(result["cv_auc"], eval["runs"][0]["auc"], "{label}");
        assert_eq!(result["cv_honest_f1"], eval["runs"][0]["honest"]["f1"], "{label}");
    }
}

#[test]
fn an_ensemble_candidate_gives_evals_figures_and_fits_by_its_flags() {
    // An ensemble named in a grid file: its own CV equals eval's for the same members, and
    // `fit --tuned` equals a fit with the flags tune.json gives for it.
    let ws = Workspace::with_images(20, 4, 4);
    std::fs::write(
        ws.path().join("grid.toml"),
        "[[candidates]]\nscorer = \"ensemble\"\nmembers = [\"gaussian:7\", \"knn:6,7\"]\ncoreset = 0.5\n",
    )
    .unwrap();
    let run = on_wood(&ws, "tune", &["--grid", "grid.toml", "--no-report", "--out", "t"]);
    let stdout = run.ok();
    assert!(stdout.contains("ensemble[efficientnet_lite0 L7 gaussian + efficientnet_lite0 L6,7 knn(coreset 0.5, border 1)]"), "{stdout}");
    let members = ["--member", "gaussian:7", "--member", "knn:6,7", "--coreset", "0.5"];
    on_wood(
        &ws,
        "eval",
        &[&["--scorer", "ensemble"][..], &members, &["--no-report", "--out", "e"]].concat(),
    )
    .ok();
    let read = |p: &str| std::fs::read_to_string(ws.path().join(p)).unwrap();
    let tuned: serde_json::Value = serde_json::from_str(&read("t/tune.json")).unwrap();
    let eval: serde_json::Value = serde_json::from_str(&read("e/metrics.json")).unwrap();
    assert_eq!(tuned["candidates"][0]["cv_auc"], eval["runs"][0]["auc"]);
    assert_eq!(tuned["candidates"][0]["cv_honest_f1"], eval["runs"][0]["honest"]["f1"]);
    assert!(eval["runs"][0]["auc"].as_f64().is_some());

    let flags = fit_flags(&ws, "t");
    assert!(flags.windows(2).any(|w| w == ["--member", "knn:6,7@efficientnet_lite0"]), "{flags:?}");
    let (tuned, hand) = fit_tuned_and_by_hand(&ws, "t");
    assert_eq!(tuned["scorer"], hand["scorer"]);
    assert_eq!(tuned["scorer"]["kind"], "ensemble");
}

#[test]
fn synthetic_choice_is_said_and_fit_tuned_refits_exactly_the_choice() {
    // 6 real defects (< --min-defects 10): tune paints its own.
    let ws = Workspace::with_images(30, 6, 2);
    let stdout = on_wood(&ws, "tune", &["--out", "t"]).ok();
    assert!(stdout.contains("SYNTHETIC DEFECTS"), "{stdout}");
    assert!(stdout.contains("what to expect on new parts"), "{stdout}");
    let tune_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path().join("t/tune.json")).unwrap())
            .unwrap();
    let painted = tune_json["synthetic"]["painted"].as_array().unwrap();
    assert!(painted.len() >= 9);
    for p in painted {
        assert!(ws.path().join(p["path"].as_str().unwrap()).is_file(), "{p}");
        assert!(ws.path().join(p["mask"].as_str().unwrap()).is_file(), "{p}");
    }
    let metrics = std::fs::read_to_string(ws.path().join("t/metrics.json")).unwrap();
    assert!(metrics.contains("chosen with synthetic defects"));

    // The review page: says it was synthetic, names every candidate and each fold's choice,
    // and every picture it references exists (the painted images' thumbnails included).
    let page = std::fs::read_to_string(ws.path().join("t/report.html")).unwrap();
    let document = scraper::Html::parse_document(&page);
    let body: String = document.root_element().text().collect();
    assert!(body.contains("SYNTHETIC DEFECTS"));
    assert!(body.contains("What tune chose"));
    for candidate in tune_json["candidates"].as_array().unwrap() {
        assert!(body.contains(candidate["label"].as_str().unwrap()), "{candidate}");
    }
    for fold in tune_json["outer_folds"].as_array().unwrap() {
        assert!(body.contains(fold["chosen_label"].as_str().unwrap()), "{fold}");
    }
    let images = scraper::Selector::parse("img").unwrap();
    let sources: Vec<&str> =
        document.select(&images).filter_map(|img| img.value().attr("src")).collect();
    assert!(sources.len() >= tune_json["images"].as_u64().unwrap() as usize);
    for src in sources {
        assert!(ws.path().join("t").join(src).is_file(), "{src}");
    }

    let (tuned, hand) = fit_tuned_and_by_hand(&ws, "t");
    assert_eq!(tuned["tuned"]["synthetic_defects"], true);
    assert!(hand.get("tuned").is_none());
    for key in ["backbone", "levels", "preprocess", "scorer", "threshold"] {
        assert_eq!(tuned[key], hand[key], "{key}");
    }

    // Without synthetic defects there is nothing to choose with.
    on_wood(&ws, "tune", &["--no-synthetic"]).fails_with(&["--no-synthetic", "6 defective images"]);
}

#[test]
fn budget_drops_candidates_and_names_them() {
    let ws = Workspace::with_images(20, 4, 4);
    let run = on_wood(&ws, "tune", &["--budget", "0.0001", "--out", "t"]);
    let stdout = run.ok();
    // The estimate comes before the first candidate, from the probe.
    let stderr = run.stderr();
    let estimate = stderr.find("inner folds: about ").expect(&stderr);
    let first = stderr.find("candidate 1/").expect(&stderr);
    assert!(estimate < first, "{stderr}");
    assert!(stderr.contains("network ") && stderr.contains("probed in "), "{stderr}");
    assert!(stdout.contains("--budget dropped "), "{stdout}");
    assert!(stdout.contains("efficientnet_lite0 L6,7,8 gaussian"), "{stdout}");
    on_wood(&ws, "tune", &["--budget", "0"]).fails_with(&["--budget", "positive"]);
}

#[test]
fn bad_input_is_one_line_naming_the_problem() {
    let ws = Workspace::with_images(6, 2, 4);
    let write = |name: &str, text: &str| std::fs::write(ws.path().join(name), text).unwrap();
    let tune = |grid: &str| on_wood(&ws, "tune", &["--grid", grid]);
    write("empty.toml", "");
    tune("empty.toml").fails_with(&["empty.toml", "line 1", "empty grid file"]);
    write("bad.toml", "[[candidates]]\nscorer = \"knn\"\nborder = -1\n");
    tune("bad.toml").fails_with(&["bad.toml", "line 3", "border"]);
    write("bad.json", "{\"candidates\": [\n {\"levels\": \"6-10\"}\n]}");
    tune("bad.json").fails_with(&["bad.json", "line 2", "levels"]);
    write("lite2.json", r#"{"candidates": [{"backbone": "efficientnet_lite9"}]}"#);
    tune("lite2.json").fails_with(&[
        "candidate 1: backbone efficientnet_lite9 is not installed",
        "scripts/export_backbone.py efficientnet_lite9",
    ]);
    // An ensemble's members are checked too.
    write(
        "member.toml",
        "[[candidates]]\nlevels = \"7\"\n[[candidates]]\nscorer = \"ensemble\"\nmembers = [\"knn\", \"gaussian@efficientnet_lite9\"]\n",
    );
    tune("member.toml").fails_with(&["candidate 2: backbone efficientnet_lite9 is not installed"]);
    // 8 good images: 3 outer × 3 inner folds need 18.
    on_wood(&ws, "tune", &[]).fails_with(&["8 good images", "need at least 18"]);
    assert!(ws.run_files().iter().all(|f| !f.to_string_lossy().contains("tune")));
}
