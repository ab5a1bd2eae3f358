//! The weights searched ([`WeightGrid`]) and one value of each ([`Weights`]).

use serde::{Deserialize, Serialize};

use memory_core::{Error, Result, RetrievalConfig};

/// The values tried for each weight (see [`RetrievalConfig`] for what each does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightGrid {
    /// [`RetrievalConfig::work_weight`]; each value is its own import and embedding (the
    /// texts are embedded once and remembered across values).
    pub work_weight: Vec<f32>,
    /// [`RetrievalConfig::outcome_weight`].
    pub outcome_weight: Vec<f64>,
    /// [`RetrievalConfig::dense_weight`] (queries with context).
    pub dense_weight: Vec<f64>,
    /// [`RetrievalConfig::context_weight`] (queries with context).
    pub context_weight: Vec<f64>,
    /// [`RetrievalConfig::dense_weight_bare`] (description-only queries).
    pub dense_weight_bare: Vec<f64>,
}

impl Default for WeightGrid {
    fn default() -> Self {
        let dense = vec![0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        WeightGrid {
            work_weight: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            outcome_weight: vec![0.0, 0.05, 0.1, 0.2],
            dense_weight: dense.clone(),
            context_weight: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2],
            dense_weight_bare: dense,
        }
    }
}

impl WeightGrid {
    /// Settings tried: per work and outcome weight, every with-context pair and every
    /// description-only weight.
    pub fn settings(&self) -> usize {
        self.work_weight.len()
            * self.outcome_weight.len()
            * (self.dense_weight.len() * self.context_weight.len() + self.dense_weight_bare.len())
    }

    /// The grid with `w`'s values added where missing, so the weights a run starts from are
    /// scored on the same terms as every candidate.
    #[must_use]
    pub fn including(mut self, w: &Weights) -> Self {
        fn add<T: PartialEq + Copy>(list: &mut Vec<T>, v: T) {
            if !list.contains(&v) {
                list.push(v);
            }
        }
        add(&mut self.work_weight, w.work_weight);
        add(&mut self.outcome_weight, w.outcome_weight);
        add(&mut self.dense_weight, w.dense_weight);
        add(&mut self.context_weight, w.context_weight);
        add(&mut self.dense_weight_bare, w.dense_weight_bare);
        self
    }

    /// Refuses a weight with no value, or a value outside its range (0..=1 for the outcome and
    /// dense weights, 0 and up for the others).
    pub(super) fn validate(&self) -> Result<()> {
        let lists: [(&str, Vec<f64>, f64); 5] = [
            (
                "work_weight",
                self.work_weight.iter().map(|v| f64::from(*v)).collect(),
                f64::MAX,
            ),
            ("outcome_weight", self.outcome_weight.clone(), 1.0),
            ("dense_weight", self.dense_weight.clone(), 1.0),
            ("context_weight", self.context_weight.clone(), f64::MAX),
            ("dense_weight_bare", self.dense_weight_bare.clone(), 1.0),
        ];
        for (name, values, most) in lists {
            if values.is_empty() {
                return Err(Error::invalid(name, "the grid needs at least one value"));
            }
            if let Some(v) = values
                .iter()
                .find(|v| !v.is_finite() || **v < 0.0 || **v > most)
            {
                return Err(Error::invalid(
                    name,
                    format!("grid value {v} is outside 0..={most}"),
                ));
            }
        }
        Ok(())
    }
}

/// One value of every searched weight, and both abstention thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// [`RetrievalConfig::work_weight`].
    pub work_weight: f32,
    /// [`RetrievalConfig::outcome_weight`].
    pub outcome_weight: f64,
    /// [`RetrievalConfig::dense_weight`].
    pub dense_weight: f64,
    /// [`RetrievalConfig::context_weight`].
    pub context_weight: f64,
    /// [`RetrievalConfig::dense_weight_bare`].
    pub dense_weight_bare: f64,
    /// [`RetrievalConfig::strong_match_cosine`].
    pub strong_match_cosine: f32,
    /// [`RetrievalConfig::strong_match_cosine_bare`].
    pub strong_match_cosine_bare: f32,
}

impl Weights {
    /// The searched values of `c`.
    ///
    /// ```
    /// use memory_core::RetrievalConfig;
    /// use memory_eval::cross_validation::Weights;
    /// let c = RetrievalConfig::default();
    /// assert_eq!(Weights::of(&c).apply(&c), c);
    /// ```
    pub fn of(c: &RetrievalConfig) -> Self {
        Weights {
            work_weight: c.work_weight,
            outcome_weight: c.outcome_weight,
            dense_weight: c.dense_weight,
            context_weight: c.context_weight,
            dense_weight_bare: c.dense_weight_bare,
            strong_match_cosine: c.strong_match_cosine,
            strong_match_cosine_bare: c.strong_match_cosine_bare,
        }
    }

    /// `c` with these values.
    pub fn apply(&self, c: &RetrievalConfig) -> RetrievalConfig {
        RetrievalConfig {
            work_weight: self.work_weight,
            outcome_weight: self.outcome_weight,
            dense_weight: self.dense_weight,
            context_weight: self.context_weight,
            dense_weight_bare: self.dense_weight_bare,
            strong_match_cosine: self.strong_match_cosine,
            strong_match_cosine_bare: self.strong_match_cosine_bare,
            ..c.clone()
        }
    }
}
