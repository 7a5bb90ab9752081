//! Remote verification: query a suspect with the key's trigger items, hidden among decoys,
//! in shuffled batches, several in flight, and stop as soon as the evidence is decisive.
//!
//! Stealth: key items and decoys (ordinary in-distribution images) are shuffled together, so
//! neither the order nor the batch composition nor the timing singles out the key. Decoy answers
//! are logged, never scored.
//!
//! Decision, by default: the exact binomial test over the whole key, the test local
//! verification uses, so the same answers give the same decision whether a model is checked
//! from its weights, as ONNX or over HTTP. The run stops as soon as that decision is settled
//! (the threshold is reached, or can no longer be), which saves queries without ever changing
//! the decision.
//!
//! Optional sequential decision (`sequential`): [`nnmark::sequential::SequentialTest`], an always-valid mixture
//! likelihood-ratio test. Under the null each key item matches with probability at most p0
//! whatever came before, the ratio is a nonnegative supermartingale, and Ville's inequality
//! bounds the chance that it *ever* crosses 1/fpr by fpr. So checking after every answered
//! request, in whatever order requests complete, and stopping at the first crossing keeps the
//! false-positive rate at fpr. (A fixed-n binomial test repeated after each batch would not.)

use futures::StreamExt;
use nnmark::data::Dataset;
use nnmark::keyfile::{KeyFile, now_rfc3339};
use nnmark::scheme::{Access, Scheme};
use nnmark::sequential::{SequentialState, SequentialTest};
use nnmark::verdict::{NullModel, Verdict};
use nnmark::{Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::client::{Endpoint, SuspectInfo};

/// How a remote verification runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteVerifyOptions {
    /// False-positive rate of the decision.
    pub fpr: f64,
    /// Images per request (capped by what the protocol allows).
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Decoy images per key item (0 sends the key alone).
    pub decoy_ratio: f64,
    /// Most images to send in all, key and decoys (None: the whole key and its decoys).
    pub budget: Option<u64>,
    /// Decide with the always-valid sequential test and stop as soon as it is decisive. Off
    /// by default: it may stop at a decision the whole key would not give (it needs stronger
    /// evidence early and gives up when that looks out of reach), so the same model could get
    /// two verdicts, locally and remotely.
    pub sequential: bool,
    /// Without the sequential test: stop querying once the whole key's binomial decision is
    /// settled, that is once the matches reach its threshold, or once even matching every
    /// remaining item could not reach it. The decision is then exactly the one the whole key
    /// (and local verification of the same answers) gives. Evidence written before this option
    /// existed reads as false (the whole key was queried).
    #[serde(default)]
    pub stop_when_settled: bool,
    /// Seed of the shuffle and the decoy draw.
    pub seed: u64,
}

impl Default for RemoteVerifyOptions {
    fn default() -> Self {
        Self {
            fpr: nnmark::verdict::DEFAULT_FPR,
            batch: 8,
            concurrency: 4,
            decoy_ratio: 1.0,
            budget: None,
            sequential: false,
            stop_when_settled: true,
            seed: 0,
        }
    }
}

/// Whether an image was a key item or a decoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemKind {
    /// A trigger item of the key (scored).
    Key,
    /// An ordinary image (logged, not scored).
    Decoy,
}

/// One image of a request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// Key item or decoy.
    pub kind: ItemKind,
    /// Index in the key's trigger set, or in the decoy data set.
    pub item: usize,
    /// The class the suspect answered.
    pub answer: usize,
    /// For key items: the answer is the key's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
}

/// One request, as the evidence records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryRecord {
    /// Dispatch order (records are scored and kept in this order, whatever order the answers
    /// arrive in, so the stopping point and the decision do not depend on network timing).
    pub seq: u64,
    /// When it was sent (RFC 3339).
    pub sent_at: String,
    /// Wall time of the successful attempt.
    pub latency_ms: f64,
    /// Failed attempts before it.
    pub retries: u32,
    /// HTTP status of the answer.
    pub status: u16,
    /// SHA-256 of the request body.
    pub request_sha256: String,
    /// SHA-256 of the response body.
    pub response_sha256: String,
    /// The images, in request order.
    pub items: Vec<ItemRecord>,
}

/// The decision and how it was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// `sequential-mixture` (always-valid, Ville) or `fixed-n-binomial`.
    pub method: String,
    /// The suspect carries the watermark at the requested false-positive rate.
    pub watermarked: bool,
    /// The p-value of the method (always-valid for the sequential test).
    pub p_value: f64,
    /// Key items answered.
    pub key_answers: u64,
    /// Key items that would have been queried without early stopping.
    pub key_planned: u64,
    /// The run stopped before the planned key was used up.
    pub stopped_early: bool,
    /// The sequential test's final state.
    pub sequential_state: SequentialState,
}

/// Fixed-n binomial statistics of a run's key answers, without a decision of their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinomialSummary {
    /// Key items that matched.
    pub matches: u64,
    /// Key items answered.
    pub queries: u64,
    /// matches / queries.
    pub match_rate: f64,
    /// The null match rate p0.
    pub null_rate: f64,
    /// P(X ≥ matches), X ~ Binomial(queries, p0).
    pub p_value: f64,
    /// Requested false-positive rate.
    pub fpr: f64,
    /// Fewest matches among `queries` that the binomial test finds decisive at `fpr`.
    pub threshold: u64,
    /// 95% Clopper–Pearson interval of the match rate.
    pub match_rate_ci95: (f64, f64),
}

impl BinomialSummary {
    /// The statistics of a fixed-n verdict.
    pub fn of(v: &Verdict) -> Self {
        BinomialSummary {
            matches: v.matches,
            queries: v.queries,
            match_rate: v.match_rate,
            null_rate: v.null_rate,
            p_value: v.p_value,
            fpr: v.fpr,
            threshold: v.threshold,
            match_rate_ci95: v.match_rate_ci95,
        }
    }
}

/// Tool and versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolInfo {
    /// `nnmark`.
    pub name: String,
    /// nnmark's version.
    pub version: String,
    /// burn's version.
    pub burn: String,
}

/// Which key was used, without revealing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// SHA-256 of the key file's content.
    pub fingerprint: String,
    /// The scheme that made it.
    pub scheme: String,
    /// Trigger items the scheme allows querying.
    pub items_eligible: u64,
}

/// What a run found: everything the signed evidence file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvidenceBody {
    /// Format tag.
    pub format: String,
    /// Tool and versions.
    pub tool: ToolInfo,
    /// Start of the run (RFC 3339).
    pub started_at: String,
    /// End of the run (RFC 3339).
    pub finished_at: String,
    /// The suspect as it reported itself.
    pub suspect: SuspectInfo,
    /// The key, by fingerprint.
    pub key: KeyInfo,
    /// Run settings (seed included).
    pub settings: RemoteVerifyOptions,
    /// The null model the decision is taken against.
    pub null: NullModel,
    /// Every answered request, in the order it was scored.
    pub queries: Vec<QueryRecord>,
    /// Requests sent but dropped unanswered when the test stopped (not scored).
    pub abandoned_requests: u64,
    /// The sequential test over the scored answers.
    pub sequential: SequentialTest,
    /// Fixed-n binomial statistics over the key answers: the rule of the decision when it is
    /// not sequential, descriptive otherwise. It holds no verdict of its own: `decision` is the
    /// one place that says whether the suspect is watermarked (format 1 files called this
    /// field `verdict` and carried a second `watermarked` flag, which is ignored when read).
    #[serde(alias = "verdict")]
    pub binomial: BinomialSummary,
    /// The decision: the one `watermarked` of the run.
    pub decision: Decision,
    /// For keys with commitments (Adi et al.): the published verification key's Merkle root
    /// and the commitment of every key item queried, so a later reveal of those items (or the
    /// verification key alone) ties this run to what the owner committed to before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commitments: Option<CommitmentLog>,
    /// The key's public commitment (with its timestamp tokens) and what the run established
    /// about it, when one was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_commitment: Option<EvidenceCommitment>,
}

/// A key commitment as logged in evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceCommitment {
    /// The public commitment file's content, tokens included (re-checkable by anyone).
    pub commitment: nnmark::commit::KeyCommitment,
    /// What the run established: key matched, earliest verified timestamp.
    pub check: nnmark::commit::CommitmentReport,
}

/// Commitments of the key items a run queried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitmentLog {
    /// Merkle root of the verification key (hex).
    pub merkle_root: String,
    /// Key item index → its commitment (hex), for the items queried.
    pub items: std::collections::BTreeMap<usize, String>,
}

/// Evidence format tag.
pub const EVIDENCE_FORMAT: &str = "nnmark-evidence/2";

/// Format tags `evidence check` reads: format 1 differs only in naming the binomial statistics
/// `verdict` (with a redundant `watermarked` flag).
pub const EVIDENCE_FORMATS_READ: [&str; 2] = ["nnmark-evidence/1", EVIDENCE_FORMAT];

/// Replays the scored answers: the sequential test, the verdict and the decision they imply.
pub fn score(
    queries: &[QueryRecord],
    null: &NullModel,
    fpr: f64,
    key_planned: u64,
    sequential: bool,
) -> Result<(SequentialTest, Verdict, Decision)> {
    let p0 = null.rate()?;
    let mut test = SequentialTest::new(p0, fpr, key_planned)?;
    let mut stopped_at = None;
    for (i, q) in queries.iter().enumerate() {
        let keys: Vec<&ItemRecord> = q
            .items
            .iter()
            .filter(|it| it.kind == ItemKind::Key)
            .collect();
        let matched = keys.iter().filter(|it| it.matched == Some(true)).count() as u64;
        if keys.iter().any(|it| it.matched.is_none()) {
            return Err(Error::invalid(
                "evidence",
                format!("query {}", q.seq),
                "a key item has no match flag",
            ));
        }
        let state = test.observe(matched, keys.len() as u64)?;
        if state != SequentialState::Continue && stopped_at.is_none() {
            stopped_at = Some(i);
        }
    }
    if sequential
        && let Some(i) = stopped_at
        && i + 1 != queries.len()
    {
        return Err(Error::invalid(
            "evidence",
            format!("{} queries", queries.len()),
            format!(
                "the sequential test was decisive after query {} yet the run went on",
                i + 1
            ),
        ));
    }
    let verdict = Verdict::decide(test.matches, test.answers.max(1), null.clone(), fpr)?;
    let decision = if sequential {
        Decision {
            method: "sequential-mixture".into(),
            watermarked: test.state() == SequentialState::Watermarked,
            p_value: test.p_value(),
            key_answers: test.answers,
            key_planned,
            stopped_early: test.answers < key_planned,
            sequential_state: test.state(),
        }
    } else {
        // Stopped once settled, the answered items decide as the whole key would: matches at
        // the whole key's threshold are significant among fewer items too, and a count that
        // cannot reach it is not significant among fewer (see `settled`). The p-value is then
        // an upper bound on the whole key's: P(Binomial(planned, p0) >= matches so far).
        let whole_key = Verdict::decide(test.matches, key_planned.max(1), null.clone(), fpr)?;
        Decision {
            method: "fixed-n-binomial".into(),
            watermarked: verdict.watermarked,
            p_value: if test.answers < key_planned {
                whole_key.p_value
            } else {
                verdict.p_value
            },
            key_answers: test.answers,
            key_planned,
            stopped_early: test.answers < key_planned,
            sequential_state: test.state(),
        }
    };
    Ok((test, verdict, decision))
}

/// True once `matches` of `answers` settle the binomial decision over `planned` key items with
/// threshold `threshold`: reached already, or out of reach even if every remaining item matched.
fn settled(matches: u64, answers: u64, planned: u64, threshold: u64) -> bool {
    matches >= threshold || matches + planned.saturating_sub(answers) < threshold
}

/// One planned image.
#[derive(Debug, Clone, Copy)]
struct Slot {
    kind: ItemKind,
    item: usize,
}

/// Queries `endpoint` with the key's items hidden among decoys from `decoys` and decides.
/// `null` defaults to the key's own null ([`nnmark::watermark::key_null`]).
pub async fn verify_endpoint<E: Endpoint>(
    endpoint: &E,
    key: &KeyFile,
    scheme: &dyn Scheme,
    decoys: &Dataset,
    null: Option<NullModel>,
    opts: &RemoteVerifyOptions,
) -> Result<EvidenceBody> {
    check_request(key, scheme, decoys, opts)?;
    let triggers = key.trigger_set()?;
    let null = match null {
        Some(n) => n,
        None => nnmark::watermark::key_null(key, scheme)?,
    };
    let started_at = now_rfc3339();
    let plan = plan_queries(scheme.key_items(key)?, decoys, opts)?;
    let batch = opts.batch.min(endpoint.max_batch()).max(1);
    let batches: Vec<Vec<Slot>> = plan.slots.chunks(batch).map(<[Slot]>::to_vec).collect();
    let dispatched = std::sync::atomic::AtomicU64::new(0);
    let numel = triggers.shape.numel();
    let requests = futures::stream::iter(batches.into_iter().enumerate()).map(|(seq, slots)| {
        let dispatched = &dispatched;
        async move {
            let mut pixels = Vec::with_capacity(slots.len() * numel);
            for s in &slots {
                match s.kind {
                    ItemKind::Key => pixels.extend(triggers.query_pixels(&[s.item])),
                    ItemKind::Decoy => pixels.extend_from_slice(decoys.image(s.item)),
                }
            }
            dispatched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let sent_at = now_rfc3339();
            let result = endpoint.query(pixels, slots.len()).await;
            (seq as u64, slots, sent_at, result)
        }
    });
    // Up to `concurrency` requests in flight, their answers scored in dispatch order: with
    // early stopping, scoring in arrival order made the decision depend on timing (the same
    // seed gave 29/38 or 31/41 against one ONNX file).
    let mut requests = requests.buffered(opts.concurrency);
    let key_planned = plan.key_planned;
    let p0 = null.rate()?;
    let mut test = SequentialTest::new(p0, opts.fpr, key_planned)?;
    let settle_at = nnmark::stats::upper_threshold(key_planned, p0, opts.fpr)?;
    let mut queries = Vec::new();
    while let Some((seq, slots, sent_at, result)) = requests.next().await {
        let x = result.map_err(|e| {
            let location = endpoint.info().location;
            // The endpoint's own errors already name it: say it once.
            let problem = match e {
                Error::Remote { endpoint, problem } if endpoint == location => problem,
                other => other.to_string(),
            };
            Error::remote(
                location,
                format!("{problem} ({} requests answered before it; no answer was counted from the failed one)", queries.len()),
            )
        })?;
        let (items, matched, keys) = score_answers(&slots, &x.answers, &triggers.labels);
        queries.push(QueryRecord {
            seq,
            sent_at,
            latency_ms: x.latency_ms,
            retries: x.retries,
            status: x.status,
            request_sha256: x.request_sha256,
            response_sha256: x.response_sha256,
            items,
        });
        let state = test.observe(matched, keys)?;
        tracing::debug!(
            seq,
            answered = test.answers,
            matches = test.matches,
            ?state,
            "scored"
        );
        if opts.sequential && state != SequentialState::Continue {
            break;
        }
        if !opts.sequential
            && opts.stop_when_settled
            && settled(test.matches, test.answers, key_planned, settle_at)
        {
            break;
        }
    }
    drop(requests);
    let abandoned = dispatched.load(std::sync::atomic::Ordering::Relaxed) - queries.len() as u64;
    if test.answers == 0 {
        return Err(Error::remote(
            endpoint.info().location,
            "no key item was answered",
        ));
    }
    let (sequential, verdict, decision) =
        score(&queries, &null, opts.fpr, key_planned, opts.sequential)?;
    Ok(EvidenceBody {
        format: EVIDENCE_FORMAT.into(),
        tool: ToolInfo {
            name: "nnmark".into(),
            version: nnmark::VERSION.into(),
            burn: nnmark::BURN_VERSION.into(),
        },
        started_at,
        finished_at: now_rfc3339(),
        suspect: endpoint.info(),
        key: KeyInfo {
            fingerprint: key.fingerprint()?,
            scheme: scheme.name().into(),
            items_eligible: plan.eligible,
        },
        settings: opts.clone(),
        null,
        commitments: commitment_log(key, &queries)?,
        queries,
        abandoned_requests: abandoned,
        sequential,
        binomial: BinomialSummary::of(&verdict),
        decision,
        key_commitment: None,
    })
}

/// Refuses what remote verification cannot do before any query: a white-box scheme, another
/// scheme's key, zero batch or concurrency, a decoy ratio out of range, decoys of another
/// shape.
fn check_request(
    key: &KeyFile,
    scheme: &dyn Scheme,
    decoys: &Dataset,
    opts: &RemoteVerifyOptions,
) -> Result<()> {
    if scheme.access() == Access::WhiteBox {
        return Err(Error::invalid(
            "scheme",
            scheme.name(),
            "is white-box: it needs the suspect's weights, which a remote endpoint does not give",
        ));
    }
    nnmark::scheme::check_key_scheme(scheme, key)?;
    if opts.batch == 0 || opts.concurrency == 0 {
        return Err(Error::invalid("batch/concurrency", 0, "must be at least 1"));
    }
    if !(opts.decoy_ratio.is_finite() && (0.0..=100.0).contains(&opts.decoy_ratio)) {
        return Err(Error::invalid(
            "decoy ratio",
            opts.decoy_ratio,
            "must be between 0 and 100",
        ));
    }
    let triggers = key.trigger_set()?;
    if decoys.shape != triggers.shape {
        return Err(Error::invalid(
            "decoys",
            &decoys.name,
            format!(
                "holds {} images but the key's are {}",
                decoys.shape, triggers.shape
            ),
        ));
    }
    Ok(())
}

/// What will be sent, in order: the key items (shuffled, cut to the budget) and decoys drawn
/// from `decoys`, shuffled together, all from `opts.seed`.
struct QueryPlan {
    slots: Vec<Slot>,
    /// Key items the scheme allows querying.
    eligible: u64,
    /// Key items in the plan.
    key_planned: u64,
}

fn plan_queries(
    mut items: Vec<usize>,
    decoys: &Dataset,
    opts: &RemoteVerifyOptions,
) -> Result<QueryPlan> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xDEC0_7D0E);
    let eligible = items.len() as u64;
    items.shuffle(&mut rng);
    if let Some(budget) = opts.budget {
        let fit = (budget as f64 / (1.0 + opts.decoy_ratio)).floor() as usize;
        if fit == 0 {
            return Err(Error::invalid(
                "budget",
                budget,
                format!(
                    "leaves no key query at {} decoys per key item",
                    opts.decoy_ratio
                ),
            ));
        }
        items.truncate(fit);
    }
    let n_decoys = (items.len() as f64 * opts.decoy_ratio).round() as usize;
    if n_decoys > 0 && decoys.is_empty() {
        return Err(Error::invalid("decoys", &decoys.name, "is empty"));
    }
    let mut pool: Vec<usize> = (0..decoys.len()).collect();
    pool.shuffle(&mut rng);
    let mut slots: Vec<Slot> = items
        .iter()
        .map(|&item| Slot {
            kind: ItemKind::Key,
            item,
        })
        .chain((0..n_decoys).map(|j| Slot {
            kind: ItemKind::Decoy,
            item: pool[j % pool.len().max(1)],
        }))
        .collect();
    slots.shuffle(&mut rng);
    Ok(QueryPlan {
        slots,
        eligible,
        key_planned: items.len() as u64,
    })
}

/// One request's answers as evidence records: key items scored against their labels, decoys
/// recorded unscored. Returns the records, the key items matched and the key items answered.
fn score_answers(
    slots: &[Slot],
    answers: &[nnmark::oracle::Answer],
    labels: &[u8],
) -> (Vec<ItemRecord>, u64, u64) {
    let (mut matched, mut keys) = (0u64, 0u64);
    let items = slots
        .iter()
        .zip(answers)
        .map(|(s, a)| {
            let m = (s.kind == ItemKind::Key).then(|| labels[s.item] as usize == a.label);
            if let Some(m) = m {
                keys += 1;
                matched += m as u64;
            }
            ItemRecord {
                kind: s.kind,
                item: s.item,
                answer: a.label,
                matched: m,
            }
        })
        .collect();
    (items, matched, keys)
}

/// The published commitments of the key items queried, for keys that have commitments.
fn commitment_log(key: &KeyFile, queries: &[QueryRecord]) -> Result<Option<CommitmentLog>> {
    if key.nonces.is_none() {
        return Ok(None);
    }
    let vk = nnmark::commit::VerificationKey::from_key(key)?;
    let items = queries
        .iter()
        .flat_map(|q| &q.items)
        .filter(|it| it.kind == ItemKind::Key)
        .map(|it| (it.item, vk.commitments[it.item].clone()))
        .collect();
    Ok(Some(CommitmentLog {
        merkle_root: vk.merkle_root,
        items,
    }))
}
