//! The `[early_stopping]` table: which validation metric is watched, and
//! when a job that stopped improving or diverged is stopped.

use super::EarlyStopping;
use super::error::{Cx, SpecError};
use super::raw::RawEarlyStopping;

impl Cx<'_> {
    /// The `[early_stopping]` table; missing keys take the defaults.
    pub(super) fn early_stopping(&self, raw: &RawEarlyStopping) -> Result<EarlyStopping, SpecError> {
        let mut stop = EarlyStopping::default();
        if let Some(m) = &raw.metric {
            stop.metric = *m.get_ref();
        }
        if let Some(p) = &raw.patience {
            stop.patience = self.int_in(p, "early_stopping.patience", (1.0, 100.0))? as u32;
        }
        if let Some(d) = &raw.min_delta {
            let x = *d.get_ref();
            if !x.is_finite() || x < 0.0 {
                return Err(self.at(
                    d,
                    "early_stopping.min_delta",
                    format!("{x} is not allowed"),
                    "give the smallest change that counts as an improvement, 0 or more, e.g. `min_delta = 0.01`",
                ));
            }
            stop.min_delta = x;
        }
        if let Some(f) = &raw.divergence_factor {
            let x = *f.get_ref();
            if !x.is_finite() || x < 1.0 {
                return Err(self.at(
                    f,
                    "early_stopping.divergence_factor",
                    format!("{x} is not allowed"),
                    "give a factor of 1.0 or more over the first evaluation's loss, e.g. `divergence_factor = 2.0`",
                ));
            }
            stop.divergence_factor = x;
        }
        Ok(stop)
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn early_stopping_takes_the_defaults_and_every_key() {
        assert_eq!(parse_str(GOOD).unwrap().early_stopping, None);
        let s = parse_str(&with_graders("[early_stopping]\n")).unwrap();
        assert_eq!(s.early_stopping, Some(EarlyStopping::default()));
        let s = parse_str(&with_graders("[early_stopping]\npatience = 5\n")).unwrap();
        assert_eq!(s.early_stopping, Some(EarlyStopping { patience: 5, ..EarlyStopping::default() }));
        let s = parse_str(&with_graders(
            "[early_stopping]\nmetric = \"valid_accuracy\"\npatience = 100\nmin_delta = 0.005\ndivergence_factor = 2.5\n",
        ))
        .unwrap();
        let want = EarlyStopping {
            metric: StopMetric::ValidAccuracy,
            patience: 100,
            min_delta: 0.005,
            divergence_factor: 2.5,
        };
        assert_eq!(s.early_stopping, Some(want));
        // Whole numbers are numbers too.
        let s = parse_str(&with_graders(
            "[early_stopping]\nmetric = \"valid_loss\"\npatience = 1\nmin_delta = 0\ndivergence_factor = 1\n",
        ))
        .unwrap();
        let want = EarlyStopping { patience: 1, ..EarlyStopping::default() };
        assert_eq!(s.early_stopping, Some(want));
    }

    #[test]
    fn early_stopping_errors_name_the_line_and_the_key() {
        for (keys, key, message, hint) in [
            ("metric = \"valid_f1\"", "early_stopping.metric", "unknown metric `valid_f1`", "\"valid_accuracy\""),
            ("patience = 0", "early_stopping.patience", "0 is out of range", "from 1 to 100"),
            ("patience = 101", "early_stopping.patience", "101 is out of range", "from 1 to 100"),
            ("min_delta = -0.1", "early_stopping.min_delta", "-0.1 is not allowed", "0 or more"),
            ("min_delta = nan", "early_stopping.min_delta", "NaN is not allowed", "0 or more"),
            ("divergence_factor = 0.5", "early_stopping.divergence_factor", "0.5 is not allowed", "1.0 or more"),
            ("divergence_factor = inf", "early_stopping.divergence_factor", "inf is not allowed", "1.0 or more"),
        ] {
            let e = err(&with_graders(&format!("[early_stopping]\n# the key on line 20\n{keys}\n")));
            assert_eq!((e.line, e.key.as_deref()), (Some(20), Some(key)), "{keys}: {e}");
            assert!(e.message.contains(message), "{keys}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{keys}: {e}");
        }
        let e = err(&with_graders("[early_stopping]\nmetric = \"accuracy\"\n"));
        let hint = e.hint.unwrap();
        assert!(hint.contains("\"valid_loss\"") && hint.contains("\"valid_accuracy\""), "{hint}");
        let e = err(&with_graders("[early_stopping]\npatiense = 3\n"));
        assert_eq!(e.line, Some(19));
        assert!(e.message.contains("unknown field `patiense`"), "{e}");
    }
}
