//! Nearest-neighbour distances and greedy k-center coresets, as batched matrix products on
//! libtorch (‖a‖² − 2ab + ‖b‖²), in chunks so memory stays bounded whatever the bank size.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Query rows per chunk.
const QUERY_CHUNK: i64 = 1024;
/// Bank rows per chunk: QUERY_CHUNK × BANK_CHUNK floats (16 MiB) of distances at a time. Kept
/// under glibc's 32 MiB mapping threshold, so the buffer is reused instead of being mapped,
/// faulted in and unmapped for every chunk pair.
const BANK_CHUNK: i64 = 4096;

fn torch(context: &'static str) -> impl Fn(tch::TchError) -> Error {
    move |e| Error::torch(context, e)
}

/// Euclidean distance from each row of `queries` (q × d) to its nearest row of `bank` (m × d),
/// with the bank's squared norms precomputed (`bank_norms`, m). Returns q distances (float).
pub fn nearest_distances(queries: &Tensor, bank: &Tensor, bank_norms: &Tensor) -> Result<Tensor> {
    let (q, d) = (queries.size()[0], queries.size()[1]);
    let (m, bank_d) = (bank.size()[0], bank.size()[1]);
    if d != bank_d {
        return Err(Error::numeric(
            "nearest neighbour",
            format!("queries have {d} values, the memory bank {bank_d}"),
        ));
    }
    if m == 0 {
        return Err(Error::numeric("nearest neighbour", "the memory bank is empty"));
    }
    let queries = queries.to_kind(Kind::Float).to_device(bank.device());
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < q {
        let length = QUERY_CHUNK.min(q - start);
        let block = queries.narrow(0, start, length);
        let block_norms = (&block * &block).sum_dim_intlist(1, false, Kind::Float);
        let scaled = &block * -2.0;
        let mut best: Option<Tensor> = None;
        let mut bank_start = 0;
        while bank_start < m {
            let bank_length = BANK_CHUNK.min(m - bank_start);
            let rows = bank.narrow(0, bank_start, bank_length);
            let norms = bank_norms.narrow(0, bank_start, bank_length);
            // ‖b‖² − 2ab in one fused product per chunk pair; ‖a‖² is the same for every bank
            // row, so it is added after the minimum.
            let partial = norms
                .unsqueeze(0)
                .f_addmm(&scaled, &rows.tr())
                .map_err(torch("nearest neighbour"))?
                .amin(&[1i64][..], false);
            best = Some(match best {
                Some(current) => current.minimum(&partial),
                None => partial,
            });
            bank_start += bank_length;
        }
        if let Some(best) = best {
            chunks.push((best + &block_norms).clamp_min(0.0).sqrt());
        }
        start += length;
    }
    if chunks.is_empty() {
        return Ok(Tensor::zeros([0], (Kind::Float, Device::Cpu)));
    }
    Ok(Tensor::cat(&chunks, 0).to_device(Device::Cpu))
}

/// Squared norms of each row.
pub fn row_norms(rows: &Tensor) -> Tensor {
    (rows * rows).sum_dim_intlist(1, false, Kind::Float)
}

/// Dimensions of the random projection the coreset selection works in (PatchCore's choice): the
/// Johnson-Lindenstrauss lemma keeps distances nearly intact, and selection gets much cheaper.
pub const PROJECTION_DIMS: i64 = 128;

/// A greedy k-center coreset of each part of `features` (row ranges, together covering the rows
/// to select from), keeping `share` of each part's rows; the parts' indices, concatenated.
///
/// Greedy selection costs n × count × d: quadratic in the bank. Selecting within parts of at most
/// a few ten thousand rows makes it linear (n × share × part rows × d), and the union of the
/// parts' coresets still covers every row within its own part's covering radius.
pub fn partitioned_coreset(
    features: &Tensor,
    parts: &[std::ops::Range<i64>],
    share: f64,
    seed: u64,
) -> Result<Vec<i64>> {
    if parts.iter().all(|part| part.is_empty()) {
        return Err(Error::numeric("coreset", "nothing to select from"));
    }
    let mut rng = Rng::new(seed);
    let projected = project(features, &mut rng);
    let mut selected = Vec::new();
    for part in parts.iter().filter(|part| !part.is_empty()) {
        let rows = projected.narrow(0, part.start, part.end - part.start);
        let count = ((rows.size()[0] as f64 * share).ceil() as i64).max(1);
        let chosen = greedy_in_projection(&rows, count, &mut rng)?;
        selected.extend(chosen.into_iter().map(|i| i + part.start));
    }
    Ok(selected)
}

/// The rows of `features` in a random projection to [`PROJECTION_DIMS`] dimensions (as float;
/// unprojected when they have no more dimensions than that).
fn project(features: &Tensor, rng: &mut Rng) -> Tensor {
    let d = features.size()[1];
    if d > PROJECTION_DIMS {
        // A dense Gaussian projection, from anodet's own seeded generator so the choice is the
        // same on every machine and device.
        let values: Vec<f32> = (0..d * PROJECTION_DIMS)
            .map(|_| gaussian_sample(rng) as f32 / (PROJECTION_DIMS as f32).sqrt())
            .collect();
        let projection =
            Tensor::from_slice(&values).view([d, PROJECTION_DIMS]).to_device(features.device());
        features.to_kind(Kind::Float).mm(&projection)
    } else {
        features.to_kind(Kind::Float)
    }
}

/// Greedy k-center selection of `count` rows of `projected`, batched.
///
/// Exact greedy selection is sequential: one pass over all n rows per centre, memory-bound and
/// slow on a CPU for banks of 10⁵ rows. Here each round adds a batch of centres: the 4·b rows
/// farthest from the current centres are candidates, b of them are chosen greedily among the
/// candidates (distances between candidates included, so a batch never picks near-duplicates),
/// and the distances of all rows are then updated with one matrix product. With b = 1 this is
/// exact greedy selection; rounds are sized so that there are at most `MAX_ROUNDS`.
fn greedy_in_projection(projected: &Tensor, count: i64, rng: &mut Rng) -> Result<Vec<i64>> {
    let n = projected.size()[0];
    if count == 0 || n == 0 {
        return Err(Error::numeric("coreset", "nothing to select from"));
    }
    let count = count.min(n);
    let norms = row_norms(projected);
    let first = rng.below(n as usize) as i64;
    let mut selected = vec![first];
    let mut nearest = squared_distances_to(projected, &norms, &[first])?;
    let batch = ((count + MAX_ROUNDS - 1) / MAX_ROUNDS).max(1);
    while (selected.len() as i64) < count {
        let take = batch.min(count - selected.len() as i64);
        let candidates_count = (4 * take).min(n);
        let (candidate_distances, candidates) = nearest.topk(candidates_count, 0, true, true);
        let candidate_rows = projected.index_select(0, &candidates);
        let candidate_norms = norms.index_select(0, &candidates);
        // Greedy among the candidates: their own distances to each other, on the CPU (small).
        let mut remaining: Vec<f32> =
            Vec::<f32>::try_from(candidate_distances.to_device(Device::Cpu).contiguous())
                .map_err(torch("coreset"))?;
        let indices: Vec<i64> =
            Vec::<i64>::try_from(candidates.to_device(Device::Cpu)).map_err(torch("coreset"))?;
        let among = pairwise_squared(&candidate_rows, &candidate_norms)?;
        let mut chosen_local = Vec::with_capacity(take as usize);
        for _ in 0..take {
            let (best, best_distance) = remaining
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
            if best_distance <= 0.0 {
                break; // every row already coincides with a centre
            }
            chosen_local.push(best);
            let row = &among[best * remaining.len()..(best + 1) * remaining.len()];
            for (r, &to_new) in remaining.iter_mut().zip(row) {
                *r = r.min(to_new.max(0.0));
            }
        }
        if chosen_local.is_empty() {
            break;
        }
        let chosen: Vec<i64> = chosen_local.iter().map(|&i| indices[i]).collect();
        let update = squared_distances_to(projected, &norms, &chosen)?;
        nearest = nearest.minimum(&update);
        selected.extend(chosen);
    }
    Ok(selected)
}

/// At most this many batched rounds in [`greedy_in_projection`].
const MAX_ROUNDS: i64 = 512;

/// Squared distance of every row to the nearest of the rows `centres`.
fn squared_distances_to(rows: &Tensor, norms: &Tensor, centres: &[i64]) -> Result<Tensor> {
    let index = Tensor::from_slice(centres).to_device(rows.device());
    let centre_rows = rows.index_select(0, &index);
    let centre_norms = norms.index_select(0, &index);
    let products = rows.f_mm(&centre_rows.tr()).map_err(torch("coreset"))?;
    let squared = products * -2.0 + norms.unsqueeze(1) + centre_norms.unsqueeze(0);
    Ok(squared.amin(&[1i64][..], false).clamp_min(0.0))
}

/// Squared distances between all pairs of `rows`, row-major, on the CPU.
fn pairwise_squared(rows: &Tensor, norms: &Tensor) -> Result<Vec<f32>> {
    let products = rows.f_mm(&rows.tr()).map_err(torch("coreset"))?;
    let squared = products * -2.0 + norms.unsqueeze(1) + norms.unsqueeze(0);
    Vec::<f32>::try_from(squared.to_device(Device::Cpu).contiguous().view(-1))
        .map_err(torch("coreset"))
}

/// A standard normal sample (Box-Muller).
fn gaussian_sample(rng: &mut Rng) -> f64 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The largest distance from any row of `features` to its nearest row among `centres`: how well
/// the centres cover the rows (smaller is better).
pub fn covering_radius(features: &Tensor, centres: &[i64]) -> Result<f64> {
    let index = Tensor::from_slice(centres).to_device(features.device());
    let bank = features.index_select(0, &index).to_kind(Kind::Float);
    let distances = nearest_distances(features, &bank, &row_norms(&bank))?;
    Ok(distances.max().double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices of `count` rows of `features` chosen by greedy k-center selection in a random
    /// projection: [`partitioned_coreset`]'s selection within a single part, by count.
    fn greedy_coreset(features: &Tensor, count: usize, seed: u64) -> Result<Vec<i64>> {
        let mut rng = Rng::new(seed);
        let projected = project(features, &mut rng);
        greedy_in_projection(&projected, count as i64, &mut rng)
    }

    fn random(rows: i64, cols: i64, seed: u64) -> Tensor {
        let mut rng = Rng::new(seed);
        let values: Vec<f32> = (0..rows * cols).map(|_| gaussian_sample(&mut rng) as f32).collect();
        Tensor::from_slice(&values).view([rows, cols])
    }

    fn brute_force(queries: &Tensor, bank: &Tensor) -> Vec<f32> {
        let q: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(queries).unwrap();
        let b: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(bank).unwrap();
        q.iter()
            .map(|a| {
                b.iter()
                    .map(|r| a.iter().zip(r).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>())
                    .fold(f64::INFINITY, f64::min)
                    .sqrt() as f32
            })
            .collect()
    }

    #[test]
    fn nearest_matches_brute_force_across_chunks() {
        // More bank rows than one chunk, more queries than one chunk.
        let bank = random(BANK_CHUNK + 37, 5, 1);
        let queries = random(QUERY_CHUNK + 11, 5, 2);
        let fast = nearest_distances(&queries, &bank, &row_norms(&bank)).unwrap();
        let fast: Vec<f32> = Vec::<f32>::try_from(fast).unwrap();
        let slow = brute_force(&queries.narrow(0, 0, 60), &bank);
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() <= 1e-3 * s.max(1.0), "{f} vs {s}");
        }
        let tail = brute_force(&queries.narrow(0, QUERY_CHUNK, 11), &bank);
        for (f, s) in fast[QUERY_CHUNK as usize..].iter().zip(&tail) {
            assert!((f - s).abs() <= 1e-3 * s.max(1.0), "{f} vs {s}");
        }
    }

    #[test]
    fn a_query_in_the_bank_is_at_distance_zero() {
        // ‖a‖² − 2ab + ‖b‖² in float32 cancels to about √(ε·‖a‖²) ≈ 3e-3 here, not exactly 0.
        let bank = random(50, 8, 3);
        let distances = nearest_distances(&bank, &bank, &row_norms(&bank)).unwrap();
        assert!(distances.max().double_value(&[]) < 1e-2);
    }

    #[test]
    fn mismatched_dimensions_and_empty_bank_are_errors() {
        let bank = random(10, 4, 4);
        assert!(nearest_distances(&random(3, 5, 5), &bank, &row_norms(&bank)).is_err());
        let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
        assert!(nearest_distances(&random(3, 4, 5), &empty, &row_norms(&empty)).is_err());
    }

    #[test]
    fn coreset_covers_better_than_a_random_subset() {
        // Like real patch features: most rows on a low-dimensional set (a 4-D latent mapped into
        // 200 dimensions, plus a little noise), and a few rare patterns in small far clusters,
        // which a random subset tends to miss.
        let mut rng = Rng::new(9);
        let mixing = random(4, 200, 6);
        let mut rows: Vec<Tensor> = (0..2900)
            .map(|_| {
                random(1, 4, rng.next_u64()).mm(&mixing).view(-1)
                    + random(1, 200, rng.next_u64()).view(-1) * 0.05
            })
            .collect();
        let rare = random(20, 200, 8) * 8.0;
        for i in 0..100 {
            rows.push(rare.get(i % 20) + random(1, 200, rng.next_u64()).view(-1) * 0.05);
        }
        let features = Tensor::stack(&rows, 0);
        // 30 and 300: one centre per round; 1500: batched rounds (more centres than MAX_ROUNDS).
        for count in [30usize, 300, 1500] {
            let chosen = greedy_coreset(&features, count, 0).unwrap();
            assert_eq!(chosen.len(), count);
            let mut unique = chosen.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), count, "a centre was chosen twice");
            let mut order: Vec<i64> = (0..3000).collect();
            Rng::new(1).shuffle(&mut order);
            let random_subset = &order[..count];
            let greedy_radius = covering_radius(&features, &chosen).unwrap();
            let random_radius = covering_radius(&features, random_subset).unwrap();
            assert!(
                greedy_radius <= random_radius,
                "{count}: greedy {greedy_radius} vs random {random_radius}"
            );
            // Selecting within three parts (the rare patterns all in the last) keeps the share
            // of each and still covers better than a random subset of the same size, once each
            // part has more centres than there are rare patterns (real parts have thousands):
            // 10 centres a part cannot cover 20 far clusters.
            if count < 300 {
                continue;
            }
            let parts = [0..1000, 1000..2000, 2000..3000];
            let by_parts =
                partitioned_coreset(&features, &parts, count as f64 / 3000.0, 0).unwrap();
            assert_eq!(by_parts.len(), count);
            for part in &parts {
                let inside = by_parts.iter().filter(|i| part.contains(i)).count();
                assert_eq!(inside, count / 3, "{count}: {part:?}");
            }
            let parts_radius = covering_radius(&features, &by_parts).unwrap();
            assert!(
                parts_radius <= random_radius,
                "{count}: by parts {parts_radius} vs random {random_radius}"
            );
        }
    }

    #[test]
    fn coreset_is_deterministic_and_bounded() {
        let features = random(400, 16, 7);
        assert_eq!(
            greedy_coreset(&features, 40, 3).unwrap(),
            greedy_coreset(&features, 40, 3).unwrap()
        );
        assert_eq!(greedy_coreset(&features, 1000, 3).unwrap().len(), 400);
        assert!(greedy_coreset(&features, 0, 3).is_err());
        assert!(partitioned_coreset(&features, &[std::ops::Range { start: 0, end: 0 }], 0.5, 3)
            .is_err());
        assert_eq!(
            partitioned_coreset(&features, &[0..200, 200..400], 0.1, 3).unwrap(),
            partitioned_coreset(&features, &[0..200, 200..400], 0.1, 3).unwrap()
        );
    }
}
