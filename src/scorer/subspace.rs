//! The subspace method, as HLAC inspection classically uses it (Otsu; Kobayashi & Otsu): the
//! HLAC vectors of good local patches (grid cells) span a low-dimensional subspace; a cell's
//! anomaly is the norm of its residual outside that subspace; an image scores its worst cell.
//!
//! Features are standardised first (HLAC's orders differ by orders of magnitude: an order-0 mean
//! intensity beside third-order products), then the principal subspace keeps the fewest
//! components that explain `variance` of the good cells' variance.

use ndarray::{Array1, Array2, Axis};

use super::{Embeddings, FittedScorer, PositionMap, Scorer, ScorerSpec, StoredTensor, TensorData};
use crate::backbone::hlac::Hlac;
use crate::backbone::Levels;
use crate::data::image::PreparedImage;
use crate::error::{Error, Result};
use crate::features::PatchSet;

/// Settings of the subspace scorer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SubspaceParams {
    /// Cells a side of the grid each image is cut into.
    pub grid: usize,
    /// Share of the good cells' variance the principal subspace keeps, in (0, 1).
    pub variance: f64,
}

pub const DEFAULT_GRID: usize = 4;
pub const DEFAULT_VARIANCE: f64 = 0.99;

impl Default for SubspaceParams {
    fn default() -> Self {
        SubspaceParams { grid: DEFAULT_GRID, variance: DEFAULT_VARIANCE }
    }
}

impl SubspaceParams {
    pub fn check(&self) -> Result<()> {
        if !(1..=64).contains(&self.grid) {
            return Err(Error::param(
                "--grid",
                format!("{} is outside 1..=64 cells a side", self.grid),
            ));
        }
        if !(self.variance > 0.0 && self.variance < 1.0) {
            return Err(Error::param(
                "--variance",
                format!(
                    "{} is outside (0, 1): the share of variance the subspace keeps",
                    self.variance
                ),
            ));
        }
        Ok(())
    }

    /// Fits on the cells of good images.
    pub fn fit_cells(&self, cells: &PatchSet) -> Result<SubspaceModel> {
        self.check()?;
        let (rows, dim) = (cells.rows(), cells.dim);
        if rows < 2 {
            return Err(Error::numeric("subspace fit", "fewer than two good cells"));
        }
        let x =
            Array2::from_shape_vec((rows, dim), cells.values.iter().map(|&v| v as f64).collect())
                .map_err(|e| Error::numeric("subspace fit", e.to_string()))?;
        let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(dim));
        let centred = &x - &mean;
        let variance =
            centred.mapv(|v| v * v).mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(dim));
        // A constant feature gets scale 1: it is 0 after centring on good cells, and any
        // deviation on a new cell still counts, in its own units.
        let scale = variance.mapv(|v| if v > 1e-12 { v.sqrt() } else { 1.0 });
        let z = &centred / &scale;
        let covariance = z.t().dot(&z) / (rows as f64 - 1.0);
        let (eigenvalues, eigenvectors) = crate::linalg::symmetric_eigen(&covariance)?;
        // Descending order; keep the fewest leading components reaching the variance share.
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigenvalues[b].total_cmp(&eigenvalues[a]));
        let total: f64 = eigenvalues.iter().map(|v| v.max(0.0)).sum();
        let mut kept = 0;
        let mut explained = 0.0;
        for &i in &order {
            if total <= 0.0 || explained / total >= self.variance {
                break;
            }
            explained += eigenvalues[i].max(0.0);
            kept += 1;
        }
        let kept = kept.clamp(1, dim.saturating_sub(1).max(1));
        let basis = Array2::from_shape_fn((dim, kept), |(r, c)| eigenvectors[[r, order[c]]]);
        Ok(SubspaceModel { params: self.clone(), levels: cells.levels.clone(), mean, scale, basis })
    }
}

impl Scorer for SubspaceParams {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Subspace(self.clone())
    }

    fn fit(&self, good: &Embeddings) -> Result<Box<dyn FittedScorer>> {
        Ok(Box::new(self.fit_cells(good.patches()?)?))
    }
}

/// A fitted principal subspace of good cells.
#[derive(Debug, Clone)]
pub struct SubspaceModel {
    params: SubspaceParams,
    /// The HLAC levels whose features make a cell's vector, in order.
    levels: Levels,
    mean: Array1<f64>,
    scale: Array1<f64>,
    /// dims × kept components (orthonormal columns).
    basis: Array2<f64>,
}

impl SubspaceModel {
    pub fn params(&self) -> &SubspaceParams {
        &self.params
    }

    /// Values per cell.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The cell vectors of prepared images, as this model reads them.
    pub fn cells(&self, hlac: &Hlac, images: &[&PreparedImage]) -> Result<Embeddings> {
        let grid = self.params.grid;
        let mut set = PatchSet::empty(self.levels.clone(), self.dim());
        for image in images {
            let cells = hlac.cell_features(image, grid)?;
            let values = crate::features::cells::cell_values(hlac, &cells, &self.levels);
            set.push(std::path::PathBuf::new(), (grid, grid), &values)?;
        }
        Ok(Embeddings::Patches(set))
    }

    /// Components kept.
    pub fn components(&self) -> usize {
        self.basis.ncols()
    }

    /// Residual norm of each cell of `cells`.
    fn residuals(&self, cells: &PatchSet) -> Result<Vec<f32>> {
        if cells.dim != self.mean.len() {
            return Err(Error::numeric(
                "subspace scoring",
                format!("cells have {} values, the model {}", cells.dim, self.mean.len()),
            ));
        }
        let x = Array2::from_shape_vec(
            (cells.rows(), cells.dim),
            cells.values.iter().map(|&v| v as f64).collect(),
        )
        .map_err(|e| Error::numeric("subspace scoring", e.to_string()))?;
        let z = (&x - &self.mean) / &self.scale;
        let projected = z.dot(&self.basis).dot(&self.basis.t());
        let residual = &z - &projected;
        Ok(residual.map_axis(Axis(1), |r| r.dot(&r).max(0.0).sqrt() as f32).to_vec())
    }
}

impl FittedScorer for SubspaceModel {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Subspace(self.params.clone())
    }

    fn score(&self, embeddings: &Embeddings) -> Result<Vec<f64>> {
        let cells = embeddings.patches()?;
        let residuals = self.residuals(cells)?;
        Ok((0..cells.len())
            .map(|i| {
                residuals[cells.offsets[i]..cells.offsets[i + 1]]
                    .iter()
                    .fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64
            })
            .collect())
    }

    fn maps(&self, embeddings: &Embeddings) -> Result<Option<Vec<PositionMap>>> {
        let cells = embeddings.patches()?;
        let residuals = self.residuals(cells)?;
        Ok(Some(
            (0..cells.len())
                .map(|i| PositionMap {
                    height: cells.grids[i].0,
                    width: cells.grids[i].1,
                    values: residuals[cells.offsets[i]..cells.offsets[i + 1]].to_vec(),
                })
                .collect(),
        ))
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let (dim, kept) = self.basis.dim();
        vec![
            StoredTensor {
                name: "subspace.mean".into(),
                shape: vec![dim],
                data: TensorData::F64(self.mean.to_vec()),
            },
            StoredTensor {
                name: "subspace.scale".into(),
                shape: vec![dim],
                data: TensorData::F64(self.scale.to_vec()),
            },
            StoredTensor {
                name: "subspace.basis".into(),
                shape: vec![dim, kept],
                data: TensorData::F64(self.basis.iter().copied().collect()),
            },
        ]
    }

    fn subspace(&self) -> Option<&SubspaceModel> {
        Some(self)
    }
}

/// Rebuilds a subspace model: `read(name)` gives a stored float64 tensor's shape and values.
pub fn load(
    params: &SubspaceParams,
    levels: &Levels,
    read: &super::ReadWithShape<f64>,
) -> Result<SubspaceModel> {
    params.check()?;
    let damaged = || Error::numeric("subspace model", "the stored subspace is damaged");
    let (mean_shape, mean) = read("subspace.mean")?;
    let (scale_shape, scale) = read("subspace.scale")?;
    let (basis_shape, basis) = read("subspace.basis")?;
    let dim = *mean_shape.first().ok_or_else(damaged)?;
    if scale_shape != [dim] || basis_shape.len() != 2 || basis_shape[0] != dim {
        return Err(damaged());
    }
    if mean.iter().chain(&scale).chain(&basis).any(|v| !v.is_finite()) {
        return Err(damaged());
    }
    let basis = Array2::from_shape_vec((dim, basis_shape[1]), basis).map_err(|_| damaged())?;
    Ok(SubspaceModel {
        params: params.clone(),
        levels: levels.clone(),
        mean: Array1::from(mean),
        scale: Array1::from(scale),
        basis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::path::PathBuf;

    /// Cells on a 2-D plane inside 6-D space, on a 2×2 grid.
    fn planar(images: usize, seed: u64) -> PatchSet {
        let mut rng = Rng::new(seed);
        let mut set = PatchSet::empty(Levels::new(vec![1]).unwrap(), 6);
        for i in 0..images {
            let mut values = Vec::new();
            for _ in 0..4 {
                let (a, b) = (rng.range(-1.0, 1.0), rng.range(-1.0, 1.0));
                values.extend([a, b, a + b, a - b, 2.0 * a, 3.0].map(|v| v as f32));
            }
            set.push(PathBuf::from(format!("{i}")), (2, 2), &values).unwrap();
        }
        set
    }

    #[test]
    fn cells_in_the_subspace_score_near_zero_and_an_odd_cell_scores_high() {
        let params = SubspaceParams { grid: 2, variance: 0.99 };
        let model = params.fit_cells(&planar(50, 1)).unwrap();
        assert_eq!(model.components(), 2);
        let fresh = planar(3, 2);
        let scores = model.score(&Embeddings::Patches(fresh.clone())).unwrap();
        assert!(scores.iter().all(|&s| s < 1e-3), "{scores:?}");
        let mut odd = fresh;
        odd.values[6 * 5 + 2] += 1.0; // image 1, cell 1: breaks a + b
        let scores = model.score(&Embeddings::Patches(odd.clone())).unwrap();
        assert!(scores[1] > 0.1 && scores[0] < 1e-3, "{scores:?}");
        let maps = model.maps(&Embeddings::Patches(odd)).unwrap().unwrap();
        assert!(maps[1].values[1] > 0.1 && maps[1].values[0] < 1e-3);
    }

    #[test]
    fn stored_model_scores_identically_and_bad_settings_are_named() {
        let params = SubspaceParams { grid: 2, variance: 0.9 };
        let model = params.fit_cells(&planar(20, 3)).unwrap();
        let stored = model.tensors();
        let read = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let t = stored.iter().find(|t| t.name == name).unwrap();
            let TensorData::F64(v) = &t.data else { unreachable!() };
            Ok((t.shape.clone(), v.clone()))
        };
        let loaded = load(&params, &Levels::new(vec![1]).unwrap(), &read).unwrap();
        let probe = Embeddings::Patches(planar(4, 9));
        assert_eq!(model.score(&probe).unwrap(), loaded.score(&probe).unwrap());
        for (grid, variance, flag) in
            [(0, 0.9, "--grid"), (2, 1.0, "--variance"), (2, 0.0, "--variance")]
        {
            let error = SubspaceParams { grid, variance }.fit_cells(&planar(5, 1)).unwrap_err();
            assert!(error.to_string().starts_with(flag), "{error}");
        }
    }
}
