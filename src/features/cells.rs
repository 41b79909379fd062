//! Features per cell of a grid (HLAC patch mode): every image contributes `grid²` rows, image
//! by image, cells row-major.

use std::path::PathBuf;

use ndarray::Array2;
use rayon::prelude::*;

use crate::backbone::hlac::Hlac;
use crate::backbone::Levels;
use crate::data::image::Preprocess;
use crate::error::{Error, Result};
use crate::features::{FeatureSet, PatchSet};
use crate::progress::Progress;

/// The values of `levels` of one image's cells (each cell all nine HLAC levels), concatenated
/// cell by cell: the positions of a cell grid.
pub fn cell_values(hlac: &Hlac, cells: &[Vec<f32>], levels: &Levels) -> Vec<f32> {
    cells
        .iter()
        .flat_map(|cell| {
            levels.as_slice().iter().flat_map(move |&level| {
                let (start, width) = hlac.info().level_span(level);
                cell[start..start + width].iter().copied()
            })
        })
        .collect()
}

/// HLAC features of the chosen levels per grid cell, as patch features on a `grid × grid` grid
/// (for scorers that read positions: subspace, knn).
pub fn hlac_cell_patches(
    hlac: &Hlac,
    preprocess: &Preprocess,
    paths: &[PathBuf],
    levels: &Levels,
    grid: usize,
    progress: &dyn Progress,
) -> Result<PatchSet> {
    let dim: usize = levels.as_slice().iter().map(|&l| hlac.info().level_span(l).1).sum();
    progress.start(paths.len() as u64, "HLAC cell features");
    let per_image: Vec<Vec<f32>> = paths
        .par_iter()
        .map(|path| {
            let cells = hlac.cell_features(&preprocess.prepare(path)?, grid)?;
            progress.advance(1);
            Ok(cell_values(hlac, &cells, levels))
        })
        .collect::<Result<Vec<_>>>()?;
    progress.finish();
    let mut set = PatchSet::empty(levels.clone(), dim);
    for (path, values) in paths.iter().zip(per_image) {
        set.push(path.clone(), (grid, grid), &values)?;
    }
    Ok(set)
}

/// HLAC features of each grid cell of each image; `paths` in the result repeat per cell.
pub fn hlac_cell_features(
    hlac: &Hlac,
    preprocess: &Preprocess,
    paths: &[PathBuf],
    levels: &Levels,
    grid: usize,
    progress: &dyn Progress,
) -> Result<FeatureSet> {
    progress.start(paths.len() as u64, "HLAC cell features");
    let per_image: Vec<Vec<Vec<f32>>> = paths
        .par_iter()
        .map(|path| {
            let cells = hlac.cell_features(&preprocess.prepare(path)?, grid);
            progress.advance(1);
            cells
        })
        .collect::<Result<Vec<_>>>()?;
    progress.finish();
    let rows: Vec<&Vec<f32>> = per_image.iter().flatten().collect();
    let per_level = levels
        .as_slice()
        .iter()
        .map(|&level| {
            let (start, width) = hlac.info().level_span(level);
            Array2::from_shape_fn((rows.len(), width), |(i, j)| rows[i][start + j])
        })
        .collect();
    let cells = grid * grid;
    let paths = paths.iter().flat_map(|p| std::iter::repeat_n(p.clone(), cells)).collect();
    if rows.is_empty() {
        return Err(Error::param("images", "no images"));
    }
    Ok(FeatureSet { paths, levels: levels.clone(), per_level })
}
