//! The `[hyperparameters]` table: any name to a list of values or a
//! distribution, checked against what the provider declares it accepts
//! ([`crate::space::accepted`]): the names, their types, ranges and whether
//! `"auto"` is a value. The typed result holds every accepted name in the
//! provider's order, written or defaulted.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use crate::space::{self, Axis, Domain, Hyperparameters, Kind, Method, N_EPOCHS, Param, SEED};

use super::error::{Cx, SpecError};
use super::{MAX_GRID_RUNS, ProviderKind, Search};

/// The table as written: each name with its value.
pub(super) type RawHyperparameters = Spanned<BTreeMap<String, Spanned<toml::Value>>>;

/// Where a value is written, for its errors: the key, the value's span, and
/// the declaration it is checked against.
struct At<'p> {
    key: String,
    span: Range<usize>,
    param: &'p Param<'p>,
    /// Whether the provider has no default for a value (a trainer command):
    /// `"auto"` is then refused with that reason.
    no_default: bool,
}

impl Cx<'_> {
    /// Every name `provider` accepts, in its order, with the values written
    /// or the default: with successive halving, `n_epochs` is the first
    /// rung's (`[min_epochs]`) and must not be written; an unwritten `seed`
    /// is the sweep's; another unwritten name is `auto`, unless required.
    ///
    /// A trainer command (`provider = "command"`) takes any other name
    /// ([`space::free`]), as an axis between `n_epochs` and `seed`, in the
    /// order the file writes them. That order is the grid's nesting (first
    /// outermost) and the order of random search's draws, so the runs of a
    /// random search, and their ids, depend on it: moving a line of
    /// `[hyperparameters]` draws other runs.
    pub(super) fn hyperparameters(
        &self,
        raw: &RawHyperparameters,
        provider: ProviderKind,
        method: Method,
        search: &Search,
        seed: u64,
    ) -> Result<Hyperparameters, SpecError> {
        let table = raw.get_ref();
        // A name of another method (`beta` in an SFT sweep) is no axis of this one.
        let declared: Vec<Param<'static>> =
            space::accepted(provider).iter().filter(|p| p.applies_to(method)).copied().collect();
        if let Some((name, v, other)) = table.iter().find_map(|(name, v)| {
            let p = space::accepted(provider).iter().find(|p| p.name == name.as_str())?;
            p.method.filter(|m| *m != method).map(|m| (name, v, m))
        }) {
            return Err(self.at(
                v,
                &format!("hyperparameters.{name}"),
                format!(
                    "`{name}` is a hyperparameter of {} sweeps, and this sweep is {}",
                    other.as_str(),
                    method.as_str()
                ),
                &format!(
                    "set `method = \"{}\"` at the top of the sweep file (its training file must hold preference \
                     pairs), or remove `{name}`",
                    other.as_str()
                ),
            ));
        }
        let unknown = table.iter().filter(|(name, _)| !declared.iter().any(|p| p.name == name.as_str()));
        let mut unknown: Vec<(&String, &Spanned<toml::Value>)> = unknown.collect();
        unknown.sort_by_key(|(_, v)| v.span().start);
        let free = match unknown.first() {
            None => Vec::new(),
            Some(_) if space::takes_free_names(provider) => self.free_names(&unknown)?,
            Some((name, v)) => {
                let names: Vec<&str> = declared.iter().map(|p| p.name).collect();
                let hint = match (provider, name.as_str()) {
                    (ProviderKind::Together, "dpo_beta") => {
                        format!("write `{}` instead: ftsweep sends it as `training_method.dpo_beta`", space::BETA)
                    }
                    _ => format!("remove `{name}`; the {} provider accepts {}", provider.as_str(), names.join(", ")),
                };
                return Err(self.at(
                    v,
                    &format!("hyperparameters.{name}"),
                    format!("the {} provider does not accept `{name}`", provider.as_str()),
                    &hint,
                ));
            }
        };
        // The declared names, with the free ones before the seed.
        let at_seed = declared.iter().position(|p| p.name == SEED).unwrap_or(declared.len());
        let accepted: Vec<Param<'_>> =
            declared[..at_seed].iter().copied().chain(free).chain(declared[at_seed..].iter().copied()).collect();
        let no_default = space::takes_free_names(provider);
        let mut axes = Vec::with_capacity(accepted.len());
        for param in &accepted {
            let written = table.get(param.name);
            let at = |v: &Spanned<toml::Value>| At {
                key: format!("hyperparameters.{}", param.name),
                span: v.span(),
                param,
                no_default,
            };
            let domain = match (written, search) {
                (None, Search::SuccessiveHalving(h) | Search::Asha { halving: h, .. }) if param.name == N_EPOCHS => {
                    Domain::Values(vec![Some(f64::from(h.min_epochs))])
                }
                (Some(v), Search::SuccessiveHalving(_) | Search::Asha { .. }) if param.name == N_EPOCHS => {
                    return Err(self.at(
                        v,
                        "hyperparameters.n_epochs",
                        "successive halving sets the epochs rung by rung, from `min_epochs` to `max_epochs`".into(),
                        "remove `n_epochs`; set `min_epochs` and `max_epochs` under [search]",
                    ));
                }
                (None, _) if param.name == SEED => Domain::Values(vec![Some(seed as f64)]),
                (None, _) if !param.required => Domain::Values(vec![None]),
                (None, _) => {
                    return Err(self.error(
                        &raw.span(),
                        &format!("hyperparameters.{}", param.name),
                        "missing".into(),
                        &format!("add `{} = {}` under [hyperparameters]", param.name, param.example),
                    ));
                }
                (Some(v), _) => self.domain(v.get_ref(), &at(v), search)?,
            };
            axes.push(Axis { name: param.name.to_string(), kind: param.kind, domain, written: written.is_some() });
        }
        let hyperparameters = Hyperparameters(axes);
        if !search.draws() {
            self.grid_size(&hyperparameters, &raw.span())?;
        }
        Ok(hyperparameters)
    }

    /// The names the file writes besides the declared ones (`unknown`, in
    /// the order written), as free hyperparameters of a trainer command:
    /// each a placeholder name, none reserved; of integers when every value
    /// or bound written is a TOML integer, else of numbers.
    fn free_names<'t>(&self, unknown: &[(&'t String, &Spanned<toml::Value>)]) -> Result<Vec<Param<'t>>, SpecError> {
        let mut free = Vec::with_capacity(unknown.len());
        for (name, v) in unknown {
            if let Some(problem) = space::free_name_problem(name) {
                let hint = if space::RESERVED.contains(&name.as_str()) {
                    format!(
                        "rename the hyperparameter (e.g. `my_{name}`); ftsweep fills in {} for the command",
                        space::RESERVED.iter().map(|r| format!("{{{r}}}")).collect::<Vec<_>>().join(", ")
                    )
                } else {
                    "use lower-case letters, digits and `_`, not starting with a digit, e.g. `lora_r`".into()
                };
                return Err(self.at(v, &format!("hyperparameters.{name}"), problem, &hint));
            }
            free.push(space::free(name, if all_integers(v.get_ref()) { Kind::Int } else { Kind::Float }));
        }
        Ok(free)
    }

    /// A written value: a list, a single value, or a distribution table.
    fn domain(&self, v: &toml::Value, at: &At<'_>, search: &Search) -> Result<Domain, SpecError> {
        let (name, example) = (at.param.name, at.param.example);
        match v {
            toml::Value::Array(items) => {
                if items.is_empty() {
                    return Err(self.error(
                        &at.span,
                        &at.key,
                        "the list is empty".into(),
                        &format!("give at least one value, e.g. `{name} = {example}`"),
                    ));
                }
                let mut values = Vec::with_capacity(items.len());
                // By bits: the values are finite, and `+ 0.0` makes -0 into 0,
                // so equal values have equal bits.
                let mut seen = std::collections::HashSet::with_capacity(items.len());
                for item in items {
                    let x = self.value(item, at)?;
                    if !seen.insert(x.map(|x| (x + 0.0).to_bits())) {
                        return Err(self.error(
                            &at.span,
                            &at.key,
                            format!("{} is listed twice", x.map_or_else(|| "auto".to_string(), |x| x.to_string())),
                            "list each value once",
                        ));
                    }
                    values.push(x);
                }
                Ok(Domain::Values(values))
            }
            toml::Value::Table(t) => self.distribution(t, at, search),
            single => Ok(Domain::Values(vec![self.value(single, at)?])),
        }
    }

    /// `{ uniform = [lo, hi] }` or `{ log_uniform = [lo, hi] }`: random
    /// search only.
    fn distribution(&self, t: &toml::Table, at: &At<'_>, search: &Search) -> Result<Domain, SpecError> {
        let (name, example) = (at.param.name, at.param.example);
        let hint =
            format!("write `{name} = {{ log_uniform = [lo, hi] }}` or `{{ uniform = [lo, hi] }}` (random search only)");
        let (dist, bounds) = match t.iter().next() {
            Some(entry) if t.len() == 1 => entry,
            _ => return Err(self.error(&at.span, &at.key, "a distribution table takes exactly one key".into(), &hint)),
        };
        let Some(pair) = bounds.as_array().filter(|a| a.len() == 2) else {
            return Err(self.error(&at.span, &at.key, format!("`{dist}` takes a list of two bounds"), &hint));
        };
        let bound = |v: &toml::Value| {
            self.value(v, at)?.ok_or_else(|| self.error(&at.span, &at.key, "a bound cannot be \"auto\"".into(), &hint))
        };
        let (lo, hi) = (bound(&pair[0])?, bound(&pair[1])?);
        if lo >= hi {
            return Err(self.error(
                &at.span,
                &at.key,
                format!("the bounds [{lo}, {hi}] are empty"),
                "write the lower bound first, and make it smaller than the upper bound",
            ));
        }
        if !search.draws() {
            let (message, hint) = match search {
                Search::SuccessiveHalving(_) | Search::Asha { .. } => (
                    "successive halving without `runs` searches a grid: it needs a list of values, not a distribution",
                    format!(
                        "write `{name} = {example}`, or add `runs = 27` under [search] (seeded draws from the space)"
                    ),
                ),
                _ => (
                    "a grid search needs a list of values, not a distribution",
                    format!("write `{name} = {example}`, or set `strategy = \"random\"` under [search]"),
                ),
            };
            return Err(self.error(&at.span, &at.key, message.into(), &hint));
        }
        match dist.as_str() {
            "uniform" => Ok(Domain::Uniform(lo, hi)),
            "log_uniform" if lo <= 0.0 => Err(self.error(
                &at.span,
                &at.key,
                format!("log-uniform bounds must be greater than 0, and {lo} is not"),
                &format!("give positive bounds, e.g. `{name} = {{ log_uniform = [1e-5, 1e-3] }}`, or use `uniform`"),
            )),
            "log_uniform" => Ok(Domain::LogUniform(lo, hi)),
            other => Err(self.error(&at.span, &at.key, format!("unknown distribution `{other}`"), &hint)),
        }
    }

    /// One value, checked against the declaration; `None` is `"auto"`.
    fn value(&self, v: &toml::Value, at: &At<'_>) -> Result<Option<f64>, SpecError> {
        let p = at.param;
        let (name, example) = (p.name, p.example);
        let x = match (v, p.kind) {
            (toml::Value::Integer(i), _) => *i as f64,
            (toml::Value::Float(f), Kind::Float) => *f,
            (toml::Value::String(s), _) if s == "auto" && p.auto => return Ok(None),
            (toml::Value::String(s), _) if s == "auto" => {
                let hint = if name == SEED {
                    "give whole numbers, e.g. `seed = [1, 2, 3]`, or leave the key out to use the sweep's seed".into()
                } else if at.no_default {
                    format!(
                        "a trainer command has no default for `{{{name}}}` to fall back on: give values, e.g. \
                         `{name} = {example}`"
                    )
                } else {
                    format!("give values, e.g. `{name} = {example}`")
                };
                return Err(self.error(&at.span, &at.key, format!("a {name} cannot be \"auto\""), &hint));
            }
            (other, kind) => {
                let expected = if kind == Kind::Int { "a whole number" } else { "a number" };
                return Err(self.error(
                    &at.span,
                    &at.key,
                    format!("expected {expected}, found {} `{other}`", other.type_str()),
                    &format!("e.g. `{name} = {example}`"),
                ));
            }
        };
        let below = x < p.min || (p.min_exclusive && x == p.min);
        match p.kind {
            Kind::Int if x.fract() != 0.0 || below || x > p.max => Err(self.error(
                &at.span,
                &at.key,
                format!("{x} is not allowed"),
                &format!("use whole numbers from {} to {}, e.g. `{name} = {example}`", p.min, p.max),
            )),
            Kind::Float if !x.is_finite() || below || x > p.max => {
                let above = if p.min_exclusive { "greater than" } else { "at least" };
                let least = if p.min > f64::MIN { format!(" {above} {}", p.min) } else { String::new() };
                let most = if p.max < f64::MAX { format!(" and at most {}", p.max) } else { String::new() };
                let finite = if least.is_empty() && most.is_empty() { "finite " } else { "" };
                Err(self.error(
                    &at.span,
                    &at.key,
                    format!("{x} is not allowed: the value must be a {finite}number{least}{most}"),
                    &format!("e.g. `{name} = {example}`"),
                ))
            }
            _ => Ok(Some(x)),
        }
    }

    /// Refuses a grid of more than [`MAX_GRID_RUNS`] runs, counted from the
    /// lists' lengths before anything is expanded.
    fn grid_size(&self, hp: &Hyperparameters, table_span: &Range<usize>) -> Result<(), SpecError> {
        let len = |d: &Domain| match d {
            Domain::Values(v) => v.len() as u128,
            Domain::Uniform(..) | Domain::LogUniform(..) => 1,
        };
        let count: u128 = hp.iter().map(|a| len(&a.domain)).product();
        if count <= u128::from(MAX_GRID_RUNS) {
            return Ok(());
        }
        let factors: Vec<String> =
            hp.iter().filter(|a| len(&a.domain) > 1).map(|a| format!("{} {}", len(&a.domain), a.name)).collect();
        Err(self.error(
            table_span,
            "hyperparameters",
            format!("the grid has {count} runs ({}), more than the limit of {MAX_GRID_RUNS}", factors.join(" × ")),
            "list fewer values, or sample the space with `strategy = \"random\"` and `runs = 1000` (at most) under [search]",
        ))
    }
}

/// Whether every number in a written value (a list, a single value, a
/// distribution's bounds) is a TOML integer.
fn all_integers(v: &toml::Value) -> bool {
    match v {
        toml::Value::Float(_) => false,
        toml::Value::Array(items) => items.iter().all(all_integers),
        toml::Value::Table(t) => t.values().all(all_integers),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use crate::space::{self, Kind};
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn unknown_key_names_the_line_and_the_key() {
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbatch_sise = 3"));
        assert_eq!(e.line, Some(14));
        // Was serde's "unknown field `batch_sise`, expected one of ...":
        // now the provider's declarations, with the names it accepts.
        assert_eq!(e.message, "the local provider does not accept `batch_sise`", "{e}");
        assert!(e.hint.as_deref().unwrap().contains("n_epochs, learning_rate_multiplier, batch_size, seed"), "{e}");
        assert!(e.to_string().starts_with("sweeps/x.toml:14: "), "{e}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let e = err(&GOOD.replace("n_epochs = [1, 3, 8]", "n_epochs = [1, \"three\"]"));
        assert_eq!(e.line, Some(11));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.n_epochs"));
        assert!(e.message.contains("expected a whole number"), "{e}");
    }

    #[test]
    fn negative_multiplier_is_rejected() {
        let e = err(&GOOD.replace("[0.1, 1.0, 10.0]", "[0.1, -1.0]"));
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("greater than 0"), "{e}");
    }

    #[test]
    fn empty_list_is_rejected() {
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = []"));
        assert_eq!(e.line, Some(13));
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn out_of_range_epochs_are_rejected() {
        let e = err(&GOOD.replace("[1, 3, 8]", "[0, 3]"));
        assert!(e.to_string().contains("from 1 to 50"), "{e}");
    }

    #[test]
    fn missing_hyperparameter_is_named() {
        let e = err(&GOOD.replace("batch_size = [4, 32]\n", ""));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.batch_size"));
    }

    #[test]
    fn random_search_takes_distributions() {
        let s = parse_str(
            &GOOD
                .replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 5")
                .replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"),
        )
        .unwrap();
        assert_eq!(s.search, Search::Random { runs: 5 });
        assert_eq!(*s.hyperparameters.domain("learning_rate_multiplier"), Domain::LogUniform(0.05, 20.0));
    }

    #[test]
    fn grid_refuses_distributions() {
        let e = err(&GOOD.replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"));
        assert!(e.message.contains("grid search needs a list"), "{e}");
    }

    #[test]
    fn scalar_is_a_single_value() {
        let s = parse_str(&GOOD.replace("[4, 32]", "16")).unwrap();
        assert_eq!(*s.hyperparameters.domain("batch_size"), Domain::Values(vec![Some(16.0)]));
    }

    #[test]
    fn auto_is_a_value_but_not_for_seeds() {
        let s = parse_str(&GOOD.replace("[1, 3, 8]", "[\"auto\", 3]")).unwrap();
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![None, Some(3.0)]));
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nseed = [\"auto\"]"));
        assert!(e.message.contains("cannot be \"auto\""), "{e}");
    }

    #[test]
    fn a_grid_over_the_limit_is_refused_before_it_is_expanded() {
        let list = |n: usize| format!("[{}]", (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
        // 50 × 100 × 200 × 1000 = 10^9 runs: counted, never expanded.
        let huge = GOOD
            .replace("n_epochs = [1, 3, 8]", &format!("n_epochs = {}", list(50)))
            .replace(
                "learning_rate_multiplier = [0.1, 1.0, 10.0]",
                &format!("learning_rate_multiplier = {}", list(100)),
            )
            .replace("batch_size = [4, 32]", &format!("batch_size = {}\nseed = {}", list(200), list(1000)));
        let e = err(&huge);
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("hyperparameters")), "{e}");
        assert!(
            e.message.contains(
                "the grid has 1000000000 runs (50 n_epochs × 100 learning_rate_multiplier × 200 batch_size × 1000 seed), \
                 more than the limit of 10000"
            ),
            "{e}"
        );
        assert!(e.hint.as_deref().unwrap().contains("strategy = \"random\""), "{e}");
        // Exactly at the limit is fine; one more list entry is not.
        let at = GOOD.replace("n_epochs = [1, 3, 8]", &format!("n_epochs = {}", list(50))).replace(
            "learning_rate_multiplier = [0.1, 1.0, 10.0]",
            &format!("learning_rate_multiplier = {}", list(100)),
        );
        assert!(parse_str(&at).is_ok());
        assert!(err(&at.replace("batch_size = [4, 32]", "batch_size = [4, 32, 64]")).message.contains("15000 runs"));
        // Halving counts its first rung; random search is capped by `runs`.
        let halving = at
            .replace("strategy = \"grid\"", "strategy = \"successive_halving\"\nmax_epochs = 3")
            .replace(&format!("n_epochs = {}\n", list(50)), "")
            .replace("batch_size = [4, 32]", &format!("batch_size = {}", list(101)));
        assert!(
            err(&halving).message.contains("the grid has 10100 runs (100 learning_rate_multiplier × 101 batch_size)")
        );
        let random = huge.replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 10");
        assert!(parse_str(&random).is_ok());
    }

    #[test]
    fn a_value_listed_twice_is_found_in_a_long_list() {
        // 300,000 values: found by a set, not by comparing every pair.
        let values: Vec<String> = (1..=300_000).map(|i| format!("{}.5", i)).collect();
        let text = GOOD.replace(
            "learning_rate_multiplier = [0.1, 1.0, 10.0]",
            &format!("learning_rate_multiplier = [{}, 7.5]", values.join(", ")),
        );
        let start = std::time::Instant::now();
        let e = err(&text);
        eprintln!("300,001 values checked for duplicates in {:.2}s", start.elapsed().as_secs_f64());
        assert_eq!(e.key.as_deref(), Some("hyperparameters.learning_rate_multiplier"));
        assert!(e.message.contains("7.5 is listed twice"), "{e}");
        // An integer and the same float are one value.
        assert!(err(&GOOD.replace("[0.1, 1.0, 10.0]", "[0.1, 1.0, 10.0, 1]")).message.contains("1 is listed twice"));
        assert!(err(&GOOD.replace("[1, 3, 8]", "[1, \"auto\", 3, \"auto\"]")).message.contains("auto is listed twice"));
    }

    /// GOOD for the openai provider.
    fn openai() -> String {
        GOOD.replace("provider = \"local\"", "provider = \"openai\"").replace("local/ngram", "gpt-4.1-mini-2025-04-14")
    }

    #[test]
    fn a_name_the_provider_does_not_declare_is_refused_with_the_accepted_names() {
        let text = openai().replace("batch_size = [4, 32]", "batch_size = [4, 32]\nlora_r = [8]");
        let e = err(&text);
        assert_eq!(
            e.to_string(),
            "sweeps/x.toml:14: `hyperparameters.lora_r`: the openai provider does not accept `lora_r`\n  \
             hint: remove `lora_r`; the openai provider accepts n_epochs, learning_rate_multiplier, batch_size, seed"
        );
        // The first one written is named, wherever it sorts.
        let two = openai().replace("n_epochs = [1, 3, 8]", "zeta = 1\nn_epochs = [1, 3, 8]\nalpha = 2");
        let e = err(&two);
        assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("hyperparameters.zeta")), "{e}");
        // A table under [hyperparameters] is a name too.
        let e = err(&format!("{}\n[hyperparameters.gamma]\nuniform = [0, 1]\n", openai()));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.gamma"), "{e}");
        assert!(e.message.contains("does not accept `gamma`"), "{e}");
    }

    #[test]
    fn beta_is_a_name_of_dpo_sweeps_only() {
        let dpo = |provider: &str, hp: &str| {
            GOOD.replace("provider = \"local\"", &format!("provider = \"{provider}\"\nmethod = \"dpo\""))
                .replace("batch_size = [4, 32]", &format!("batch_size = [4, 32]\n{hp}"))
        };
        // The local provider takes it (and ignores it); OpenAI and Azure send it; it is an axis.
        let s = parse_str(&dpo("local", "beta = [0.1, \"auto\", 2]")).unwrap();
        assert_eq!(s.method, Method::Dpo);
        assert_eq!(*s.hyperparameters.domain("beta"), Domain::Values(vec![Some(0.1), None, Some(2.0)]));
        let s = parse_str(&dpo("openai", "beta = 0.5").replace("local/ngram", "gpt-4.1-mini-2025-04-14")).unwrap();
        assert_eq!(*s.hyperparameters.domain("beta"), Domain::Values(vec![Some(0.5)]));
        // Unwritten, it is auto; an SFT sweep has no such axis.
        let s = parse_str(&dpo("local", "")).unwrap();
        assert_eq!(s.hyperparameters.get("beta").map(|a| a.written), Some(false));
        assert!(parse_str(GOOD).unwrap().hyperparameters.get("beta").is_none());
        // Out of (0, 2].
        for bad in ["0", "0.0", "2.5", "-1"] {
            let e = err(&dpo("local", &format!("beta = [{bad}]")));
            assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("hyperparameters.beta")), "{e}");
            assert!(e.message.contains("is not allowed"), "{bad}: {e}");
        }
        // In an SFT sweep: refused, with the way to a DPO sweep.
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nbeta = [0.1]"));
        assert_eq!(
            e.to_string(),
            "sweeps/x.toml:14: `hyperparameters.beta`: `beta` is a hyperparameter of dpo sweeps, and this sweep is \
             sft\n  hint: set `method = \"dpo\"` at the top of the sweep file (its training file must hold \
             preference pairs), or remove `beta`"
        );
        // An unknown method names the key and the choices.
        let e = err(&GOOD.replace("provider = \"local\"", "provider = \"local\"\nmethod = \"rlhf\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("method")), "{e}");
        assert!(e.to_string().contains("sft") && e.to_string().contains("dpo"), "{e}");
        // Together: `beta` is its `dpo_beta`; Together's own name is pointed at ours; `train_on_inputs` is SFT's.
        let together = |hp: &str, table: &str| {
            crate::spec::together::tests::together(table)
                .replace("provider = \"together\"", "provider = \"together\"\nmethod = \"dpo\"")
                .replace("lora_r = [8, 32]", &format!("lora_r = [8, 32]\n{hp}"))
        };
        let s = parse_str(&together("beta = [0.1, 0.5]", "")).unwrap();
        assert_eq!(*s.hyperparameters.domain("beta"), Domain::Values(vec![Some(0.1), Some(0.5)]));
        let e = err(&together("dpo_beta = [0.1]", ""));
        assert_eq!(e.key.as_deref(), Some("hyperparameters.dpo_beta"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("write `beta` instead"), "{e}");
        let e = err(&together("", "[together]\ntrain_on_inputs = true\n"));
        assert_eq!(e.key.as_deref(), Some("together.train_on_inputs"), "{e}");
        // A trainer command is told no method.
        let e = err(&crate::spec::command::tests::CMD
            .replace("provider = \"command\"", "provider = \"command\"\nmethod = \"dpo\""));
        assert_eq!(e.key.as_deref(), Some("method"), "{e}");
    }

    #[test]
    fn the_local_provider_declares_its_names_the_same_way() {
        let names: Vec<&str> = space::accepted(ProviderKind::Local).iter().map(|p| p.name).collect();
        assert_eq!(names, ["n_epochs", "learning_rate_multiplier", "batch_size", "beta", "seed"]);
        let e = err(&GOOD.replace("batch_size = [4, 32]", "batch_size = [4, 32]\nlora_r = [8]"));
        assert_eq!((e.line, e.key.as_deref()), (Some(14), Some("hyperparameters.lora_r")), "{e}");
        assert_eq!(e.message, "the local provider does not accept `lora_r`");
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .ends_with("the local provider accepts n_epochs, learning_rate_multiplier, batch_size, seed")
        );
    }

    #[test]
    fn a_value_out_of_its_declared_range_or_type_is_refused() {
        for (from, to, line, message, hint) in [
            ("batch_size = [4, 32]", "batch_size = [4, 512]", 13, "512 is not allowed", "whole numbers from 1 to 256"),
            (
                "batch_size = [4, 32]",
                "batch_size = [2.5]",
                13,
                "expected a whole number, found float `2.5`",
                "batch_size = [1, 3, 8]",
            ),
            ("batch_size = [4, 32]", "batch_size = 4\nseed = [-1]", 14, "-1 is not allowed", "from 0 to 2147483647"),
            (
                "[0.1, 1.0, 10.0]",
                "[0]",
                12,
                "0 is not allowed: the value must be a number greater than 0",
                "[0.5, 1.0, 2.0]",
            ),
            ("[0.1, 1.0, 10.0]", "[inf]", 12, "inf is not allowed", "learning_rate_multiplier"),
            ("[0.1, 1.0, 10.0]", "[true]", 12, "expected a number, found boolean `true`", "learning_rate_multiplier"),
            ("[1, 3, 8]", "[51]", 11, "51 is not allowed", "from 1 to 50"),
        ] {
            for text in [GOOD.replace(from, to), openai().replace(from, to)] {
                let e = err(&text);
                assert_eq!(e.line, Some(line), "{to}: {e}");
                assert!(e.key.as_deref().unwrap().starts_with("hyperparameters."), "{to}: {e}");
                assert!(e.message.contains(message), "{to}: {e}");
                assert!(e.hint.as_deref().unwrap().contains(hint), "{to}: {e}");
            }
        }
    }

    #[test]
    fn every_accepted_name_is_in_the_result_in_the_providers_order() {
        for text in [GOOD.to_string(), openai()] {
            let s = parse_str(&text).unwrap();
            let axes: Vec<(&str, bool)> = s.hyperparameters.iter().map(|a| (a.name.as_str(), a.written)).collect();
            assert_eq!(
                axes,
                [("n_epochs", true), ("learning_rate_multiplier", true), ("batch_size", true), ("seed", false)]
            );
            assert_eq!(
                s.hyperparameters.written().collect::<Vec<_>>(),
                ["n_epochs", "learning_rate_multiplier", "batch_size"]
            );
            assert_eq!(s.hyperparameters.get("seed").unwrap().kind, Kind::Int);
            assert_eq!(*s.hyperparameters.domain("lora_r"), Domain::Values(vec![None]));
        }
    }
}
