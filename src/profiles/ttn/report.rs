//! What an import did: models found and imported, each example's verdict with its first
//! difference, the keys mapped and those left unmapped (with why), and every model's reason
//! when it was not imported or left alone.

use std::fmt;

use super::mapping::{Mapped, Unmapped};

/// The whole import.
#[derive(Debug, Default)]
pub struct Report {
    pub models: Vec<ModelReport>,
    /// Problems above a single model (a vendor's unreadable `index.yaml`).
    pub problems: Vec<String>,
}

/// One device model.
#[derive(Debug)]
pub struct ModelReport {
    /// The profile id.
    pub id: String,
    /// The device file it comes from, relative to the import root.
    pub source: String,
    pub outcome: Outcome,
    /// Whether the mapping reads `normalizeUplink`'s output.
    pub normalized: bool,
    pub examples: Vec<ExampleResult>,
    pub fields: Vec<Mapped>,
    pub unmapped: Vec<Unmapped>,
    pub notes: Vec<String>,
}

/// What became of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A new profile was written.
    Written,
    /// A profile the import wrote before was replaced.
    Updated,
    /// The profile the import wrote before is already what it would write.
    Unchanged,
    /// An existing profile was written or edited by hand: the reason.
    LeftAlone(String),
    /// The model was read, but no usable profile follows from it: the reason.
    NotImported(String),
    /// A file of the model is broken or hostile: the reason.
    Failed(String),
}

/// One vendor example.
#[derive(Debug, Clone)]
pub struct ExampleResult {
    /// Position in the codec's `uplinkDecoder.examples`, from 0.
    pub index: usize,
    pub description: Option<String>,
    /// `None`: the codec's result is the vendor's.
    pub difference: Option<String>,
    /// Where `normalizeUplink` was run: how its result differs from the vendor's
    /// `normalizedOutput` (`None`: it agrees, or there was nothing to compare).
    pub normalize_difference: Option<String>,
}

impl ModelReport {
    pub fn new(id: &str, source: &str, outcome: Outcome) -> ModelReport {
        ModelReport {
            id: id.to_owned(),
            source: source.to_owned(),
            outcome,
            normalized: false,
            examples: Vec::new(),
            fields: Vec::new(),
            unmapped: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether the profile is in the directory as the import would write it.
    pub fn imported(&self) -> bool {
        matches!(self.outcome, Outcome::Written | Outcome::Updated | Outcome::Unchanged)
    }
}

impl Report {
    /// Examples run, and how many of them gave the vendor's result.
    pub fn example_counts(&self) -> (usize, usize) {
        let all = self.models.iter().flat_map(|m| &m.examples);
        let total = all.clone().count();
        (all.filter(|e| e.difference.is_none()).count(), total)
    }

    pub fn model(&self, id: &str) -> Option<&ModelReport> {
        self.models.iter().find(|m| m.id == id)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written => f.write_str("written"),
            Outcome::Updated => f.write_str("updated"),
            Outcome::Unchanged => f.write_str("unchanged"),
            Outcome::LeftAlone(why) => write!(f, "left alone: {why}"),
            Outcome::NotImported(why) => write!(f, "not imported: {why}"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |p: fn(&Outcome) -> bool| self.models.iter().filter(|m| p(&m.outcome)).count();
        let (passed, total) = self.example_counts();
        writeln!(
            f,
            "models found: {}; imported: {} (written {}, updated {}, unchanged {}); left alone: {}; not imported: {}; failed: {}",
            self.models.len(),
            self.models.iter().filter(|m| m.imported()).count(),
            count(|o| *o == Outcome::Written),
            count(|o| *o == Outcome::Updated),
            count(|o| *o == Outcome::Unchanged),
            count(|o| matches!(o, Outcome::LeftAlone(_))),
            count(|o| matches!(o, Outcome::NotImported(_))),
            count(|o| matches!(o, Outcome::Failed(_))),
        )?;
        writeln!(f, "examples: {passed} of {total} decode to the vendor's output")?;
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        for m in &self.models {
            writeln!(f, "\n{} ({}): {}", m.id, m.source, m.outcome)?;
            if !m.examples.is_empty() {
                let ok = m.examples.iter().filter(|e| e.difference.is_none()).count();
                let from = if m.normalized { "decodeUplink + normalizeUplink" } else { "decodeUplink" };
                writeln!(f, "  examples: {ok} of {} pass ({from})", m.examples.len())?;
            }
            for e in &m.examples {
                let label = e.description.as_deref().map(|d| format!(" {d:?}")).unwrap_or_default();
                if let Some(d) = &e.difference {
                    writeln!(f, "    FAIL example {}{label}: {d}", e.index)?;
                } else if let Some(d) = &e.normalize_difference {
                    writeln!(f, "    FAIL example {}{label}, normalizeUplink: {d}", e.index)?;
                }
            }
            for field in &m.fields {
                writeln!(f, "  mapped   {} -> {} (values in {}; {})", field.pointer, field.quantity, field.unit, field.rule)?;
            }
            for u in &m.unmapped {
                writeln!(f, "  unmapped {}: {}", u.pointer, u.reason)?;
            }
            for n in &m.notes {
                writeln!(f, "  note: {n}")?;
            }
        }
        Ok(())
    }
}
