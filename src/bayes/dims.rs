//! The model's coordinates: each axis of a sweep as one dimension of the unit
//! cube (numbers, on a log scale where they should be) or as a choice among
//! its listed values, and back.

use crate::space::round_significant;
use crate::space::{Axis, Domain, Kind};

/// How the model sees one axis.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Dim {
    /// A single possible value: nothing to model.
    Fixed(Option<f64>),
    /// A `Values` list of two or more: a category each (`None`, `auto`,
    /// included), never interpolated.
    Choice(Vec<Option<f64>>),
    /// A range, mapped onto [0, 1] through `ln` when `log`; an integer range
    /// `lo..=hi` gives each integer an equal cell (its edges half a step out).
    Numeric { lo: f64, hi: f64, log: bool, int: bool },
}

impl Dim {
    pub(super) fn of(axis: &Axis) -> Dim {
        let int = axis.kind == Kind::Int;
        let (lo, hi, log) = match &axis.domain {
            Domain::Values(v) => {
                let mut distinct: Vec<Option<f64>> = Vec::with_capacity(v.len());
                for x in v {
                    if !distinct.contains(x) {
                        distinct.push(*x);
                    }
                }
                return match distinct.as_slice() {
                    [] => Dim::Fixed(None),
                    [x] => Dim::Fixed(*x),
                    _ => Dim::Choice(distinct),
                };
            }
            Domain::Uniform(lo, hi) => (*lo, *hi, axis.name.starts_with("learning_rate") && *lo > 0.0),
            Domain::LogUniform(lo, hi) => (*lo, *hi, *lo > 0.0),
        };
        let (lo, hi) = if int { (lo.ceil(), hi.floor()) } else { (lo, hi) };
        if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
            return Dim::Fixed(Some(if int { lo.max(hi) } else { lo }));
        }
        Dim::Numeric { lo, hi, log, int }
    }

    /// Whether the model has a coordinate for it.
    pub(super) fn free(&self) -> bool {
        !matches!(self, Dim::Fixed(_))
    }

    /// How many values it can take, if finitely many.
    pub(super) fn count(&self) -> Option<u64> {
        match self {
            Dim::Fixed(_) => Some(1),
            Dim::Choice(v) => Some(v.len() as u64),
            Dim::Numeric { lo, hi, int: true, .. } => Some((hi - lo) as u64 + 1),
            Dim::Numeric { .. } => None,
        }
    }

    /// The number of categories of a choice (0: a number).
    pub(super) fn choices(&self) -> usize {
        match self {
            Dim::Choice(v) => v.len(),
            _ => 0,
        }
    }

    /// The ends of the transformed range, that [0, 1] stands for.
    fn edges(&self) -> (f64, f64, bool) {
        match *self {
            Dim::Numeric { lo, hi, log, int } => {
                let half = if int { 0.5 } else { 0.0 };
                let t = |x: f64| if log { x.ln() } else { x };
                (t(lo - half), t(hi + half), log)
            }
            _ => (0.0, 1.0, false),
        }
    }

    /// The coordinate of `x`: a category's index, or a number's place in
    /// [0, 1]; `None` when `x` is not one of its values (a trial from another
    /// declaration of the space).
    pub(super) fn encode(&self, x: Option<f64>) -> Option<f64> {
        match self {
            Dim::Fixed(_) => Some(0.0),
            Dim::Choice(v) => v.iter().position(|c| *c == x).map(|i| i as f64),
            Dim::Numeric { lo, hi, .. } => {
                let x = x.filter(|x| x.is_finite() && (lo..=hi).contains(&x))?;
                let (a, b, log) = self.edges();
                let t = if log { x.ln() } else { x };
                Some(((t - a) / (b - a)).clamp(0.0, 1.0))
            }
        }
    }

    /// The value at coordinate `u`, inside the domain: a listed value, an
    /// integer in range, or a float rounded to 3 significant digits as random
    /// draws are (so that run ids stay short) and kept within the bounds.
    pub(super) fn decode(&self, u: f64) -> Option<f64> {
        match self {
            Dim::Fixed(x) => *x,
            Dim::Choice(v) => v[(u.max(0.0) as usize).min(v.len() - 1)],
            Dim::Numeric { lo, hi, int, .. } => {
                let (a, b, log) = self.edges();
                let t = a + u.clamp(0.0, 1.0) * (b - a);
                let x = if log { t.exp() } else { t };
                let x = if *int { x.round() } else { round_significant(x, 3) };
                Some(x.clamp(*lo, *hi))
            }
        }
    }

    /// Every value, for a finite dimension.
    pub(super) fn values(&self) -> Vec<Option<f64>> {
        match self {
            Dim::Fixed(x) => vec![*x],
            Dim::Choice(v) => v.clone(),
            Dim::Numeric { lo, hi, int: true, .. } => (*lo as i64..=*hi as i64).map(|k| Some(k as f64)).collect(),
            Dim::Numeric { .. } => Vec::new(),
        }
    }
}
