//! Smoothing and resizing of anomaly maps.

use tch::{Kind, Tensor};

use super::torch;
use crate::error::Result;

/// Blur width at the network's input resolution, as in PaDiM (σ = 4 px at 224 px).
pub const SIGMA_AT_INPUT: f64 = 4.0;

/// Upsamples raw maps (`n × h × w`) to the input size and blurs them: `n × height × width`.
pub fn to_input_size(raw: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    let up = raw
        .unsqueeze(1)
        .f_upsample_bilinear2d([height, width], false, None, None)
        .map_err(torch("resize map"))?;
    let blurred = gaussian_blur(&up, SIGMA_AT_INPUT)?;
    Ok(blurred.squeeze_dim(1))
}

/// Resizes one map (`h × w`) to `height × width` (bilinear).
pub fn resize(map: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    Ok(map
        .unsqueeze(0)
        .unsqueeze(0)
        .f_upsample_bilinear2d([height, width], false, None, None)
        .map_err(torch("resize map"))?
        .squeeze_dim(0)
        .squeeze_dim(0))
}

/// Separable Gaussian blur of `n × 1 × h × w` maps, reflecting at the borders.
pub fn gaussian_blur(maps: &Tensor, sigma: f64) -> Result<Tensor> {
    let radius = (3.0 * sigma).ceil() as i64;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = weights.iter().sum();
    let kernel = Tensor::from_slice(&weights.iter().map(|w| w / total).collect::<Vec<_>>())
        .to_device(maps.device());
    let size = 2 * radius + 1;
    let (h, w) = (maps.size()[2], maps.size()[3]);
    // Reflection needs the pad to be smaller than the side; tiny maps are padded by replication.
    let pad = |t: &Tensor, p: [i64; 4]| -> Result<Tensor> {
        if radius < h && radius < w {
            t.f_reflection_pad2d(p).map_err(torch("blur"))
        } else {
            t.f_replication_pad2d(p).map_err(torch("blur"))
        }
    };
    let horizontal = pad(maps, [radius, radius, 0, 0])?
        .f_conv2d(&kernel.view([1, 1, 1, size]), None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        .map_err(torch("blur"))?;
    pad(&horizontal, [0, 0, radius, radius])?
        .f_conv2d(&kernel.view([1, 1, size, 1]), None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
        .map_err(torch("blur"))
}

/// Copies a 2-D float tensor into a row-major vector.
pub fn to_vec(map: &Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(map.to_kind(Kind::Float).contiguous().view(-1))
        .map_err(torch("map to vector"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_mass_and_constant_maps() {
        let constant = Tensor::full([1, 1, 20, 30], 3.0, (Kind::Float, tch::Device::Cpu));
        let blurred = gaussian_blur(&constant, 2.0).unwrap();
        assert_eq!(blurred.size(), vec![1, 1, 20, 30]);
        assert!((blurred - 3.0).abs().max().double_value(&[]) < 1e-5);
        let spike = Tensor::zeros([1, 1, 41, 41], (Kind::Float, tch::Device::Cpu));
        let _ = spike.get(0).get(0).get(20).get(20).fill_(1.0);
        let blurred = gaussian_blur(&spike, 2.0).unwrap();
        assert!((blurred.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-4);
        let peak = blurred.get(0).get(0).get(20).get(20).double_value(&[]);
        assert!((blurred.max().double_value(&[]) - peak).abs() < 1e-9, "the peak stays in place");
    }
}
