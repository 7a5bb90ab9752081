//! A model file's accuracy on a test split, as `nnmark eval --model` reports it.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde_json::json;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Architecture, ModelSpec, Normalization};
use crate::train::{self, Evaluation};

use super::render::versions;

/// A model file evaluated.
pub struct FileEvaluation {
    /// The file.
    pub model: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// The data set's label.
    pub dataset: String,
    /// Accuracy, per class and confusion.
    pub evaluation: Evaluation,
    /// Show per-class accuracy and the confusion matrix in the text.
    pub per_class: bool,
}

/// Evaluates a weights file on `test`: nnmark files describe themselves; a foreign state_dict
/// needs `arch` (and `classes`, default the data's).
pub fn evaluate_file(
    path: &Path,
    arch: Option<Architecture>,
    classes: Option<usize>,
    test: &Dataset,
    dataset: &str,
    device: &Device,
) -> Result<FileEvaluation> {
    let spec = arch.map(|architecture| ModelSpec {
        architecture,
        input: test.shape,
        num_classes: classes.unwrap_or(test.num_classes),
        normalization: Normalization::identity(test.shape.channels),
    });
    let loaded = crate::weights::load(path, spec.as_ref(), device)?;
    let evaluation = train::evaluate(&loaded.model, test, 256)
        .map_err(|e| Error::invalid("model", path.display(), e.to_string()))?;
    Ok(FileEvaluation {
        model: path.to_path_buf(),
        sha256: loaded.sha256,
        dataset: dataset.to_string(),
        evaluation,
        per_class: false,
    })
}

impl FileEvaluation {
    /// The machine-readable report.
    pub fn json(&self) -> serde_json::Value {
        json!({ "versions": versions(), "model": self.model, "sha256": self.sha256, "dataset": self.dataset, "evaluation": self.evaluation })
    }
}

impl fmt::Display for FileEvaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.evaluation;
        write!(
            f,
            "{}: accuracy {:.2}% on {} test images ({})",
            self.model.display(),
            e.accuracy * 100.0,
            e.examples,
            self.dataset
        )?;
        if self.per_class {
            for (c, acc) in e.per_class_accuracy.iter().enumerate() {
                write!(f, "\n  class {c}: {:.2}%", acc * 100.0)?;
            }
            write!(f, "\nconfusion (rows: true class, columns: predicted):")?;
            for row in &e.confusion {
                let cells: String = row.iter().map(|v| format!("{v:5}")).collect();
                write!(f, "\n  {cells}")?;
            }
        }
        Ok(())
    }
}
