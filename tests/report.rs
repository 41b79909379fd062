//! `report.html` of `eval` and `heatmap --eval`, read back with an HTML parser as a browser
//! would: every picture it references exists, the mistakes are exactly those of scores.csv at
//! the honest threshold, one table row per image, hostile file names stay text.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::Workspace;
use scraper::{Html, Selector};

const HOSTILE: &str = "<img src=x onerror=alert(1)>.png";
const QUOTED: &str = "it's a \"quoted\" name with spaces.png";

fn select<'a>(document: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    document.select(&Selector::parse(css).unwrap()).collect()
}

fn text(element: &scraper::ElementRef) -> String {
    element.text().collect::<String>()
}

fn percent_decode(url: &str) -> String {
    let bytes = url.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            out.push(u8::from_str_radix(&url[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Every `img src` and relative `a href` names a file in `dir`; returns how many.
fn referenced_files_exist(document: &Html, dir: &Path) -> usize {
    let mut count = 0;
    for (css, attribute) in [("img", "src"), ("a", "href")] {
        for element in select(document, css) {
            let target = element.value().attr(attribute).unwrap();
            if target.starts_with('#') {
                continue;
            }
            assert!(!target.contains("://") && !target.starts_with('/'), "not relative: {target}");
            let file = dir.join(percent_decode(target));
            assert!(file.is_file(), "{css} {attribute}={target} does not exist");
            count += 1;
        }
    }
    count
}

/// Rows of scores.csv: (path, label, predicted_honest).
/// Anomaly-map overlays (`report-files/o….jpg`) the page shows.
fn overlay_count(document: &Html) -> usize {
    select(document, "img")
        .iter()
        .filter_map(|img| img.value().attr("src"))
        .filter(|src| src.contains("/o"))
        .count()
}

fn score_rows(dir: &Path) -> Vec<(String, String, String)> {
    let mut reader = csv::Reader::from_path(dir.join("scores.csv")).unwrap();
    reader.records().map(|r| r.unwrap()).map(|r| (r[0].into(), r[1].into(), r[6].into())).collect()
}

#[test]
fn eval_page_shows_the_mistakes_of_scores_csv_and_every_image() {
    let ws = Workspace::with_images(20, 6, 4);
    let wood = ws.data().join("wood");
    // A hole among the good training images (a likely false alarm) and a good image labelled
    // as a scratch (a likely missed defect), under hostile names.
    fs::copy(wood.join("test/hole/000.png"), wood.join("train/good").join(HOSTILE)).unwrap();
    fs::copy(wood.join("train/good/002.png"), wood.join("test/scratch").join(QUOTED)).unwrap();
    let mask = format!("{}_mask.png", QUOTED.trim_end_matches(".png"));
    fs::copy(
        wood.join("ground_truth/scratch/000_mask.png"),
        wood.join("ground_truth/scratch").join(mask),
    )
    .unwrap();
    let stdout = ws
        .anodet(&["eval", "--category", "wood", "--data", "data", "--folds", "3", "--out", "out"])
        .ok();
    assert!(stdout.contains("review page out/report.html"), "{stdout}");
    let out = ws.path().join("out");
    let raw = fs::read_to_string(out.join("report.html")).unwrap();
    let document = Html::parse_document(&raw);

    assert!(referenced_files_exist(&document, &out) > 40, "thumbnails, overlays and plots");
    for entry in fs::read_dir(out.join("report-files")).unwrap() {
        let picture = image::open(entry.unwrap().path()).unwrap();
        assert!(picture.width().max(picture.height()) <= 320);
    }
    for plot in ["roc.png", "histogram.png", "strip.png", "confusion.png"] {
        assert_eq!(select(&document, &format!("img[src=\"{plot}\"]")).len(), 1, "{plot}");
    }

    let rows = score_rows(&out);
    let wrong: BTreeSet<String> = rows
        .iter()
        .filter(|(_, label, honest)| label != honest)
        .map(|(path, _, _)| path.clone())
        .collect();
    assert!(!wrong.is_empty(), "the mislabelled images make mistakes to show");
    let cards: Vec<String> =
        select(&document, "#section-mistakes .card .path").iter().map(text).collect();
    assert_eq!(cards.len(), wrong.len(), "each mistake once");
    assert_eq!(cards.iter().cloned().collect::<BTreeSet<_>>(), wrong);
    // Mistakes have their anomaly map.
    for card in select(&document, "#section-mistakes .card") {
        assert_eq!(card.select(&Selector::parse("img").unwrap()).count(), 2, "thumbnail + map");
    }

    let table_rows = select(&document, "table.images tbody tr");
    assert_eq!(table_rows.len(), rows.len(), "one row per image");
    let td = Selector::parse("td").unwrap();
    let table_paths: BTreeSet<String> =
        table_rows.iter().map(|r| text(&r.select(&td).nth(1).unwrap())).collect();
    let csv_paths: BTreeSet<String> = rows.iter().map(|(p, _, _)| p.clone()).collect();
    assert_eq!(table_paths, csv_paths);
    let highlighted = select(&document, "table.images tbody tr.mistake").len();
    assert_eq!(highlighted, wrong.len());

    // Hostile names are text, never markup.
    assert!(!raw.contains("<img src=x"), "unescaped file name");
    assert!(select(&document, "[onerror]").is_empty());
    assert_eq!(select(&document, "script").len(), 1, "only the page's own script");
    for name in [HOSTILE, QUOTED] {
        assert!(table_paths.iter().any(|p| p.ends_with(name)), "{name} shown as text");
    }
    // Nothing staged is left behind.
    let leftovers: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    ws.anodet(&["eval", "--category", "wood", "--data", "data", "--no-report", "--out", "plain"])
        .ok();
    assert!(!ws.path().join("plain/report.html").exists());
    assert!(!ws.path().join("plain/report-files").exists());
}

#[test]
fn heatmap_eval_page_has_the_pixel_figures_gallery_and_every_test_image() {
    let ws = Workspace::with_images(16, 3, 2);
    ws.anodet(&["fit", "--category", "wood"]).ok();
    let stdout = ws.anodet(&["heatmap", "--eval", "--method", "feature,patch", "--out", "hm"]).ok();
    assert!(stdout.contains("review page hm/report.html"), "{stdout}");
    let out = ws.path().join("hm");
    let document = Html::parse_document(&fs::read_to_string(out.join("report.html")).unwrap());
    referenced_files_exist(&document, &out);
    let figures = select(&document, "#section-results table tbody tr");
    assert_eq!(figures.len(), 2, "one row per method");
    assert_eq!(select(&document, "#section-galleries img").len(), 2);
    assert_eq!(select(&document, "table.images tbody tr").len(), 3 + 3 * 2, "test images");
}

#[test]
fn a_knn_eval_page_maps_with_the_knn_scorer_itself() {
    let ws = Workspace::with_images(16, 4, 4);
    ws.anodet(&["eval", "--data", "data", "--category", "wood", "--scorer", "knn", "--out", "e"])
        .ok();
    let dir = ws.path().join("e");
    let document = Html::parse_document(&fs::read_to_string(dir.join("report.html")).unwrap());
    let body: String = document.root_element().text().collect();
    assert!(body.contains("knn position scores (levels 6,7)"), "the map method is knn's own");
    assert!(!body.contains("feature map, level"), "no Gaussian feature maps on a knn page");
    assert!(overlay_count(&document) > 0, "the page shows anomaly maps");
    referenced_files_exist(&document, &dir);
}

#[test]
fn maps_kept_from_the_evaluation_pass_equal_a_second_pass() {
    use anodet::features::{FeatureSpec, OnBadImage};
    use anodet::gaussian::GaussianParams;
    use anodet::pipeline::heatmap::DecodedImage;
    use anodet::pipeline::review::{overlay_maps, overlay_maps_from_kept, FoldModel};
    use anodet::progress::Silent;

    let ws = Workspace::with_images(12, 2, 2);
    let runtime = common::cpu_runtime(5);
    let spec = FeatureSpec {
        backbone: "efficientnet_lite0".into(),
        levels: anodet::backbone::Levels::new(vec![6, 7]).unwrap(),
        size: Some("96".parse().unwrap()),
        aspect: anodet::data::image::Aspect::Squash,
    };
    let (backbone, preprocess) = runtime.open_backbone(&spec).unwrap();
    let category = anodet::data::Category::discover(&ws.data(), "wood").unwrap();
    let paths: Vec<_> = category.all().iter().map(|s| s.path.clone()).collect();
    let mut extractor = runtime.extractor(&backbone, &preprocess, &spec.levels).unwrap();
    let plain = extractor.extract(&paths, OnBadImage::Stop, &Silent).unwrap();
    extractor.map_level = Some(7);
    let keeping = extractor.extract(&paths, OnBadImage::Stop, &Silent).unwrap();
    // Keeping the maps changes no feature.
    assert_eq!(plain.features.per_level, keeping.features.per_level);
    assert!((0..paths.len()).all(|i| plain.maps.get(i).is_none()), "no map unless asked");
    assert_eq!(keeping.maps.level, Some(7));
    assert_eq!(keeping.maps.maps.len(), paths.len());

    let fold = FoldModel {
        level: 7,
        gaussian: GaussianParams::new().fit(keeping.features.level(7).unwrap()).unwrap(),
    };
    let decoded: Vec<DecodedImage> = paths
        .iter()
        .map(|path| {
            let image = anodet::data::image::decode(path).unwrap();
            {
                let prepared = preprocess.prepare_decoded(&image);
                DecodedImage::new(path.clone(), image, prepared)
            }
        })
        .collect();
    let images: Vec<&DecodedImage> = decoded.iter().collect();
    let kept: Vec<_> = (0..paths.len()).map(|i| keeping.maps.get(i).unwrap()).collect();
    let second_pass = overlay_maps(&fold, &backbone, &images).unwrap();
    let from_kept = overlay_maps_from_kept(&fold, &kept, &images).unwrap();
    for (a, b) in second_pass.iter().zip(&from_kept) {
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-4 * scale, "kept-map overlay differs by {worst} (scale {scale})");
    }
}

#[test]
fn a_knn_eval_keeps_the_bank_that_scored_each_fold_for_its_page() {
    use anodet::features::FeatureSpec;
    use anodet::pipeline::eval::{evaluate_keeping_inputs, EvalParams, Protocol, ReviewMaps};
    use anodet::progress::Silent;
    use anodet::scorer::{FittedScorer, KnnParams, ScorerSpec};
    use anodet::threshold::QuantileThreshold;

    let ws = Workspace::with_images(16, 4, 4);
    let runtime = common::cpu_runtime(8);
    let knn = KnnParams::default();
    let params = EvalParams {
        data_root: ws.path().join("data"),
        category: "wood".into(),
        features: FeatureSpec {
            backbone: "efficientnet_lite0".into(),
            levels: anodet::backbone::Levels::new(vec![6, 7]).unwrap(),
            size: Some("96".parse().unwrap()),
            aspect: anodet::data::image::Aspect::Squash,
        },
        scorer: ScorerSpec::Knn(knn.clone()),
        protocol: Protocol::Cv,
        folds: 3,
        seed: 0,
        repeats: 2,
        fit_threshold: QuantileThreshold::default(),
        grid: None,
    };
    let (report, inputs) = evaluate_keeping_inputs(&params, &runtime, &Silent).unwrap();
    let ReviewMaps::Positions { patches, fold_mappers, .. } = &inputs.maps_from else {
        panic!("a knn eval's page maps with knn");
    };
    let fold_banks: Vec<_> = fold_mappers
        .iter()
        .map(|mappers| {
            let [mapper] = &mappers[..] else { panic!("one knn model per fold") };
            assert_eq!((mapper.member, mapper.centre, mapper.spread), (None, 0.0, 1.0));
            mapper.model.knn().expect("a knn model")
        })
        .collect();
    // The first run's folds only (the page shows the first seed), in fold order: each the bank a
    // refit on that fold's good training images gives.
    assert_eq!(fold_banks.len(), 3);
    let run = &report.runs[0];
    let probe = patches.select(&[0, 5, 20]);
    for (fold, bank) in fold_banks.iter().enumerate() {
        let training: Vec<usize> = (0..run.samples.len())
            .filter(|&i| run.samples[i].fold != Some(fold) && !run.samples[i].defective)
            .collect();
        let refit = knn.fit_patches(patches.select(&training).patches().unwrap()).unwrap();
        assert_eq!(bank.bank_rows(), refit.bank_rows());
        assert_eq!(bank.score(&probe).unwrap(), refit.score(&probe).unwrap());
    }
}

#[test]
fn an_ensemble_eval_page_maps_with_its_knn_members_standardised() {
    use anodet::features::FeatureSpec;
    use anodet::pipeline::eval::{evaluate_keeping_inputs, EvalParams, Protocol, ReviewMaps};
    use anodet::pipeline::heatmap::DecodedImage;
    use anodet::pipeline::review::position_fold_maps;
    use anodet::progress::Silent;
    use anodet::scorer::{EnsembleParams, KnnParams, MemberSpec, ScorerSpec};
    use anodet::threshold::QuantileThreshold;
    use std::collections::{BTreeSet, HashMap};

    let ws = Workspace::with_images(16, 4, 4);
    let runtime = common::cpu_runtime(8);
    let levels = |l: Vec<u8>| anodet::backbone::Levels::new(l).unwrap();
    let knn = ScorerSpec::Knn(KnnParams::default());
    let params = |scorer: ScorerSpec| EvalParams {
        data_root: ws.path().join("data"),
        category: "wood".into(),
        features: FeatureSpec {
            backbone: "efficientnet_lite0".into(),
            levels: levels(vec![6, 7]),
            size: Some("96".parse().unwrap()),
            aspect: anodet::data::image::Aspect::Squash,
        },
        scorer,
        protocol: Protocol::Cv,
        folds: 3,
        seed: 0,
        repeats: 1,
        fit_threshold: QuantileThreshold::default(),
        grid: None,
    };
    let member = |scorer: ScorerSpec, l: Vec<u8>| MemberSpec {
        backbone: "efficientnet_lite0".into(),
        levels: levels(l),
        scorer,
    };
    let ensemble = ScorerSpec::Ensemble(EnsembleParams::new(vec![
        member(ScorerSpec::Gaussian, vec![7]),
        member(knn.clone(), vec![6, 7]),
    ]));
    let (plain_report, plain) = evaluate_keeping_inputs(&params(knn), &runtime, &Silent).unwrap();
    let (report, inputs) = evaluate_keeping_inputs(&params(ensemble), &runtime, &Silent).unwrap();
    let maps_of = |report: &anodet::pipeline::eval::EvalReport, maps_from: &ReviewMaps| {
        let ReviewMaps::Positions { spec, patches, fold_mappers, inputs } = maps_from else {
            panic!("knn members draw the page's maps");
        };
        let run = &report.runs[0];
        let mapped: BTreeSet<usize> = [0, 5, 20, run.samples.len() - 1].into();
        let decoded: HashMap<usize, DecodedImage> = mapped
            .iter()
            .map(|&i| {
                let path = run.samples[i].path.clone();
                let image = anodet::data::image::decode(&path).unwrap();
                let prepared = inputs[0].prepare_decoded(&image);
                (i, DecodedImage::new(path, image, prepared))
            })
            .collect();
        let maps = position_fold_maps(
            report,
            run,
            (spec.as_ref(), fold_mappers),
            (patches, inputs),
            &mapped,
            &decoded,
            &Silent,
        )
        .unwrap();
        assert_eq!(maps.len(), mapped.len(), "every mapped image has a map");
        maps
    };
    let ReviewMaps::Positions { fold_mappers, .. } = &inputs.maps_from else {
        panic!("an ensemble with a knn member maps with it");
    };
    assert_eq!(fold_mappers.len(), 3, "one set of models per fold");
    assert!(fold_mappers.iter().all(|m| m.len() == 1 && m[0].member == Some(1)), "the knn member");
    let plain_maps = maps_of(&plain_report, &plain.maps_from);
    let maps = maps_of(&report, &inputs.maps_from);
    let run = &report.runs[0];
    for (i, map) in &maps {
        // Same features, settings, seed and folds: the member's bank is the plain run's, so its
        // map is the plain map standardised as the member's score is.
        let mapper = &fold_mappers[run.samples[*i].fold.unwrap()][0];
        let plain = &plain_maps[i];
        let largest_gap =
            common::largest_standardised_gap(plain, map, mapper.centre, mapper.spread);
        assert!(largest_gap < 1e-4, "image {i}: largest relative gap {largest_gap}");
        assert!(map.iter().any(|&v| (v - map[0]).abs() > 1e-3), "image {i}: a flat map");
    }

    // The page says so, and shows the maps.
    let eval = "eval --data data --category wood --scorer ensemble --member gaussian:7 \
                --member knn:6,7 --out e";
    ws.anodet(&eval.split_whitespace().collect::<Vec<_>>()).ok();
    let dir = ws.path().join("e");
    let document = Html::parse_document(&fs::read_to_string(dir.join("report.html")).unwrap());
    let body: String = document.root_element().text().collect();
    assert!(
        body.contains("the ensemble's map: its knn and padim members' position scores"),
        "{body}"
    );
    assert!(!body.contains("feature map, level"), "no Gaussian feature maps for this ensemble");
    assert!(overlay_count(&document) > 0, "the page shows anomaly maps");
    referenced_files_exist(&document, &dir);
}
