//! The decode limit: images per second that anodet's reading, hashing, decoding and
//! preprocessing reach on all cores, with no network. Compare it with the forward limit (the
//! backbone alone) to know which one an end-to-end run can reach.
//!
//! `cargo run --release --example decode_bench -- DIR [SIZE] [SECONDS]`: every PNG/JPEG under DIR,
//! resized to SIZE (default 224) as `--aspect squash` does, repeatedly for at least SECONDS
//! (default 3); prints `decode N images at SIZE px on T threads: R img/s`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anodet::data::image::{decode_bytes, Aspect, InputSize, Preprocess};
use anodet::features::cache::content_hash;
use rayon::prelude::*;

fn images(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            images(&path, found);
        } else if path
            .extension()
            .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_string_lossy().as_ref()))
            && !path.to_string_lossy().contains("ground_truth")
        {
            found.push(path);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(dir) = args.get(1) else {
        eprintln!("usage: decode_bench DIR [SIZE] [SECONDS]");
        std::process::exit(2);
    };
    let side: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(224);
    let seconds: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let mut paths = Vec::new();
    images(Path::new(dir), &mut paths);
    if paths.is_empty() {
        eprintln!("decode_bench: {dir}: no images");
        std::process::exit(2);
    }
    let preprocess = Preprocess {
        size: InputSize { width: side, height: side },
        aspect: Aspect::Squash,
        mean: [0.5; 3],
        std: [0.5; 3],
    };
    let once = || {
        paths.par_iter().for_each(|path| {
            let bytes = std::fs::read(path).expect("read");
            std::hint::black_box(content_hash(&bytes));
            let image = decode_bytes(path, bytes).expect("decode");
            std::hint::black_box(preprocess.prepare_decoded(&image));
        })
    };
    once(); // warm the page cache
    let start = Instant::now();
    let mut done = 0;
    while done == 0 || start.elapsed().as_secs_f64() < seconds {
        once();
        done += paths.len();
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    println!(
        "decode {} images at {side} px on {} threads: {rate:.1} img/s",
        paths.len(),
        rayon::current_num_threads()
    );
}
