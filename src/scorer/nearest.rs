//! Nearest-neighbour distances and greedy k-center coresets, as batched matrix products on
//! libtorch (‖a‖² − 2ab + ‖b‖²), in chunks so memory stays bounded whatever the bank size.
//!
//! On a CPU with bf16 units the products run in bfloat16 (about four times float32's rate
//! there): the search keeps each query's few nearest candidates by the bf16 products and then
//! measures those candidates' distances exactly in float32, so the distances returned are true
//! distances to bank rows; the coreset selection ranks its rows by bf16 products.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use tch::{Device, Kind, Tensor};

use crate::backbone::allocator::MMAP_THRESHOLD;
use crate::backbone::precision::cpu_has_bf16;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Query rows per chunk.
const QUERY_CHUNK: i64 = 1024;
/// Bank rows per chunk: QUERY_CHUNK × BANK_CHUNK floats (16 MiB) of distances at a time. Kept
/// under glibc's 32 MiB mapping threshold, so the buffer is reused instead of being mapped,
/// faulted in and unmapped for every chunk pair.
const BANK_CHUNK: i64 = 4096;
/// Bank rows per chunk of the bf16 search: the same 16 MiB of (two-byte) products.
const BANK_CHUNK_BF16: i64 = 8192;
/// Candidates per query that the bf16 search measures exactly. bf16 keeps 8 significant bits, so
/// the bf16 order of near rows can differ from the exact one; the exact nearest row has to be
/// among this many by the rounded products (tests and the measured miss rate in the README).
const BF16_CANDIDATES: i64 = 8;

fn torch(context: &'static str) -> impl Fn(tch::TchError) -> Error {
    move |e| Error::torch(context, e)
}

/// How the patch search and the coreset selection multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPrecision {
    /// float32 products throughout.
    Fp32,
    /// bfloat16 products; the search re-measures its nearest candidates in float32.
    Bf16,
}

/// 0: not set (bf16 where the CPU has bf16 units), 1: fp32, 2: bf16.
static SEARCH_PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every later search and coreset selection in this process (`None`: bf16
/// where the CPU has bf16 units, else fp32). Process-wide like libtorch's thread count: the CLI
/// sets it once from `--precision`.
pub fn set_search_precision(precision: Option<SearchPrecision>) {
    let code = match precision {
        None => 0,
        Some(SearchPrecision::Fp32) => 1,
        Some(SearchPrecision::Bf16) => 2,
    };
    SEARCH_PRECISION.store(code, Ordering::Relaxed);
}

/// The precision searches on `device` use now: bf16 only on the CPU (CUDA's float32 products are
/// fast enough, and bf16 there is untested).
pub fn search_precision(device: Device) -> SearchPrecision {
    static CPU_BF16: OnceLock<bool> = OnceLock::new();
    if device != Device::Cpu {
        return SearchPrecision::Fp32;
    }
    match SEARCH_PRECISION.load(Ordering::Relaxed) {
        1 => SearchPrecision::Fp32,
        2 => SearchPrecision::Bf16,
        _ if *CPU_BF16.get_or_init(cpu_has_bf16) => SearchPrecision::Bf16,
        _ => SearchPrecision::Fp32,
    }
}

/// A memory bank prepared for nearest-neighbour search: float32 rows and their squared norms,
/// and for bf16 search their bfloat16 copy.
pub struct SearchBank {
    rows: Tensor,
    norms: Tensor,
    /// bf16 search only: the rows with their squared norm appended, transposed ((d + 1) × m,
    /// bfloat16), so that one product with queries augmented as (−2a, 1) gives ‖b‖² − 2ab: the
    /// norm rides in the product instead of a separate addition over the whole product (which
    /// cost a fifth of the search step).
    low: Option<Tensor>,
}

impl SearchBank {
    /// Prepares `rows` (m × d, float) for searches at `precision`.
    pub fn new(rows: Tensor, precision: SearchPrecision) -> Result<SearchBank> {
        let rows = rows.to_kind(Kind::Float).contiguous();
        if rows.size().len() != 2 || rows.size()[0] == 0 {
            return Err(Error::numeric("nearest neighbour", "the memory bank is empty"));
        }
        let norms = row_norms(&rows);
        let low = (precision == SearchPrecision::Bf16).then(|| {
            Tensor::cat(&[&rows, &norms.unsqueeze(1)], 1).to_kind(Kind::BFloat16).tr().contiguous()
        });
        Ok(SearchBank { rows, norms, low })
    }

    /// The bank rows (float).
    pub fn rows(&self) -> &Tensor {
        &self.rows
    }

    /// The same bank, sharing its tensors.
    pub fn share(&self) -> SearchBank {
        SearchBank {
            rows: self.rows.shallow_clone(),
            norms: self.norms.shallow_clone(),
            low: self.low.as_ref().map(Tensor::shallow_clone),
        }
    }

    /// Euclidean distance from each row of `queries` (q × d) to its nearest bank row; q
    /// distances (float, CPU).
    pub fn nearest(&self, queries: &Tensor) -> Result<Tensor> {
        let (d, bank_d) = (queries.size()[1], self.rows.size()[1]);
        if d != bank_d {
            return Err(Error::numeric(
                "nearest neighbour",
                format!("queries have {d} values, the memory bank {bank_d}"),
            ));
        }
        let queries = queries.to_kind(Kind::Float).to_device(self.rows.device());
        let q = queries.size()[0];
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < q {
            let length = QUERY_CHUNK.min(q - start);
            let block = queries.narrow(0, start, length);
            chunks.push(match &self.low {
                Some(low) => self.nearest_by_bf16(&block, low)?,
                None => self.nearest_exact(&block)?,
            });
            start += length;
        }
        if chunks.is_empty() {
            return Ok(Tensor::zeros([0], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&chunks, 0).to_device(Device::Cpu))
    }

    /// float32 products against the whole bank.
    fn nearest_exact(&self, block: &Tensor) -> Result<Tensor> {
        let m = self.rows.size()[0];
        let block_norms = row_norms(block);
        let scaled = block * -2.0;
        let mut best: Option<Tensor> = None;
        let mut bank_start = 0;
        while bank_start < m {
            let bank_length = BANK_CHUNK.min(m - bank_start);
            let rows = self.rows.narrow(0, bank_start, bank_length);
            let norms = self.norms.narrow(0, bank_start, bank_length);
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
        let best = best.ok_or_else(|| Error::numeric("nearest neighbour", "empty bank"))?;
        Ok((best + &block_norms).clamp_min(0.0).sqrt())
    }

    /// bf16 products pick each query's [`BF16_CANDIDATES`] nearest rows; their distances are
    /// then measured exactly (the difference vectors, in float32) and the smallest kept.
    /// `low`: the bank's augmented, transposed bf16 rows (see [`SearchBank`]).
    fn nearest_by_bf16(&self, block: &Tensor, low: &Tensor) -> Result<Tensor> {
        let m = self.rows.size()[0];
        let keep = BF16_CANDIDATES.min(m);
        // (−2a, 1): ×(−2) is exact in bf16.
        let ones = Tensor::ones([block.size()[0], 1], (Kind::Float, block.device()));
        let augmented = Tensor::cat(&[&(block * -2.0), &ones], 1).to_kind(Kind::BFloat16);
        let mut best: Option<(Tensor, Tensor)> = None;
        let mut bank_start = 0;
        while bank_start < m {
            let bank_length = BANK_CHUNK_BF16.min(m - bank_start);
            let approximate = augmented
                .f_mm(&low.narrow(1, bank_start, bank_length))
                .map_err(torch("nearest neighbour"))?;
            let (values, indices) = nearest_candidates(&approximate, keep.min(bank_length));
            let indices = indices + bank_start;
            best = Some(match best {
                // The nearest `keep` of the candidates so far and this chunk's.
                Some((kept_values, kept_indices)) => {
                    let values = Tensor::cat(&[kept_values, values], 1);
                    let indices = Tensor::cat(&[kept_indices, indices], 1);
                    let (values, order) = values.topk(keep, 1, false, false);
                    (values, indices.gather(1, &order, false))
                }
                None => (values, indices),
            });
            bank_start += bank_length;
        }
        let (_, candidates) =
            best.ok_or_else(|| Error::numeric("nearest neighbour", "empty bank"))?;
        let (q, count) = (candidates.size()[0], candidates.size()[1]);
        let d = self.rows.size()[1];
        let gathered = self.rows.index_select(0, &candidates.reshape([-1])).view([q, count, d]);
        let squared =
            (gathered - block.unsqueeze(1)).square().sum_dim_intlist(2, false, Kind::Float);
        Ok(squared.amin(&[1i64][..], false).sqrt())
    }
}

/// Bank rows per candidate group in [`nearest_candidates`].
const CANDIDATE_GROUPS: i64 = 8;

/// The `keep` smallest values of each row of `distances` (q × m) and their columns, unsorted.
/// A `topk` over all m columns cost 60 % of the bf16 product that made `distances`; instead, the
/// column-wise minimum of [`CANDIDATE_GROUPS`] slices of m / groups columns (a
/// vectorised pass), the `keep` slice positions with the smallest minima, and `topk` among the
/// `keep × groups` columns at those positions. That finds the same values: each of the `keep`
/// smallest lies at a position whose minimum is at most the `keep`-th smallest value, and there
/// are at most `keep` such positions (ties aside, which `topk` breaks arbitrarily too).
fn nearest_candidates(distances: &Tensor, keep: i64) -> (Tensor, Tensor) {
    let (q, m) = (distances.size()[0], distances.size()[1]);
    let width = m / CANDIDATE_GROUPS;
    if m % CANDIDATE_GROUPS != 0 || width <= keep {
        return distances.topk(keep, 1, false, false);
    }
    let minima = distances.view([q, CANDIDATE_GROUPS, width]).amin(&[1i64][..], false);
    let (_, positions) = minima.topk(keep, 1, false, false);
    let offsets = Tensor::arange(CANDIDATE_GROUPS, (Kind::Int64, distances.device()))
        .view([1, 1, -1])
        * width;
    let columns = (positions.unsqueeze(2) + offsets).reshape([q, -1]);
    let (values, order) = distances.gather(1, &columns, false).topk(keep, 1, false, false);
    (values, columns.gather(1, &order, false))
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
    let mut selected = subset_coresets(features, parts, &[None], share, seed)?;
    Ok(selected.pop().unwrap_or_default())
}

/// [`partitioned_coreset`]s of several subsets of the same rows at once: `subsets` holds one row
/// mask per subset (`None`: every row), and each subset keeps `share` of its rows in each part.
/// The selections run in lockstep, one batch of centres per subset and round, and one matrix
/// product per round updates every subset's distances: one selection alone is memory-bound on a
/// CPU (each round streams all rows through for a product a few dozen centres tall), and in
/// lockstep the subsets share that stream (a knn fit's own coreset and its five cross-fitting
/// folds' on magnetic-tile: 9.0 s, against about 12 s one after another). Each subset draws its
/// first centres from its own copy of the generator: with one subset this is exactly
/// [`partitioned_coreset`]'s selection, and a subset's coreset does not depend on the others (up
/// to the rounding of the shared product; the fit's coreset measured byte-identical).
pub fn subset_coresets(
    features: &Tensor,
    parts: &[std::ops::Range<i64>],
    subsets: &[Option<Vec<bool>>],
    share: f64,
    seed: u64,
) -> Result<Vec<Vec<i64>>> {
    if parts.iter().all(|part| part.is_empty()) || subsets.is_empty() {
        return Err(Error::numeric("coreset", "nothing to select from"));
    }
    let rows = features.size()[0];
    if let Some(mask) = subsets.iter().flatten().find(|mask| mask.len() as i64 != rows) {
        return Err(Error::numeric(
            "coreset",
            format!("a subset's mask has {} entries for {rows} rows", mask.len()),
        ));
    }
    let mut rng = Rng::new(seed);
    let projected = project(features, &mut rng);
    let mut generators = vec![rng; subsets.len()];
    let mut selected = vec![Vec::new(); subsets.len()];
    for part in parts.iter().filter(|part| !part.is_empty()) {
        let part_rows = projected.narrow(0, part.start, part.end - part.start);
        let members: Vec<Option<Vec<i64>>> = subsets
            .iter()
            .map(|mask| {
                mask.as_ref().map(|mask| {
                    (part.start..part.end)
                        .filter(|&row| mask[row as usize])
                        .map(|row| row - part.start)
                        .collect()
                })
            })
            .collect();
        let counts: Vec<i64> = members
            .iter()
            .map(|m| {
                let size = m.as_ref().map_or(part_rows.size()[0], |m| m.len() as i64);
                ((size as f64 * share).ceil() as i64).max(1)
            })
            .collect();
        let chosen = greedy_in_lockstep(
            &part_rows,
            &members,
            &counts,
            &mut generators,
            search_precision(part_rows.device()),
        )?;
        for (all, part_chosen) in selected.iter_mut().zip(chosen) {
            all.extend(part_chosen.into_iter().map(|i| i + part.start));
        }
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

/// Greedy k-center selection, batched, of `counts[i]` rows of each subset `i` of `projected`
/// (`members`: the subset's row indices; `None`: every row), all subsets in lockstep.
///
/// Exact greedy selection is sequential: one pass over all n rows per centre, memory-bound and
/// slow on a CPU for banks of 10⁵ rows. Here each round adds a batch of centres: the 4·b rows
/// farthest from the current centres are candidates, b of them are chosen greedily among the
/// candidates (distances between candidates included, so a batch never picks near-duplicates),
/// and the distances of all rows are then updated with one matrix product (in bf16 at
/// [`SearchPrecision::Bf16`]: the farthest rows are ranked by rounded distances, while the
/// candidates' distances to each other stay float32). With b = 1 this is exact greedy selection;
/// rounds are sized so that there are at most `MAX_ROUNDS`. Rows outside a subset keep a
/// distance of −1, below every real one, so they are never its candidates.
fn greedy_in_lockstep(
    projected: &Tensor,
    members: &[Option<Vec<i64>>],
    counts: &[i64],
    generators: &mut [Rng],
    precision: SearchPrecision,
) -> Result<Vec<Vec<i64>>> {
    struct Selection {
        count: i64,
        batch: i64,
        selected: Vec<i64>,
        nearest: Tensor,
        exhausted: bool,
    }
    let n = projected.size()[0];
    if n == 0 {
        return Err(Error::numeric("coreset", "nothing to select from"));
    }
    // Centred, distances are unchanged and the products' terms smaller (less cancellation).
    let projected = projected - projected.mean_dim(&[0i64][..], true, Kind::Float);
    let norms = row_norms(&projected);
    let updates = DistanceUpdates::new(&projected, &norms, precision);
    let sizes: Vec<i64> =
        members.iter().map(|m| m.as_ref().map_or(n, |m| m.len() as i64)).collect();
    let firsts: Vec<Option<i64>> = members
        .iter()
        .zip(&sizes)
        .zip(generators.iter_mut())
        .map(|((subset, &size), rng)| {
            (size > 0).then(|| {
                let pick = rng.below(size as usize);
                subset.as_ref().map_or(pick as i64, |rows| rows[pick])
            })
        })
        .collect();
    let first_groups: Vec<Vec<i64>> = firsts.iter().flatten().map(|&first| vec![first]).collect();
    let mut first_distances = updates.to_nearest_of_groups(&first_groups)?.into_iter();
    let mut selections: Vec<Option<Selection>> = Vec::with_capacity(members.len());
    for (index, ((subset, &size), first)) in members.iter().zip(&sizes).zip(&firsts).enumerate() {
        let Some(first) = first else {
            selections.push(None);
            continue;
        };
        let mut nearest = first_distances.next().expect("one first group per live subset");
        if let Some(rows) = subset {
            let outside = Tensor::ones([n], (Kind::Bool, projected.device())).index_fill(
                0,
                &Tensor::from_slice(rows).to_device(projected.device()),
                0,
            );
            nearest = nearest.masked_fill(&outside, -1.0);
        }
        let count = counts[index].min(size);
        if count <= 0 {
            return Err(Error::numeric("coreset", "nothing to select from"));
        }
        selections.push(Some(Selection {
            count,
            batch: ((count + MAX_ROUNDS - 1) / MAX_ROUNDS).max(1),
            selected: vec![*first],
            nearest,
            exhausted: false,
        }));
    }
    loop {
        let mut groups = Vec::new();
        let mut owners = Vec::new();
        for (owner, selection) in selections.iter_mut().enumerate() {
            let Some(selection) = selection.as_mut() else { continue };
            let missing = selection.count - selection.selected.len() as i64;
            if selection.exhausted || missing <= 0 {
                continue;
            }
            let chosen =
                next_centres(&projected, &norms, &selection.nearest, selection.batch.min(missing))?;
            if chosen.is_empty() {
                selection.exhausted = true; // every row already coincides with a centre
                continue;
            }
            groups.push(chosen);
            owners.push(owner);
        }
        if groups.is_empty() {
            break;
        }
        for ((owner, chosen), distances) in
            owners.into_iter().zip(groups.iter()).zip(updates.to_nearest_of_groups(&groups)?)
        {
            let selection = selections[owner].as_mut().expect("owners are live selections");
            selection.nearest = selection.nearest.minimum(&distances);
            selection.selected.extend(chosen);
        }
    }
    Ok(selections.into_iter().map(|s| s.map(|s| s.selected).unwrap_or_default()).collect())
}

/// The next `take` centres of one selection: among the 4·`take` rows farthest from its centres
/// (`nearest`: squared distances), chosen greedily by their float32 distances to each other.
fn next_centres(
    projected: &Tensor,
    norms: &Tensor,
    nearest: &Tensor,
    take: i64,
) -> Result<Vec<i64>> {
    let candidates_count = (4 * take).min(nearest.size()[0]);
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
    let mut chosen = Vec::with_capacity(take as usize);
    for _ in 0..take {
        let (best, best_distance) = remaining
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc });
        if best_distance <= 0.0 {
            break; // every row already coincides with a centre
        }
        chosen.push(indices[best]);
        let row = &among[best * remaining.len()..(best + 1) * remaining.len()];
        for (r, &to_new) in remaining.iter_mut().zip(row) {
            *r = r.min(to_new.max(0.0));
        }
    }
    Ok(chosen)
}

/// At most this many batched rounds in [`greedy_in_lockstep`].
const MAX_ROUNDS: i64 = 512;

/// Bytes of products per block of a distance update: half glibc's mapping threshold (see
/// [`BANK_CHUNK`]) when several subsets' centres share one product.
const UPDATE_BLOCK_BYTES: i64 = MMAP_THRESHOLD as i64 / 2;

/// Squared distances of all rows to their nearest centre, one matrix product per batch of
/// centres: centres augmented as (−2c, ‖c‖²) times rows augmented with a 1 give ‖c‖² − 2rc, whose
/// minimum over the centres plus ‖r‖² is the squared distance. Centres × rows (not rows ×
/// centres) so that the minimum runs across the product's rows, contiguous and vectorised; a
/// minimum along rows of a few dozen values took twice the product's time.
struct DistanceUpdates<'a> {
    /// Rows with a trailing 1, transposed ((d + 1) × n), at the product precision.
    augmented: Tensor,
    rows: &'a Tensor,
    norms: &'a Tensor,
    kind: Kind,
}

impl<'a> DistanceUpdates<'a> {
    fn new(rows: &'a Tensor, norms: &'a Tensor, precision: SearchPrecision) -> Self {
        let kind = match precision {
            SearchPrecision::Fp32 => Kind::Float,
            SearchPrecision::Bf16 => Kind::BFloat16,
        };
        let ones = Tensor::ones([rows.size()[0], 1], (Kind::Float, rows.device()));
        let augmented = Tensor::cat(&[rows, &ones], 1).to_kind(kind).tr().contiguous();
        DistanceUpdates { augmented, rows, norms, kind }
    }

    /// For each (non-empty) group of centres, the squared distance of every row to the group's
    /// nearest centre (float), from one product for all groups (in column blocks of at most
    /// [`UPDATE_BLOCK_BYTES`]); a group's centres themselves at exactly 0 (rounded bf16 products
    /// would leave them a little above, and a dense part could then offer a centre again).
    fn to_nearest_of_groups(&self, groups: &[Vec<i64>]) -> Result<Vec<Tensor>> {
        let device = self.rows.device();
        if groups.iter().any(Vec::is_empty) {
            return Err(Error::numeric("coreset", "a distance update without centres"));
        }
        let all: Vec<i64> = groups.concat();
        let index = Tensor::from_slice(&all).to_device(device);
        let centre_rows = self.rows.index_select(0, &index);
        let centre_norms = self.norms.index_select(0, &index).unsqueeze(1);
        let centres = Tensor::cat(&[centre_rows * -2.0, centre_norms], 1).to_kind(self.kind);
        let n = self.augmented.size()[1];
        let bytes = if self.kind == Kind::BFloat16 { 2 } else { 4 };
        let block = (UPDATE_BLOCK_BYTES / (all.len() as i64 * bytes)).max(1).min(n);
        let mut per_group: Vec<Vec<Tensor>> = groups.iter().map(|_| Vec::new()).collect();
        let mut column = 0;
        while column < n {
            let width = block.min(n - column);
            let products =
                centres.f_mm(&self.augmented.narrow(1, column, width)).map_err(torch("coreset"))?;
            let mut start = 0;
            for (group, pieces) in groups.iter().zip(per_group.iter_mut()) {
                let length = group.len() as i64;
                pieces.push(products.narrow(0, start, length).amin(&[0i64][..], false));
                start += length;
            }
            column += width;
        }
        groups
            .iter()
            .zip(per_group)
            .map(|(group, pieces)| {
                let nearest = Tensor::cat(&pieces, 0).to_kind(Kind::Float);
                let own = Tensor::from_slice(group).to_device(device);
                Ok((nearest + self.norms).clamp_min(0.0).index_fill(0, &own, 0.0))
            })
            .collect()
    }
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
    let bank = SearchBank::new(features.index_select(0, &index), SearchPrecision::Fp32)?;
    let distances = bank.nearest(features)?;
    Ok(distances.max().double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices of `count` rows of `features` chosen by greedy k-center selection in a random
    /// projection: [`partitioned_coreset`]'s selection within a single part, by count.
    fn greedy_coreset(features: &Tensor, count: usize, seed: u64) -> Result<Vec<i64>> {
        greedy_coreset_at(search_precision(features.device()), features, count, seed)
    }

    fn greedy_coreset_at(
        precision: SearchPrecision,
        features: &Tensor,
        count: usize,
        seed: u64,
    ) -> Result<Vec<i64>> {
        let mut rng = Rng::new(seed);
        let projected = project(features, &mut rng);
        let mut chosen =
            greedy_in_lockstep(&projected, &[None], &[count as i64], &mut [rng], precision)?;
        Ok(chosen.pop().unwrap_or_default())
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

    const PRECISIONS: [SearchPrecision; 2] = [SearchPrecision::Fp32, SearchPrecision::Bf16];

    fn nearest_at(precision: SearchPrecision, queries: &Tensor, bank: &Tensor) -> Vec<f32> {
        let bank = SearchBank::new(bank.shallow_clone(), precision).unwrap();
        Vec::<f32>::try_from(bank.nearest(queries).unwrap()).unwrap()
    }

    #[test]
    fn nearest_matches_brute_force_across_chunks() {
        // More bank rows than one chunk at either precision, more queries than one chunk.
        let bank = random(BANK_CHUNK_BF16 + 37, 5, 1);
        let queries = random(QUERY_CHUNK + 11, 5, 2);
        let head = brute_force(&queries.narrow(0, 0, 60), &bank);
        let tail = brute_force(&queries.narrow(0, QUERY_CHUNK, 11), &bank);
        for precision in PRECISIONS {
            let fast = nearest_at(precision, &queries, &bank);
            assert_eq!(fast.len(), (QUERY_CHUNK + 11) as usize);
            let pairs =
                fast.iter().zip(&head).chain(fast[QUERY_CHUNK as usize..].iter().zip(&tail));
            for (f, s) in pairs {
                assert!((f - s).abs() <= 1e-3 * s.max(1.0), "{precision:?}: {f} vs {s}");
            }
        }
    }

    #[test]
    fn bf16_search_finds_the_exact_nearest_row_of_patch_like_features() {
        // Rows like patch features (non-negative, a common offset, many dimensions, near
        // neighbours much closer than the rows' norms): the case where bf16 products alone would
        // misorder neighbours. The re-measured candidates give the float32 distances.
        let offset = random(1, 300, 10).abs() * 2.0;
        let bank = (random(5000, 300, 11).abs() * 0.3 + &offset).relu();
        let queries = bank.narrow(0, 0, 700) + random(700, 300, 12) * 0.02;
        let exact = nearest_at(SearchPrecision::Fp32, &queries, &bank);
        let bf16 = nearest_at(SearchPrecision::Bf16, &queries, &bank);
        let reference = brute_force(&queries.narrow(0, 0, 200), &bank);
        for ((b, e), r) in bf16.iter().zip(&exact).zip(&reference) {
            // Measured as differences, the bf16 search's distances are the brute force's; the
            // float32 products lose about 0.3 % to cancellation on such rows.
            assert!((b - r).abs() <= 1e-5 * r.max(1.0), "bf16 {b} vs {r}");
            assert!((e - r).abs() <= 1e-2 * r.max(1.0), "fp32 {e} vs {r}");
        }
    }

    #[test]
    fn grouped_candidates_are_the_smallest_values() {
        for (m, keep) in [(8192, 8), (4096, 3), (1000, 8), (24, 8)] {
            let distances = random(50, m, m as u64);
            let (values, columns) = nearest_candidates(&distances, keep);
            let (expected, _) = distances.topk(keep, 1, false, true);
            let (sorted, order) = values.sort(1, false);
            assert!(sorted.equal(&expected), "{m} columns, {keep} kept");
            // The columns hold those values.
            let at = distances.gather(1, &columns.gather(1, &order, false), false);
            assert!(at.equal(&sorted));
        }
    }

    #[test]
    fn a_query_in_the_bank_is_at_distance_zero() {
        // ‖a‖² − 2ab + ‖b‖² in float32 cancels to about √(ε·‖a‖²) ≈ 3e-3 here, not exactly 0;
        // the bf16 search measures its candidates as differences, so it gives exactly 0.
        let bank = random(50, 8, 3);
        let exact = nearest_at(SearchPrecision::Fp32, &bank, &bank);
        assert!(exact.iter().all(|&d| d < 1e-2), "{exact:?}");
        let bf16 = nearest_at(SearchPrecision::Bf16, &bank, &bank);
        assert!(bf16.iter().all(|&d| d == 0.0), "{bf16:?}");
    }

    #[test]
    fn mismatched_dimensions_and_empty_bank_are_errors() {
        for precision in PRECISIONS {
            let bank = SearchBank::new(random(10, 4, 4), precision).unwrap();
            assert!(bank.nearest(&random(3, 5, 5)).is_err());
            let empty = Tensor::zeros([0, 4], (Kind::Float, Device::Cpu));
            assert!(SearchBank::new(empty, precision).is_err());
        }
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
        for (count, precision) in
            [30usize, 300, 1500].into_iter().flat_map(|c| PRECISIONS.map(|p| (c, p)))
        {
            let chosen = greedy_coreset_at(precision, &features, count, 0).unwrap();
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
                "{count} {precision:?}: greedy {greedy_radius} vs random {random_radius}"
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
    fn subset_coresets_stay_inside_their_subsets_and_cover_them() {
        let mut rng = Rng::new(4);
        let mixing = random(4, 64, 5);
        let rows: Vec<Tensor> = (0..2000)
            .map(|_| {
                random(1, 4, rng.next_u64()).mm(&mixing).view(-1)
                    + random(1, 64, rng.next_u64()).view(-1) * 0.05
            })
            .collect();
        let features = Tensor::stack(&rows, 0);
        let every_third_skipped: Vec<bool> = (0..2000).map(|i| i % 3 != 0).collect();
        let first_half: Vec<bool> = (0..2000).map(|i| i < 1000).collect();
        let subsets = [None, Some(every_third_skipped), Some(first_half)];
        let parts = [0..1200, 1200..2000];
        let chosen = subset_coresets(&features, &parts, &subsets, 0.1, 2).unwrap();
        assert_eq!(chosen.len(), 3);
        for (subset, chosen) in subsets.iter().zip(&chosen) {
            let member = |row: i64| subset.as_ref().is_none_or(|mask| mask[row as usize]);
            assert!(chosen.iter().all(|&row| member(row)), "a centre outside its subset");
            let mut unique = chosen.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), chosen.len(), "a centre was chosen twice");
            // The share of each part's members.
            for part in &parts {
                let members = part.clone().filter(|&row| member(row)).count();
                let inside = chosen.iter().filter(|row| part.contains(row)).count();
                assert_eq!(inside, (members as f64 * 0.1).ceil() as usize, "{part:?}");
            }
            // Its own rows are covered better than by a random pick of as many of them.
            let own: Vec<i64> = (0..2000).filter(|&row| member(row)).collect();
            let own_features = features.index_select(0, &Tensor::from_slice(&own));
            let position: std::collections::HashMap<i64, i64> =
                own.iter().enumerate().map(|(i, &row)| (row, i as i64)).collect();
            let local: Vec<i64> = chosen.iter().map(|row| position[row]).collect();
            let mut order: Vec<i64> = (0..own.len() as i64).collect();
            Rng::new(1).shuffle(&mut order);
            let greedy = covering_radius(&own_features, &local).unwrap();
            let random_pick = covering_radius(&own_features, &order[..local.len()]).unwrap();
            assert!(greedy <= random_pick, "greedy {greedy} vs random {random_pick}");
        }
        // A mask of the wrong length is refused.
        assert!(subset_coresets(&features, &parts, &[Some(vec![true; 10])], 0.1, 2).is_err());
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
