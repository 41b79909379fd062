//! The Gaussian estimator against sklearn's LedoitWolf (fixture from scripts/make_fixtures.py).

use anodet::gaussian::{Accumulator, GaussianParams};
use ndarray::{Array2, Axis};

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    x: Vec<Vec<f64>>,
    queries: Vec<Vec<f64>>,
    location: Vec<f64>,
    covariance: Vec<Vec<f64>>,
    precision: Vec<Vec<f64>>,
    shrinkage: f64,
    distances: Vec<f64>,
}

fn matrix(rows: &[Vec<f64>]) -> Array2<f32> {
    let cols = rows[0].len();
    Array2::from_shape_fn((rows.len(), cols), |(i, j)| rows[i][j] as f32)
}

fn assert_close(name: &str, what: &str, got: f64, want: f64, scale: f64) {
    let tolerance = 1e-6 * scale.max(want.abs());
    assert!((got - want).abs() <= tolerance, "{name}: {what}: got {got}, sklearn {want}");
}

fn load() -> Fixture {
    let text = std::fs::read_to_string("tests/fixtures/ledoit_wolf.json").expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

// The fixture's inputs have 6 decimals, which f32 holds to ~1e-7 relative: tolerances are 1e-6
// relative to each value (or to the matrix's largest entry, for entries near zero).
#[test]
fn ledoit_wolf_matches_sklearn() {
    for case in load().cases {
        let x = matrix(&case.x);
        // Push in uneven batches: the streaming sums must not depend on batching.
        let mut accumulator = Accumulator::new(x.ncols());
        for chunk in [0..5, 5..6, 6..x.nrows()] {
            accumulator.push(x.slice(ndarray::s![chunk, ..])).unwrap();
        }
        let estimate = accumulator.estimate().unwrap();
        assert_close(&case.name, "shrinkage", estimate.shrinkage, case.shrinkage, 0.0);
        for (j, &want) in case.location.iter().enumerate() {
            assert_close(&case.name, "mean", estimate.mean[j], want, 1.0);
        }
        let cov_scale = case.covariance.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        for (i, row) in case.covariance.iter().enumerate() {
            for (j, &want) in row.iter().enumerate() {
                assert_close(
                    &case.name,
                    "covariance",
                    estimate.covariance[[i, j]],
                    want,
                    cov_scale,
                );
            }
        }
        let model = GaussianParams::new().fit(x.view()).unwrap();
        let precision_scale = case.precision.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
        for (i, row) in case.precision.iter().enumerate() {
            for (j, &want) in row.iter().enumerate() {
                assert_close(
                    &case.name,
                    "precision",
                    model.precision()[[i, j]],
                    want,
                    precision_scale,
                );
            }
        }
        let distances = model.score(matrix(&case.queries).view()).unwrap();
        for (got, want) in distances.iter().zip(&case.distances) {
            assert_close(&case.name, "distance", *got, *want, 0.0);
        }
    }
}

#[test]
fn identical_images_are_a_clear_error_not_nan() {
    let x = Array2::from_elem((12, 4), 0.5f32);
    let message = GaussianParams::new().fit(x.view()).unwrap_err().to_string();
    assert!(message.contains("singular"), "{message}");
    // A ridge makes it usable.
    let model = GaussianParams::new().ridge(1e-3).fit(x.view()).unwrap();
    assert!(model.score(x.view()).unwrap().iter().all(|d| d.abs() < 1e-9));
}

#[test]
fn rejects_nan_wrong_width_and_too_few_images() {
    let mut x = Array2::from_shape_fn((5, 3), |(i, j)| (i * 3 + j) as f32);
    let model = GaussianParams::new().fit(x.view()).unwrap();
    assert!(model.score(Array2::zeros((1, 4)).view()).is_err());
    x[[2, 1]] = f32::NAN;
    assert!(GaussianParams::new().fit(x.view()).is_err());
    assert!(GaussianParams::new().fit(x.select(Axis(0), &[0]).view()).is_err());
    assert!(GaussianParams::new().ridge(-1.0).fit(Array2::zeros((3, 2)).view()).is_err());
}
