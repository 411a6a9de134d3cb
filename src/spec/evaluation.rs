//! The `[evaluation]` table: the graders, their weighted combination, the
//! primary metric (an open set: any grader's name, or `combined`), and the
//! settings of the paired test against the leader.

use toml::Spanned;

use crate::eval::config::{self as grader_config, COMBINED, NamedGrader};
use crate::eval::graders::Weighted;

use super::error::{Cx, SpecError};
use super::locate::Step;
use super::raw::RawEvaluation;
use super::{ALPHA, Decoding, EVAL_CONCURRENCY, Evaluation, MARGIN, Metric};

impl Cx<'_> {
    pub(super) fn evaluation(&self, raw: &RawEvaluation) -> Result<Evaluation, SpecError> {
        let mut graders = self.graders(raw.graders.as_deref().unwrap_or_default())?;
        let combined = match &raw.combined {
            None => None,
            Some(t) => Some(self.combined(t, &mut graders)?),
        };
        let metric = self.metric(raw.metric.as_ref(), &mut graders, combined.is_some())?;
        let alpha = match &raw.alpha {
            None => ALPHA,
            Some(a) if *a.get_ref() > 0.0 && *a.get_ref() <= 0.5 => *a.get_ref(),
            Some(a) => {
                return Err(self.at(
                    a,
                    "evaluation.alpha",
                    format!("{} is not allowed", a.get_ref()),
                    "give a significance level above 0 and at most 0.5, e.g. `alpha = 0.05`",
                ));
            }
        };
        let margin = match &raw.margin {
            None => MARGIN,
            Some(m) if (0.0..1.0).contains(m.get_ref()) => *m.get_ref(),
            Some(m) => {
                return Err(self.at(
                    m,
                    "evaluation.margin",
                    format!("{} is not allowed", m.get_ref()),
                    "give the largest shortfall from the leader that still counts as as good, at least 0 and below 1, \
                     e.g. `margin = 0.02`",
                ));
            }
        };
        let concurrency = match &raw.concurrency {
            None => EVAL_CONCURRENCY,
            Some(c) => self.int_in(c, "evaluation.concurrency", (1.0, 256.0))? as u32,
        };
        let decoding = self.decoding(raw)?;
        Ok(Evaluation {
            metric,
            graders,
            combined,
            alpha,
            margin,
            checkpoints: raw.checkpoints.unwrap_or(false),
            baseline: raw.baseline.unwrap_or(true),
            concurrency,
            decoding,
        })
    }

    /// `temperature`, `max_tokens`, `top_p` and `seed`.
    fn decoding(&self, raw: &RawEvaluation) -> Result<Decoding, SpecError> {
        let mut d = Decoding::default();
        if let Some(t) = &raw.temperature {
            let x = *t.get_ref();
            if !(0.0..=2.0).contains(&x) {
                return Err(self.at(
                    t,
                    "evaluation.temperature",
                    format!("{x} is not allowed"),
                    "give a temperature from 0 to 2, e.g. `temperature = 0` for the most probable reply",
                ));
            }
            d.temperature = x;
        }
        if let Some(m) = &raw.max_tokens {
            d.max_tokens = self.int_in(m, "evaluation.max_tokens", (1.0, 1_000_000.0))? as u32;
        }
        if let Some(p) = &raw.top_p {
            let x = *p.get_ref();
            if !(x > 0.0 && x <= 1.0) {
                return Err(self.at(
                    p,
                    "evaluation.top_p",
                    format!("{x} is not allowed"),
                    "give a probability above 0 and at most 1, e.g. `top_p = 0.9`, or leave `top_p` out",
                ));
            }
            d.top_p = Some(x);
        }
        d.seed = raw.seed.as_ref().map(|s| *s.get_ref());
        Ok(d)
    }

    /// The `[[evaluation.graders]]` tables, in the order written.
    fn graders(&self, tables: &[Spanned<toml::Table>]) -> Result<Vec<NamedGrader>, SpecError> {
        let mut graders: Vec<NamedGrader> = Vec::new();
        for (i, table) in tables.iter().enumerate() {
            let key = format!("evaluation.graders[{}]", i + 1);
            let grader = grader_config::parse(table.get_ref()).map_err(|message| {
                // Point at the offending key when the message names one.
                let named = message.split('`').nth(1).filter(|k| table.get_ref().contains_key(*k));
                let named = named.or(message.contains("grader type").then_some("type"));
                let path = |k| [Step::Key("evaluation"), Step::Key("graders"), Step::Index(i), Step::Key(k)];
                let span = named.and_then(|k| self.key_span(&path(k))).unwrap_or_else(|| table.span());
                let hint = format!(
                    "e.g. `[[evaluation.graders]]` then `type = \"token_f1\"`; the types are {}",
                    grader_config::TYPES.join(", ")
                );
                self.error(&span, &key, message, &hint)
            })?;
            if graders.iter().any(|g| g.name == grader.name) {
                return Err(self.error(
                    &table.span(),
                    &key,
                    format!("two graders are named `{}`", grader.name),
                    "give one of them another `name`",
                ));
            }
            graders.push(grader);
        }
        Ok(graders)
    }

    /// `combined = { grader = weight, ... }`; a built-in grader it names but
    /// the file does not declare is added, last.
    fn combined(&self, t: &Spanned<toml::Table>, graders: &mut Vec<NamedGrader>) -> Result<Weighted, SpecError> {
        let mut parts = Vec::new();
        for (name, weight) in t.get_ref() {
            let span = || {
                self.key_span(&[Step::Key("evaluation"), Step::Key("combined"), Step::Key(name)])
                    .unwrap_or_else(|| t.span())
            };
            let w = match weight {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => {
                    return Err(self.error(
                        &span(),
                        "evaluation.combined",
                        format!("the weight of `{name}` must be a number, found {}", other.type_str()),
                        "e.g. `combined = { exact_match = 1, token_f1 = 3 }`",
                    ));
                }
            };
            if !implicit(name, graders, false) {
                return Err(self.error(
                    &span(),
                    "evaluation.combined",
                    format!("no grader is named `{name}`"),
                    &format!("combine the graders declared: {}", names(graders)),
                ));
            }
            parts.push((name.clone(), w));
        }
        Weighted::new(parts).map_err(|e| {
            self.error(
                &t.span(),
                "evaluation.combined",
                e.to_string(),
                "give each grader a weight of 0 or more, not all 0",
            )
        })
    }

    /// The primary metric: as written (a built-in grader it names is added,
    /// first), else `combined` when there is one, else the first grader,
    /// else exact match.
    fn metric(
        &self,
        written: Option<&Spanned<String>>,
        graders: &mut Vec<NamedGrader>,
        combined: bool,
    ) -> Result<Metric, SpecError> {
        Ok(match written {
            Some(m) => {
                let name = m.get_ref().trim();
                let known = (name == COMBINED && combined) || implicit(name, graders, true);
                if !known {
                    let hint = if graders.is_empty() {
                        "use `metric = \"exact_match\"`, or a built-in grader such as `token_f1`".to_string()
                    } else {
                        format!("name one of the graders: {}", names(graders))
                    };
                    return Err(self.at(m, "evaluation.metric", format!("unknown metric `{name}`"), &hint));
                }
                Metric::named(name)
            }
            None if combined => Metric::named(COMBINED),
            None => match graders.first() {
                Some(g) => Metric::named(&g.name),
                None => {
                    implicit("exact_match", graders, true);
                    Metric::EXACT_MATCH
                }
            },
        })
    }
}

/// Whether a grader is named `name`, after adding the built-in grader of
/// that name with its defaults if none is declared (first or last).
fn implicit(name: &str, graders: &mut Vec<NamedGrader>, first: bool) -> bool {
    if graders.iter().any(|g| g.name == name) {
        return true;
    }
    match NamedGrader::builtin(name) {
        Some(g) if first => {
            graders.insert(0, g);
            true
        }
        Some(g) => {
            graders.push(g);
            true
        }
        None => false,
    }
}

fn names(graders: &[NamedGrader]) -> String {
    let names: Vec<&str> = graders.iter().map(|g| g.name.as_str()).collect();
    if names.is_empty() { "(none)".into() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn evaluation_defaults_to_exact_match_as_before() {
        let s = parse_str(GOOD).unwrap();
        assert_eq!(s.evaluation.metric, Metric::EXACT_MATCH);
        assert_eq!(s.evaluation.score_names(), ["exact_match"]);
        assert_eq!((s.evaluation.alpha, s.evaluation.baseline, s.evaluation.checkpoints), (0.05, true, false));
        let none = parse_str(&GOOD.replace("[evaluation]\nmetric = \"exact_match\"\n", "")).unwrap();
        assert_eq!(none.evaluation, Evaluation::default());
    }

    #[test]
    fn graders_are_added_and_the_metric_may_name_a_built_in_one() {
        let s = parse_str(&with_graders(
            "[[evaluation.graders]]\ntype = \"token_f1\"\n[[evaluation.graders]]\ntype = \"contains\"\nignore_case = true\n",
        ))
        .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "exact_match");
        assert_eq!(s.evaluation.score_names(), ["exact_match", "token_f1", "contains_i"]);
        // Without `metric`, the first grader is primary.
        let s = parse_str(
            &with_graders("[[evaluation.graders]]\ntype = \"bleu\"\n").replace("metric = \"exact_match\"\n", ""),
        )
        .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "bleu");
        assert_eq!(s.evaluation.score_names(), ["bleu"]);
        let s =
            parse_str(&GOOD.replace("metric = \"exact_match\"", "metric = \"rouge_l\"\nalpha = 0.01\nconcurrency = 4"))
                .unwrap();
        assert_eq!((s.evaluation.metric.as_str(), s.evaluation.alpha, s.evaluation.concurrency), ("rouge_l", 0.01, 4));
    }

    #[test]
    fn a_weighted_combination_can_be_the_metric() {
        let s =
            parse_str(&GOOD.replace(
                "metric = \"exact_match\"",
                "metric = \"combined\"\ncombined = { exact_match = 1, fuzzy = 3 }",
            ))
            .unwrap();
        assert_eq!(s.evaluation.metric.as_str(), "combined");
        assert_eq!(s.evaluation.score_names(), ["exact_match", "fuzzy", "combined"]);
        assert_eq!(
            s.evaluation.combined.unwrap().parts,
            [("exact_match".to_string(), 1.0), ("fuzzy".to_string(), 3.0)]
        );
        let e = err(&GOOD.replace("metric = \"exact_match\"", "combined = { exact_match = 1, nope = 3 }"));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.combined")));
        assert!(e.message.contains("no grader is named `nope`"), "{e}");
        let e = err(&GOOD.replace("metric = \"exact_match\"", "combined = { exact_match = 0 }"));
        assert!(e.message.contains("add up to zero"), "{e}");
    }

    #[test]
    fn evaluation_errors_name_the_line_and_the_key() {
        let e = err(&GOOD.replace("metric = \"exact_match\"", "metric = \"accuracy\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.metric")));
        assert!(e.message.contains("unknown metric `accuracy`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"contains\"\nignorecase = true\n"));
        assert_eq!((e.line, e.key.as_deref()), (Some(20), Some("evaluation.graders[1]")));
        assert!(e.message.contains("unknown field `ignorecase`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"meteor\"\n"));
        assert_eq!(e.line, Some(19));
        assert!(e.message.contains("unknown grader type `meteor`"), "{e}");
        let e =
            err(&with_graders("[[evaluation.graders]]\ntype = \"bleu\"\n[[evaluation.graders]]\ntype = \"bleu\"\n"));
        assert_eq!(e.key.as_deref(), Some("evaluation.graders[2]"));
        assert!(e.message.contains("two graders are named `bleu`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"judge\"\nrubric = \"r\"\n"));
        assert!(e.message.contains("missing field `model`"), "{e}");
        let e = err(&with_graders("[[evaluation.graders]]\ntype = \"regex\"\npattern = \"(\"\n"));
        assert!(e.message.contains("invalid regex"), "{e}");
        let e = err(&GOOD.replace("metric = \"exact_match\"", "alpha = 0.9"));
        assert_eq!(e.key.as_deref(), Some("evaluation.alpha"));
        let e = err(&GOOD.replace("metric = \"exact_match\"", "metrics = \"exact_match\""));
        assert!(e.message.contains("unknown field `metrics`"), "{e}");
    }

    #[test]
    fn the_margin_defaults_to_two_points_and_must_be_below_one() {
        assert_eq!(parse_str(GOOD).unwrap().evaluation.margin, 0.02);
        let s = parse_str(&GOOD.replace("metric = \"exact_match\"", "margin = 0.05")).unwrap();
        assert_eq!(s.evaluation.margin, 0.05);
        assert_eq!(
            parse_str(&GOOD.replace("metric = \"exact_match\"", "margin = 0.0")).unwrap().evaluation.margin,
            0.0
        );
        for bad in ["margin = 1.0", "margin = -0.01", "margin = nan"] {
            let e = err(&GOOD.replace("metric = \"exact_match\"", bad));
            assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("evaluation.margin")), "{bad}");
            assert!(
                e.message.contains("is not allowed") && e.hint.as_deref().unwrap().contains("margin = 0.02"),
                "{e}"
            );
        }
    }

    #[test]
    fn judge_and_command_graders_parse() {
        let s = parse_str(&with_graders(
            "[[evaluation.graders]]\ntype = \"judge\"\nname = \"helpful\"\nmodel = \"gpt-4.1-mini-2025-04-14\"\n\
             rubric = \"Rate {{reply}} from 1 to 5\"\nrange = [1, 5]\n\
             [[evaluation.graders]]\ntype = \"command\"\ncommand = [\"python3\", \"grade.py\"]\ntimeout_seconds = 2.5\n",
        ))
        .unwrap();
        assert_eq!(s.evaluation.score_names(), ["exact_match", "helpful", "command"]);
        assert!(s.evaluation.grader("helpful").unwrap().is_cached());
        assert!(!s.evaluation.grader("exact_match").unwrap().is_cached());
    }
}
