//! Describing a key file without revealing it: scheme, model, provenance, spending and
//! commitment; trigger images only when asked to write them.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::commit::KeyCommitment;
use crate::error::Result;
use crate::keyfile::KeyFile;

use super::render::versions;

/// What `key inspect` shows.
pub struct KeySummary {
    /// The key file.
    pub path: PathBuf,
    /// The key.
    pub key: KeyFile,
    /// SHA-256 of the key file.
    pub fingerprint: String,
    /// Where trigger images were written, when asked.
    pub exported_triggers: Option<PathBuf>,
}

/// Loads (and so integrity-checks) a key; writes its trigger images as PNG files into
/// `export_triggers` when given (they are secret).
pub fn inspect_key(path: &Path, export_triggers: Option<&Path>) -> Result<KeySummary> {
    let key = KeyFile::load(path)?;
    if let (Some(dir), Some(t)) = (export_triggers, &key.triggers) {
        crate::data::folder::write_pngs(dir, t)?;
    }
    Ok(KeySummary {
        path: path.to_path_buf(),
        fingerprint: key.fingerprint()?,
        key,
        exported_triggers: export_triggers.map(Path::to_path_buf),
    })
}

impl KeySummary {
    fn items(&self) -> usize {
        self.key.triggers.as_ref().map_or(0, |t| t.len())
    }

    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        let (key, m) = (&self.key, &self.key.meta);
        json!({"versions": versions(), "key": self.path, "fingerprint": self.fingerprint,
               "scheme": m.scheme, "params": m.params, "format_version": m.version,
               "architecture": m.spec.architecture, "input": m.spec.input,
               "classes": m.spec.num_classes, "model_sha256": m.model_sha256,
               "dataset": m.dataset, "embed_mode": m.embed_mode, "seed": m.seed,
               "nnmark_version": m.nnmark_version, "created": m.created,
               "trigger_items": self.items(), "spent": m.spent.len(), "reveals": m.reveals,
               "commitment": KeyCommitment::for_key(key).ok().map(|c| c.commitment),
               "commitments": key.nonces.is_some(), "notes": m.notes})
    }
}

/// The key's default null in one line: exact, its shadow models, or none.
fn null_line(key: &KeyFile) -> String {
    let Ok(scheme) = crate::watermark::scheme_for_key(key, None) else {
        return "unknown scheme".into();
    };
    match crate::watermark::key_null(key, scheme) {
        Ok(null) => {
            let rate = null.rate().map_or(f64::NAN, |r| r);
            let shadows = crate::shadow::ShadowCalibration::of_key(key)
                .ok()
                .flatten()
                .filter(|_| !scheme.null_is_exact(key))
                .map(|c| {
                    let m: Vec<String> = c.shadows.iter().map(|s| s.matches.to_string()).collect();
                    format!("; shadows matched {}", m.join(", "))
                })
                .unwrap_or_default();
            format!(
                "p0 {rate:.4} ({}{}){shadows}",
                super::render::null_description(&null),
                if scheme.null_is_exact(key) { ", exact" } else { "" }
            )
        }
        Err(_) => "none: no exact null and no shadow models (verify needs --null calibrated or --null analytic)".into(),
    }
}

impl fmt::Display for KeySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, m) = (&self.key, &self.key.meta);
        writeln!(
            f,
            "key {} (format v{}, integrity ok)",
            self.path.display(),
            m.version
        )?;
        writeln!(f, "  scheme        {} {}", m.scheme, m.params)?;
        writeln!(
            f,
            "  model         {} {} -> {} classes, sha256 {}",
            m.spec.architecture, m.spec.input, m.spec.num_classes, m.model_sha256
        )?;
        writeln!(
            f,
            "  made          {} on {}, seed {}, nnmark {}, {}",
            m.embed_mode, m.dataset, m.seed, m.nnmark_version, m.created
        )?;
        writeln!(
            f,
            "  trigger items {} ({} spent in {} public reveals){}",
            self.items(),
            m.spent.len(),
            m.reveals.len(),
            if key.nonces.is_some() {
                ", with commitments"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  commitment    {}",
            match KeyCommitment::for_key(key) {
                Ok(c) => c.commitment,
                Err(_) => "none yet (`nnmark key commit` adds one)".into(),
            }
        )?;
        writeln!(f, "  null          {}", null_line(key))?;
        for (k, v) in &m.notes {
            // The shadows' answers are summarised on the null line above.
            if k != "train_config" && k != crate::shadow::CALIBRATION_NOTE {
                writeln!(f, "  {k:13} {v}")?;
            }
        }
        match &self.exported_triggers {
            Some(dir) => write!(f, "  wrote trigger images to {}", dir.display()),
            None => write!(
                f,
                "  (trigger contents not shown; --export-triggers DIR writes them)"
            ),
        }
    }
}
