//! Class names as services report them, mapped back to class indices.

use nnmark::{Error, Result};

/// Class names as a service reports them, so label answers map back to class indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassNames(pub Vec<String>);

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl ClassNames {
    /// "0", "1", ...: what a service without a label map answers.
    pub fn indices(classes: usize) -> Self {
        Self((0..classes).map(|i| i.to_string()).collect())
    }

    /// `indices`, `fashion`, `digits`, or a file with one class name per line.
    pub fn parse(spec: &str, classes: usize) -> Result<Self> {
        let names = match spec {
            "indices" | "digits" | "mnist" => return Ok(Self::indices(classes)),
            "fashion" | "fashion-mnist" => {
                Self(FASHION_CLASSES.iter().map(|s| s.to_string()).collect())
            }
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                Self(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
        };
        if names.0.len() != classes {
            return Err(Error::invalid(
                "labels",
                spec,
                format!(
                    "lists {} class names but the model has {classes} classes",
                    names.0.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = names.0.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(Error::invalid(
                "labels",
                spec,
                format!("class name '{dup}' appears twice"),
            ));
        }
        Ok(names)
    }

    /// The name of class `i`.
    pub fn name(&self, i: usize) -> &str {
        self.0.get(i).map_or("?", String::as_str)
    }

    /// The class index of a label as a service wrote it: a listed name, else a class number.
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.0.iter().position(|n| n == label).or_else(|| {
            label
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&i| i < self.0.len())
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no classes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads class names for a served model from `spec` (see [`ClassNames::parse`]).
pub fn class_names_for(spec: Option<&str>, dataset: &str, classes: usize) -> Result<ClassNames> {
    match spec {
        Some(s) => ClassNames::parse(s, classes),
        None if nnmark::data::canonical_name(dataset) == Some("fashion") && classes == 10 => {
            ClassNames::parse("fashion", classes)
        }
        None => Ok(ClassNames::indices(classes)),
    }
}
