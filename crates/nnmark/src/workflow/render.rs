//! How reports read: the lines a person sees, shared by every report that shows a verdict.

use std::fmt::Write;

use crate::verdict::{NullModel, Verdict};

use super::verify::CommitmentCheck;

/// Versions recorded in every machine-readable report.
pub fn versions() -> serde_json::Value {
    serde_json::json!({ "nnmark": crate::VERSION, "burn": crate::BURN_VERSION })
}

/// What a null model is, in words.
pub fn null_description(null: &NullModel) -> String {
    match null {
        NullModel::Chance { classes } => format!("chance 1/{classes}: uniformly random labels"),
        NullModel::UniformOther { classes } => format!(
            "chance 1/{}: random labels other than the source class",
            classes.saturating_sub(1)
        ),
        NullModel::FairCoin => "fair coin".into(),
        NullModel::Calibrated {
            references,
            confidence,
            ..
        } => {
            let shadows = references.iter().all(|r| r.starts_with("shadow "));
            format!(
                "calibrated on {} {}: worst one's {:.0}% upper bound, at least the analytic rate",
                references.len(),
                if shadows {
                    "shadow models stored in the key"
                } else {
                    "reference models"
                },
                confidence * 100.0
            )
        }
    }
}

/// A verdict as lines of text: matches and their interval, how a public reveal was counted,
/// the null model, the p-value and threshold, and the decision.
pub fn verdict_lines(v: &Verdict, suspect: &str) -> String {
    let null = null_description(&v.null);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{suspect}: {}/{} key items match ({:.1}%, 95% CI {:.1}-{:.1}%)",
        v.matches,
        v.queries,
        v.match_rate * 100.0,
        v.match_rate_ci95.0 * 100.0,
        v.match_rate_ci95.1 * 100.0
    );
    if let Some(r) = &v.reveal {
        let _ = writeln!(
            s,
            "counted as {} trials: {} revealed + {} skipped as spent (misses); {} items spent by {} earlier reveals, cap {} of {}; tail x{} for the reveal length the owner chose",
            r.counted,
            r.revealed,
            r.skipped_spent,
            r.spent,
            r.earlier_reveals,
            r.reveal_cap,
            r.key_items,
            r.multiplicity
        );
    }
    let _ = writeln!(
        s,
        "null match rate {:.4} ({null}); p-value {:.3e}; threshold at fpr {:e}: {} matches",
        v.null_rate, v.p_value, v.fpr, v.threshold
    );
    let _ = write!(s, "verdict: {}", decision(v.watermarked));
    s
}

/// The decision's words.
pub(crate) fn decision(watermarked: bool) -> &'static str {
    if watermarked {
        "WATERMARKED (ownership shown)"
    } else {
        "not shown to carry the watermark"
    }
}

/// The key-commitment line of a report.
pub fn commitment_line(c: Option<&CommitmentCheck>) -> String {
    match c {
        Some(c) => format!("key commitment: {}", c.report.summary()),
        None => "key commitment: none checked (give --commitment; `nnmark key commit` writes one): nothing shows when this key was made".into(),
    }
}
