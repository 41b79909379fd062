//! Dense symmetric linear algebra in f64, on libtorch's own LAPACK.
//!
//! libtorch carries a BLAS and LAPACK (MKL on x86) that run on the same OpenMP threads as the
//! network. A second BLAS in the binary (OpenBLAS, which ndarray-linalg linked) took over
//! libtorch's own matrix products by symbol interposition: two thread pools then spun against
//! each other on the cores, and a magnetic-tile knn eval took 2.3× as long.

use ndarray::{Array1, Array2};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

fn to_tensor(matrix: &Array2<f64>) -> Tensor {
    let (rows, cols) = matrix.dim();
    let values: Vec<f64> = matrix.iter().copied().collect();
    Tensor::from_slice(&values).view([rows as i64, cols as i64])
}

fn to_matrix(tensor: &Tensor, context: &'static str) -> Result<Array2<f64>> {
    let size = tensor.size();
    let values = Vec::<f64>::try_from(tensor.to_kind(Kind::Double).contiguous().view(-1))
        .map_err(|e| Error::torch(context, e))?;
    Array2::from_shape_vec((size[0] as usize, size[1] as usize), values)
        .map_err(|e| Error::numeric(context, e.to_string()))
}

/// Why a symmetric matrix has no inverse through Cholesky.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPositiveDefinite;

/// The inverse of a symmetric positive definite matrix, through its Cholesky factor (which also
/// proves it positive definite).
pub fn spd_inverse(matrix: &Array2<f64>) -> std::result::Result<Array2<f64>, NotPositiveDefinite> {
    if matrix.nrows() != matrix.ncols() || matrix.iter().any(|v| !v.is_finite()) {
        return Err(NotPositiveDefinite);
    }
    let (factor, info) = to_tensor(matrix).linalg_cholesky_ex(false, false);
    if info.int64_value(&[]) != 0 {
        return Err(NotPositiveDefinite);
    }
    let inverse = factor.f_cholesky_inverse(false).map_err(|_| NotPositiveDefinite)?;
    let inverse = to_matrix(&inverse, "cholesky inverse").map_err(|_| NotPositiveDefinite)?;
    if inverse.iter().any(|v| !v.is_finite()) {
        return Err(NotPositiveDefinite);
    }
    Ok(inverse)
}

/// Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix, from its lower
/// triangle.
pub fn symmetric_eigen(matrix: &Array2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    if matrix.nrows() != matrix.ncols() {
        return Err(Error::numeric("eigendecomposition", "the matrix is not square"));
    }
    if matrix.iter().any(|v| !v.is_finite()) {
        return Err(Error::numeric("eigendecomposition", "the matrix has non-finite values"));
    }
    let (values, vectors) =
        to_tensor(matrix).f_linalg_eigh("L").map_err(|e| Error::torch("eigendecomposition", e))?;
    let values = Vec::<f64>::try_from(values.to_kind(Kind::Double).contiguous())
        .map_err(|e| Error::torch("eigendecomposition", e))?;
    Ok((Array1::from(values), to_matrix(&vectors, "eigendecomposition")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Array2<f64> {
        let a = Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0);
        a.t().dot(&a) + Array2::<f64>::eye(n) * 0.5
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        let m = spd(12);
        let inverse = spd_inverse(&m).unwrap();
        let product = m.dot(&inverse);
        for ((i, j), v) in product.indexed_iter() {
            let expected = if i == j { 1.0 } else { 0.0 };
            assert!((v - expected).abs() < 1e-9, "({i}, {j}) = {v}");
        }
    }

    #[test]
    fn singular_and_indefinite_matrices_are_refused() {
        let mut m = spd(5);
        m.row_mut(0).fill(0.0);
        m.column_mut(0).fill(0.0);
        assert_eq!(spd_inverse(&m), Err(NotPositiveDefinite));
        assert_eq!(spd_inverse(&(-spd(4))), Err(NotPositiveDefinite));
        let mut nan = spd(3);
        nan[[1, 1]] = f64::NAN;
        assert_eq!(spd_inverse(&nan), Err(NotPositiveDefinite));
    }

    #[test]
    fn eigen_pairs_reconstruct_the_matrix() {
        let m = spd(9);
        let (values, vectors) = symmetric_eigen(&m).unwrap();
        assert!(values.windows(2).into_iter().all(|w| w[0] <= w[1]));
        let rebuilt = vectors.dot(&Array2::from_diag(&values)).dot(&vectors.t());
        for (a, b) in m.iter().zip(rebuilt.iter()) {
            assert!((a - b).abs() < 1e-8 * m.iter().map(|v| v.abs()).fold(0.0, f64::max));
        }
    }
}
