//! Decoding loops that reproduce transformers' `generate`: greedy, beam search (the vectorised
//! `_beam_search` of transformers 5, scores in f32 like torch) and sampling.
//!
//! Plain greedy decoding stays on the device: the next ids are picked where the logits are
//! (first maximum on ties, as torch), fed straight back, and only the ids come to the host for
//! the EOS check. The other loops read (rows, vocab) logits on the host, apply the logits
//! processors transformers would apply (repetition penalty, min new tokens) and pick tokens
//! there. The language model behind them is abstracted as a [`Decoder`].

use candle_core::{D, DType, Device, Result, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as CandleSampling};

use super::{EarlyStopping, GenerationParams};

/// A language model positioned after its prompt, able to take one token per row.
pub trait Decoder {
    /// Feeds one id per row, a (rows,) u32 tensor on [`Decoder::device`]; returns next-token
    /// logits (rows, vocab) in the model dtype.
    fn step(&mut self, ids: &Tensor) -> Result<Tensor>;
    /// Keeps (and duplicates) the rows named by `rows`, in that order.
    fn select_rows(&mut self, rows: &[u32]) -> Result<()>;
    /// Beam reordering: like [`Decoder::select_rows`], but `rows` only permutes rows within
    /// each batch item's group of beams, so state shared by those beams need not move.
    fn reorder_beams(&mut self, rows: &[u32]) -> Result<()> {
        self.select_rows(rows)
    }
    fn device(&self) -> Device;
}

/// What the loops need to know about the prompt, per batch item.
pub struct Prompt {
    /// Logits after the prompt, (batch, vocab) in the model dtype.
    pub first_logits: Tensor,
    /// The ids transformers' processors see as `input_ids` before generation, one list per batch
    /// item: the whole prompt (image tokens included) for OPT, the decoder start id for T5.
    pub history: Vec<Vec<u32>>,
    pub eos: Vec<u32>,
}

fn rows_to_host(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    logits.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// Greedy choice of each row of `logits` (rows, vocab): the index of the first maximum, as
/// `torch.argmax`, on every device. candle's CPU argmax keeps the first maximum; its CUDA
/// argmax does not promise which of equal maxima it returns, so there the choice is made as
/// "the smallest index holding the row maximum". `index` is `0..vocab` as u32 on the logits'
/// device (made once per caption by the caller).
pub fn greedy_ids(logits: &Tensor, index: &Tensor) -> Result<Tensor> {
    if logits.device().is_cpu() {
        return logits.argmax(D::Minus1);
    }
    first_max_index(logits, index)
}

/// The smallest index holding each row's maximum, with tensor ops only (stays on the device).
pub fn first_max_index(logits: &Tensor, index: &Tensor) -> Result<Tensor> {
    let (rows, vocab) = logits.dims2()?;
    let is_max = logits.broadcast_eq(&logits.max_keepdim(D::Minus1)?)?;
    let past_end = Tensor::new(&[vocab as u32], logits.device())?;
    is_max
        .where_cond(
            &index.broadcast_as((rows, vocab))?,
            &past_end.broadcast_as((rows, vocab))?,
        )?
        .min(D::Minus1)
}

/// RepetitionPenaltyLogitsProcessor: every id already in the sequence is made less likely.
fn apply_repetition_penalty(scores: &mut [f32], history: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let penalty = penalty as f32;
    let mut seen = std::collections::HashSet::new();
    for &id in history {
        let id = id as usize;
        if id < scores.len() && seen.insert(id) {
            let s = scores[id];
            scores[id] = if s < 0.0 { s * penalty } else { s / penalty };
        }
    }
}

/// MinNewTokensLengthLogitsProcessor: no EOS before `min_new_tokens` new tokens.
fn apply_min_new_tokens(
    scores: &mut [f32],
    generated: usize,
    params: &GenerationParams,
    eos: &[u32],
) {
    if generated < params.min_new_tokens {
        for &e in eos {
            if let Some(s) = scores.get_mut(e as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
}

fn argmax(scores: &[f32]) -> u32 {
    // First maximum, as torch.argmax.
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best as u32
}

fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = sum.ln() + max;
    scores.iter_mut().for_each(|s| *s -= log_sum);
}

/// Greedy search or sampling over `batch` rows. Returns the new ids of each row (EOS included).
pub fn generate_greedy_or_sample(
    decoder: &mut dyn Decoder,
    prompt: Prompt,
    params: &GenerationParams,
) -> Result<Vec<Vec<u32>>> {
    let batch = prompt.history.len();
    let eos: &[u32] = if params.ignore_eos { &[] } else { &prompt.eos };
    let mut samplers: Option<Vec<LogitsProcessor>> = params.sampling.as_ref().map(|s| {
        (0..batch)
            .map(|row| {
                let sampling = match (s.top_k, s.top_p < 1.0) {
                    _ if s.temperature <= 0.0 => CandleSampling::ArgMax,
                    (0, false) => CandleSampling::All {
                        temperature: s.temperature,
                    },
                    (k, false) => CandleSampling::TopK {
                        k,
                        temperature: s.temperature,
                    },
                    (0, true) => CandleSampling::TopP {
                        p: s.top_p,
                        temperature: s.temperature,
                    },
                    (k, true) => CandleSampling::TopKThenTopP {
                        k,
                        p: s.top_p,
                        temperature: s.temperature,
                    },
                };
                LogitsProcessor::from_sampling(s.seed.wrapping_add(row as u64), sampling)
            })
            .collect()
    });
    let mut history = prompt.history;
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut finished = vec![false; batch];
    let mut logits = prompt.first_logits;
    let device = decoder.device();
    let mut index: Option<Tensor> = None;
    for step in 0..params.max_new_tokens {
        // Plain greedy needs no logits processor: pick on the device; the picked ids are fed
        // back from there and come to the host only for the EOS check.
        let plain = samplers.is_none()
            && params.repetition_penalty == 1.0
            && (step >= params.min_new_tokens || eos.is_empty());
        let (chosen, on_device): (Vec<u32>, Option<Tensor>) = if plain {
            let index = match &index {
                Some(index) => index,
                None => index.insert(Tensor::arange(0u32, logits.dim(1)? as u32, &device)?),
            };
            let ids = greedy_ids(&logits, index)?;
            (ids.to_vec1::<u32>()?, Some(ids))
        } else {
            let mut rows = rows_to_host(&logits)?;
            let mut ids = Vec::with_capacity(batch);
            for (row, scores) in rows.iter_mut().enumerate() {
                apply_repetition_penalty(scores, &history[row], params.repetition_penalty);
                apply_min_new_tokens(scores, step, params, eos);
                ids.push(match samplers.as_mut() {
                    Some(s) => s[row].sample(&Tensor::new(scores.as_slice(), &Device::Cpu)?)?,
                    None => argmax(scores),
                });
            }
            (ids, None)
        };
        let mut next = Vec::with_capacity(batch);
        for (row, &id) in chosen.iter().enumerate() {
            if finished[row] {
                // Finished rows keep running in the batch; what they produce is discarded.
                next.push(eos.first().copied().unwrap_or(0));
                continue;
            }
            out[row].push(id);
            history[row].push(id);
            if eos.contains(&id) {
                finished[row] = true;
            }
            next.push(id);
        }
        if finished.iter().all(|&f| f) || step + 1 == params.max_new_tokens {
            break;
        }
        // Rows are independent, so a finished row may as well be fed its own pick: the
        // device-side ids go back unchanged.
        let ids = match on_device {
            Some(ids) => ids,
            None => Tensor::new(next.as_slice(), &device)?,
        };
        logits = decoder.step(&ids)?;
    }
    Ok(out)
}

/// One batch item's beams, as the tensors of transformers' `_beam_search` hold them.
struct BeamItem {
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    finished: Vec<Vec<u32>>,
    finished_scores: Vec<f32>,
    is_finished: Vec<bool>,
    heuristic_unsatisfied: bool,
}

/// Indices of the `k` largest values, descending; ties keep the lower index first. Selects the
/// `k` first (linear time) and sorts only those, instead of sorting all `num_beams * vocab`.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    // A total order: -0.0 counts as 0.0 (they tie, as in torch), NaN above everything.
    let key = |i: usize| values[i] + 0.0;
    let order = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < idx.len() {
        if k == 0 {
            return Vec::new();
        }
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

/// Beam search, `num_beams` per batch item. `prompt_len` is the decoder-side prompt length
/// transformers counts (`decoder_prompt_len`): the full prompt for OPT, 1 for T5.
pub fn generate_beam(
    decoder: &mut dyn Decoder,
    prompt: Prompt,
    params: &GenerationParams,
    prompt_len: usize,
) -> Result<Vec<Vec<u32>>> {
    let k = params.num_beams;
    let batch = prompt.history.len();
    let eos: &[u32] = if params.ignore_eos { &[] } else { &prompt.eos };
    let keep = 2usize.max(1 + eos.len()) * k;
    let max_length = prompt_len + params.max_new_tokens;
    let lp = params.length_penalty as f32;

    // Expand each item to k beams (transformers expands before the prefill; the rows are equal).
    let expand: Vec<u32> = (0..batch)
        .flat_map(|b| std::iter::repeat_n(b as u32, k))
        .collect();
    decoder.select_rows(&expand)?;
    let mut logits = prompt.first_logits.index_select(
        &Tensor::new(expand.as_slice(), prompt.first_logits.device())?,
        0,
    )?;
    let mut items: Vec<BeamItem> = prompt
        .history
        .iter()
        .map(|_| BeamItem {
            running: vec![Vec::new(); k],
            running_scores: (0..k).map(|i| if i == 0 { 0.0 } else { -1e9 }).collect(),
            finished: vec![Vec::new(); k],
            finished_scores: vec![-1e9; k],
            is_finished: vec![false; k],
            heuristic_unsatisfied: true,
        })
        .collect();
    let mut cur_len = prompt_len;
    loop {
        let rows = rows_to_host(&logits)?;
        let vocab = rows[0].len();
        let mut all_hit = true;
        let mut reorder = Vec::with_capacity(batch * k);
        let mut next_ids = Vec::with_capacity(batch * k);
        for (b, item) in items.iter_mut().enumerate() {
            let mut flat = Vec::with_capacity(k * vocab);
            for beam in 0..k {
                let mut scores = rows[b * k + beam].clone();
                log_softmax(&mut scores);
                let mut hist = prompt.history[b].clone();
                hist.extend_from_slice(&item.running[beam]);
                apply_repetition_penalty(&mut scores, &hist, params.repetition_penalty);
                apply_min_new_tokens(&mut scores, item.running[beam].len(), params, eos);
                let base = item.running_scores[beam];
                flat.extend(scores.iter().map(|s| s + base));
            }
            let top = top_k(&flat, keep);
            let cand: Vec<(usize, u32, f32, bool)> = top
                .iter()
                .map(|&i| {
                    let token = (i % vocab) as u32;
                    let hit = eos.contains(&token) || cur_len + 1 >= max_length;
                    (i / vocab, token, flat[i], hit)
                })
                .collect();
            all_hit &= cand.iter().all(|c| c.3);

            // Running beams for the next step: best non-finished continuations.
            let running_scores: Vec<f32> = cand
                .iter()
                .map(|c| c.2 + if c.3 { -1e9 } else { 0.0 })
                .collect();
            let next = top_k(&running_scores, k);
            let new_running: Vec<Vec<u32>> = next
                .iter()
                .map(|&j| {
                    let mut s = item.running[cand[j].0].clone();
                    s.push(cand[j].1);
                    s
                })
                .collect();

            // Finished hypotheses: only the top-k candidates that hit a stop may enter.
            let all_full = item.is_finished.iter().all(|&f| f)
                && params.early_stopping == EarlyStopping::Always;
            let denom = ((cur_len + 1 - prompt_len) as f32).powf(lp);
            let mut merged_scores = item.finished_scores.clone();
            let mut merged_seqs = item.finished.clone();
            let mut merged_done = item.is_finished.clone();
            for (rank, c) in cand.iter().enumerate() {
                let just_finished = c.3 && rank < k;
                let mut s = c.2 / denom;
                if all_full {
                    s += -1e9;
                }
                if !item.heuristic_unsatisfied {
                    s += -1e9;
                }
                if !just_finished {
                    s += -1e9;
                }
                let mut seq = item.running[c.0].clone();
                seq.push(c.1);
                merged_scores.push(s);
                merged_seqs.push(seq);
                merged_done.push(just_finished);
            }
            let best = top_k(&merged_scores, k);
            item.finished = best.iter().map(|&j| merged_seqs[j].clone()).collect();
            item.finished_scores = best.iter().map(|&j| merged_scores[j]).collect();
            item.is_finished = best.iter().map(|&j| merged_done[j]).collect();

            for &j in &next {
                reorder.push((b * k + cand[j].0) as u32);
                next_ids.push(cand[j].1);
            }
            item.running = new_running;
            item.running_scores = next.iter().map(|&j| running_scores[j]).collect();
        }
        cur_len += 1;
        for item in items.iter_mut() {
            let best_len = if params.early_stopping == EarlyStopping::Never && lp > 0.0 {
                max_length - prompt_len
            } else {
                cur_len - prompt_len
            };
            let best_possible = item.running_scores[0] / (best_len as f32).powf(lp);
            let min_finished = item
                .finished_scores
                .iter()
                .cloned()
                .fold(f32::INFINITY, f32::min);
            let can_improve = item
                .is_finished
                .iter()
                .any(|&f| best_possible > if f { min_finished } else { -1e9 });
            item.heuristic_unsatisfied &= can_improve;
        }
        let improvement_possible = items.iter().any(|i| i.heuristic_unsatisfied);
        let all_done = items.iter().all(|i| i.is_finished.iter().all(|&f| f));
        let open_beam = !(all_done && params.early_stopping == EarlyStopping::Always);
        if !(improvement_possible && open_beam && !all_hit) {
            break;
        }
        decoder.reorder_beams(&reorder)?;
        logits = decoder.step(&Tensor::new(next_ids.as_slice(), &decoder.device())?)?;
    }
    Ok(items
        .into_iter()
        .map(|mut i| i.finished.swap_remove(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut s = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut s, &[0, 1, 1], 2.0);
        assert_eq!(s, vec![1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_k_is_descending_and_stable() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 3), vec![1, 2, 3]);
        assert_eq!(top_k(&[0.0, -0.0, 5.0, 0.0], 3), vec![2, 0, 1]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
        assert!(top_k(&[1.0], 0).is_empty());
    }

    /// The selection agrees with a full sort on random values with many ties.
    #[test]
    fn top_k_matches_full_sort() {
        let values: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 97) as f32 - 48.0)
            .collect();
        let mut sorted: Vec<usize> = (0..values.len()).collect();
        sorted.sort_by(|&a, &b| values[b].partial_cmp(&values[a]).unwrap().then(a.cmp(&b)));
        for k in [1, 2, 6, 10, 97, 4999] {
            assert_eq!(top_k(&values, k), sorted[..k], "k = {k}");
        }
    }

    /// Greedy ties go to the lowest index, on the host path and on the device path (the
    /// tensor-only version CUDA uses is checked here on the CPU; the GPU check runs it there).
    #[test]
    fn greedy_ties_pick_the_lowest_index() {
        let logits = Tensor::new(
            &[
                [0.5f32, 2.0, 1.0, 2.0, 2.0],
                [3.0, 3.0, 3.0, 3.0, 3.0],
                [-1.0, -2.0, -1.0, -3.0, -0.5],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let index = Tensor::arange(0u32, 5, &Device::Cpu).unwrap();
        let want = vec![1u32, 0, 4];
        assert_eq!(
            first_max_index(&logits, &index)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap(),
            want
        );
        assert_eq!(
            greedy_ids(&logits, &index)
                .unwrap()
                .to_vec1::<u32>()
                .unwrap(),
            want
        );
        for dtype in [DType::F16, DType::BF16] {
            let half = logits.to_dtype(dtype).unwrap();
            assert_eq!(
                first_max_index(&half, &index)
                    .unwrap()
                    .to_vec1::<u32>()
                    .unwrap(),
                want
            );
        }
        let rows = rows_to_host(&logits).unwrap();
        assert_eq!(rows.iter().map(|r| argmax(r)).collect::<Vec<_>>(), want);
    }
}
