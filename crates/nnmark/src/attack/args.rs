//! Attack parameters as written on the command line: `name:value,key=value,...`. Every value
//! is checked when the attack is built, before any work starts, and an unknown key is an error
//! that lists the known ones.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The parameters of one attack stage.
#[derive(Debug, Clone)]
pub struct AttackArgs {
    attack: String,
    positional: Option<String>,
    named: BTreeMap<String, String>,
    known: Vec<&'static str>,
}

impl AttackArgs {
    /// Parses `value,key=value,...` (the part after `name:`).
    pub fn parse(attack: &str, rest: &str) -> Result<Self> {
        let mut out = Self {
            attack: attack.to_string(),
            positional: None,
            named: BTreeMap::new(),
            known: Vec::new(),
        };
        for (i, item) in rest.split(',').map(str::trim).enumerate() {
            if item.is_empty() {
                if rest.trim().is_empty() {
                    break;
                }
                return Err(out.bad("parameters", rest, "empty parameter between commas"));
            }
            match item.split_once('=') {
                Some((k, v)) => {
                    if out.named.insert(k.trim().into(), v.trim().into()).is_some() {
                        return Err(out.bad(k, v, "given twice"));
                    }
                }
                None if i == 0 => out.positional = Some(item.to_string()),
                None => {
                    return Err(out.bad(
                        "parameters",
                        item,
                        "only the first parameter may be given without a name; write key=value",
                    ));
                }
            }
        }
        Ok(out)
    }

    fn bad(&self, field: &str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::invalid(format!("attack {} {field}", self.attack), value, reason)
    }

    /// The raw text of `key` (or of the positional value, when `positional` is true).
    fn take(&mut self, key: &'static str, positional: bool) -> Option<String> {
        self.known.push(key);
        match self.named.remove(key) {
            Some(v) => Some(v),
            None if positional => self.positional.take(),
            None => None,
        }
    }

    /// A number, `default` when absent, checked against `ok` (whose text is the reason).
    pub fn f64(
        &mut self,
        key: &'static str,
        positional: bool,
        default: Option<f64>,
        ok: (fn(f64) -> bool, &str),
    ) -> Result<f64> {
        let v = match self.take(key, positional) {
            Some(s) => s
                .parse::<f64>()
                .map_err(|_| self.bad(key, &s, "must be a number"))?,
            None => default.ok_or_else(|| self.bad(key, "(missing)", "is required"))?,
        };
        if !v.is_finite() || !(ok.0)(v) {
            return Err(self.bad(key, v, ok.1.to_string()));
        }
        Ok(v)
    }

    /// A whole number, `default` when absent, at least `min`.
    pub fn usize(
        &mut self,
        key: &'static str,
        positional: bool,
        default: usize,
        min: usize,
    ) -> Result<usize> {
        let v = match self.take(key, positional) {
            Some(s) => s
                .parse::<usize>()
                .map_err(|_| self.bad(key, &s, "must be a whole number"))?,
            None => default,
        };
        if v < min {
            return Err(self.bad(key, v, format!("must be at least {min}")));
        }
        Ok(v)
    }

    /// A word from `choices`, `default` when absent.
    pub fn choice(
        &mut self,
        key: &'static str,
        positional: bool,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str> {
        match self.take(key, positional) {
            None => Ok(default),
            Some(s) => choices.iter().copied().find(|c| *c == s).ok_or_else(|| {
                self.bad(key, &s, format!("expected one of: {}", choices.join(", ")))
            }),
        }
    }

    /// A learning rate (`lr`), in (0, 10).
    pub fn lr(&mut self, default: f64) -> Result<f64> {
        self.f64(
            "lr",
            false,
            Some(default),
            (|v| v > 0.0 && v < 10.0, "must be in (0, 10)"),
        )
    }

    /// A required fraction (`rate`) in [0, 1), positional.
    pub fn rate(&mut self) -> Result<f64> {
        self.f64(
            "rate",
            true,
            None,
            (|v| (0.0..1.0).contains(&v), "must be in [0, 1)"),
        )
    }

    /// Optional text.
    pub fn text(&mut self, key: &'static str) -> Option<String> {
        self.take(key, false)
    }

    /// Errors on anything left unread.
    pub fn finish(self) -> Result<()> {
        if let Some(p) = &self.positional {
            return Err(self.bad(
                "parameters",
                p,
                "this attack takes no unnamed value; write key=value",
            ));
        }
        if let Some((k, v)) = self.named.iter().next() {
            let known = if self.known.is_empty() {
                "this attack takes no parameters".to_string()
            } else {
                format!("known parameters: {}", self.known.join(", "))
            };
            return Err(self.bad(k, v, known));
        }
        Ok(())
    }
}
