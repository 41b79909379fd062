//! Decode + resize throughput, without the network: prepares every image under the given
//! folders for a 224 px input on all cores (as the feature extractor's decoding thread does) and
//! prints one line:
//!
//! `images N wall_s S cpu_s S images_per_s X cpu_ms_per_image Y`
//!
//! `--full` uses full decoding (`decode_bytes` + `prepare_decoded`) instead of the fast path, to
//! compare. Used by scripts/bench_decode.sh.
//!
//! Usage: cargo run --release --example prepare -- [--full] [--size N] DIR...

use std::path::{Path, PathBuf};
use std::time::Instant;

use anodet::data::image::{decode_bytes, Aspect, InputSize, Preprocess};
use rayon::prelude::*;

const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            images_under(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut full = false;
    let mut size = InputSize { width: 224, height: 224 };
    let mut dirs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--full" => full = true,
            "--size" => size = args.next().ok_or("--size needs a value")?.parse()?,
            _ => dirs.push(PathBuf::from(arg)),
        }
    }
    let mut paths = Vec::new();
    for dir in &dirs {
        images_under(dir, &mut paths)?;
    }
    if paths.is_empty() {
        return Err("no images under the given folders".into());
    }
    let preprocess = Preprocess { size, aspect: Aspect::Squash, mean: [0.5; 3], std: [0.5; 3] };
    let (cpu_start, start) = (cpu_seconds(), Instant::now());
    let checksum: f64 = paths
        .par_iter()
        .map(|path| -> anodet::Result<f64> {
            let bytes = std::fs::read(path).map_err(|e| anodet::Error::io(path, e))?;
            let prepared = if full {
                preprocess.prepare_decoded(&decode_bytes(path, bytes)?)
            } else {
                preprocess.prepare_bytes(path, &bytes)?
            };
            Ok(prepared.chw[0] as f64)
        })
        .collect::<anodet::Result<Vec<f64>>>()?
        .iter()
        .sum();
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    let n = paths.len();
    std::hint::black_box(checksum);
    println!(
        "images {n} wall_s {wall:.3} cpu_s {cpu:.3} images_per_s {:.1} cpu_ms_per_image {:.2}",
        n as f64 / wall,
        1000.0 * cpu / n as f64
    );
    Ok(())
}
