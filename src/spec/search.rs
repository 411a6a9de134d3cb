//! The `[search]` table: the strategy (grid, random, successive halving,
//! Bayesian, asynchronous successive halving) with its settings, and the
//! seed replicates of the leaders.

use crate::space::{N_EPOCHS_RANGE, SEED_RANGE};

use super::error::{Cx, SpecError};
use super::raw::{RawSearch, Strategy};
use super::{Halving, Replicates, Search};

impl Cx<'_> {
    /// The strategy and its settings; also refuses the keys that belong to
    /// another strategy.
    pub(super) fn search(&self, s: &RawSearch) -> Result<Search, SpecError> {
        let strategy = s.strategy.as_ref().map_or(Strategy::Grid, |v| *v.get_ref());
        let halving = matches!(strategy, Strategy::SuccessiveHalving | Strategy::Asha);
        if strategy == Strategy::Grid
            && let Some(runs) = &s.runs
        {
            return Err(self.at(
                runs,
                "search.runs",
                "`runs` does not apply to grid search: the grid has as many runs as combinations".into(),
                "remove `runs`, or set `strategy = \"random\"` (or \"bayes\")",
            ));
        }
        let halving_keys = [("eta", &s.eta), ("min_epochs", &s.min_epochs), ("max_epochs", &s.max_epochs)];
        if !halving && let Some((name, v)) = halving_keys.iter().find_map(|(name, v)| v.as_ref().map(|v| (name, v))) {
            return Err(self.at(
                v,
                &format!("search.{name}"),
                format!("`{name}` only applies to successive halving (`successive_halving` or `asha`)"),
                &format!("remove `{name}`, or set `strategy = \"successive_halving\"` (or \"asha\")"),
            ));
        }
        if strategy != Strategy::Asha
            && let Some(v) = &s.sampler
        {
            return Err(self.at(
                v,
                "search.sampler",
                "`sampler` only applies to asynchronous successive halving".into(),
                "remove `sampler`, or set `strategy = \"asha\"`",
            ));
        }
        let bayes_sampler = match &s.sampler {
            None => false,
            Some(v) if v.get_ref() == "bayes" => true,
            Some(v) => {
                return Err(self.at(
                    v,
                    "search.sampler",
                    format!("unknown sampler `{}`", v.get_ref()),
                    "write `sampler = \"bayes\"` (new configurations proposed from the results so far), or remove \
                     `sampler` (the grid, or `runs` seeded draws)",
                ));
            }
        };
        let uses_startup = strategy == Strategy::Bayes || bayes_sampler;
        if !uses_startup && let Some(v) = &s.startup {
            return Err(self.at(
                v,
                "search.startup",
                "`startup` only applies to Bayesian search".into(),
                "remove `startup`, or set `strategy = \"bayes\"` (or `sampler = \"bayes\"` with `strategy = \"asha\"`)",
            ));
        }
        let runs = match &s.runs {
            None => None,
            Some(runs) => Some(self.int_in(runs, "search.runs", (1.0, 1000.0))? as u32),
        };
        let needs_runs = |what: &str| SpecError {
            path: self.path.to_path_buf(),
            line: s.strategy.as_ref().map(|v| self.line_of(v.span().start)),
            key: Some("search.runs".into()),
            message: format!("{what} needs the number of runs"),
            hint: Some("add `runs = 8` (any whole number from 1 to 1000) under [search]".into()),
        };
        let startup = |runs: u32| -> Result<u32, SpecError> {
            let Some(v) = &s.startup else { return Ok(default_startup(runs)) };
            let k = self.int_in(v, "search.startup", (1.0, 1000.0))? as u32;
            if k > runs {
                return Err(self.at(
                    v,
                    "search.startup",
                    format!("`startup` ({k}) is more than `runs` ({runs})"),
                    &format!("lower `startup` to at most {runs}, or raise `runs`"),
                ));
            }
            Ok(k)
        };
        match strategy {
            Strategy::Grid => Ok(Search::Grid),
            Strategy::Random => match runs {
                None => Err(needs_runs("random search")),
                Some(runs) => Ok(Search::Random { runs }),
            },
            Strategy::Bayes => {
                if let Some(v) = &s.epochs_from_checkpoints {
                    return Err(self.at(
                        v,
                        "search.epochs_from_checkpoints",
                        "`epochs_from_checkpoints` does not apply to Bayesian search".into(),
                        "remove the key: each proposed configuration trains its own job",
                    ));
                }
                let runs = runs.ok_or_else(|| needs_runs("Bayesian search"))?;
                Ok(Search::Bayes { runs, startup: startup(runs)? })
            }
            Strategy::SuccessiveHalving => Ok(Search::SuccessiveHalving(self.halving(s, runs)?)),
            Strategy::Asha => {
                if bayes_sampler && runs.is_none() {
                    return Err(needs_runs("`sampler = \"bayes\"`"));
                }
                let halving = self.halving(s, runs)?;
                let bayes_startup = if bayes_sampler { Some(startup(runs.unwrap_or(1))?) } else { None };
                Ok(Search::Asha { halving, bayes_startup })
            }
        }
    }

    /// The settings of `strategy = "successive_halving"` (and `"asha"`).
    fn halving(&self, s: &RawSearch, draws: Option<u32>) -> Result<Halving, SpecError> {
        if let Some(v) = &s.epochs_from_checkpoints {
            return Err(self.at(
                v,
                "search.epochs_from_checkpoints",
                "`epochs_from_checkpoints` does not apply to successive halving".into(),
                "remove the key: halving already continues training from each configuration's own model, rung by rung",
            ));
        }
        let eta = match &s.eta {
            None => 3,
            Some(v) => self.int_in(v, "search.eta", (2.0, 10.0))? as u32,
        };
        let min_epochs = match &s.min_epochs {
            None => 1,
            Some(v) => self.int_in(v, "search.min_epochs", N_EPOCHS_RANGE)? as u32,
        };
        let Some(max) = &s.max_epochs else {
            return Err(SpecError {
                path: self.path.to_path_buf(),
                line: s.strategy.as_ref().map(|v| self.line_of(v.span().start)),
                key: Some("search.max_epochs".into()),
                message: "successive halving needs the epochs of its last rung".into(),
                hint: Some(
                    "add `max_epochs = 3` (a whole number above `min_epochs`, at most 50) under [search]".into(),
                ),
            });
        };
        let max_epochs = self.int_in(max, "search.max_epochs", N_EPOCHS_RANGE)? as u32;
        if min_epochs >= max_epochs {
            return Err(self.at(
                max,
                "search.max_epochs",
                format!(
                    "`max_epochs` ({max_epochs}) must be greater than `min_epochs` ({min_epochs}): \
                     otherwise there is only one rung and nothing to halve"
                ),
                "raise `max_epochs` above `min_epochs`, or use `strategy = \"grid\"` with `n_epochs` under [hyperparameters]",
            ));
        }
        Ok(Halving { eta, min_epochs, max_epochs, draws })
    }

    /// `replicate_top` and `replicate_seeds`, which need each other.
    pub(super) fn replicates(&self, s: &RawSearch, seed: u64) -> Result<Option<Replicates>, SpecError> {
        let (top, list) = match (&s.replicate_top, &s.replicate_seeds) {
            (None, None) => return Ok(None),
            (Some(top), None) => {
                return Err(self.at(
                    top,
                    "search.replicate_seeds",
                    "`replicate_top` needs the seeds to train the leading configurations with again".into(),
                    "add `replicate_seeds = [1, 2]` under [search], or remove `replicate_top`",
                ));
            }
            (None, Some(list)) => {
                return Err(self.at(
                    list,
                    "search.replicate_top",
                    "`replicate_seeds` needs the number of leading configurations to train again".into(),
                    "add `replicate_top = 2` under [search], or remove `replicate_seeds`",
                ));
            }
            (Some(top), Some(list)) => (top, list),
        };
        let top = self.int_in(top, "search.replicate_top", (1.0, 100.0))? as u32;
        if list.get_ref().is_empty() {
            return Err(self.at(
                list,
                "search.replicate_seeds",
                "the list is empty".into(),
                "give at least one seed, e.g. `replicate_seeds = [1, 2]`",
            ));
        }
        let mut seeds = Vec::with_capacity(list.get_ref().len());
        let mut seen = std::collections::HashSet::with_capacity(list.get_ref().len());
        for v in list.get_ref() {
            let x = self.int_in(v, "search.replicate_seeds", SEED_RANGE)?;
            if x == seed {
                return Err(self.at(
                    v,
                    "search.replicate_seeds",
                    format!("{x} is the sweep's `seed`: the configurations were trained with it already"),
                    &format!("use seeds other than {seed} (the sweep's `seed`, 0 when not written)"),
                ));
            }
            if !seen.insert(x) {
                return Err(self.at(
                    v,
                    "search.replicate_seeds",
                    format!("{x} is listed twice"),
                    "list each seed once",
                ));
            }
            seeds.push(x);
        }
        Ok(Some(Replicates { top, seeds }))
    }
}

/// Bayesian search's random configurations before the model, when `startup`
/// is not written: a third of `runs`, at least 4 (at most `runs`).
fn default_startup(runs: u32) -> u32 {
    runs.min((runs / 3).max(4))
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn a_halving_sweep_parses_and_its_first_rung_is_min_epochs() {
        let s = parse_str(&halving("eta = 2\nmin_epochs = 2\nmax_epochs = 16")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 2, min_epochs: 2, max_epochs: 16, draws: None }));
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(2.0)]));
        assert_eq!(*s.hyperparameters.domain("batch_size"), Domain::Values(vec![Some(4.0), Some(32.0)]));
        assert!(!s.epochs_from_checkpoints);
        let s = parse_str(&halving("max_epochs = 9")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 3, min_epochs: 1, max_epochs: 9, draws: None }));
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(1.0)]));
    }

    #[test]
    fn an_unknown_strategy_lists_the_three() {
        let e = err(&GOOD.replace("\"grid\"", "\"hyperband\""));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.strategy")));
        assert!(e.message.contains("unknown strategy `hyperband`"), "{e}");
        let hint = e.hint.unwrap();
        for s in ["\"grid\"", "\"random\"", "\"successive_halving\""] {
            assert!(hint.contains(s), "{hint}");
        }
    }

    #[test]
    fn halving_needs_max_epochs() {
        let e = err(&halving("eta = 2"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.max_epochs")));
        assert!(e.message.contains("last rung"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("add `max_epochs = 3`"), "{e}");
    }

    #[test]
    fn halving_settings_are_range_checked() {
        for (keys, key, line) in [
            ("eta = 1\nmax_epochs = 8", "search.eta", 10),
            ("eta = 11\nmax_epochs = 8", "search.eta", 10),
            ("min_epochs = 0\nmax_epochs = 8", "search.min_epochs", 10),
            ("min_epochs = 51\nmax_epochs = 8", "search.min_epochs", 10),
            ("max_epochs = 0", "search.max_epochs", 10),
            ("eta = 2\nmax_epochs = 51", "search.max_epochs", 11),
        ] {
            let e = err(&halving(keys));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{keys}: {e}");
            assert!(e.message.contains("out of range"), "{e}");
            assert!(e.hint.as_deref().unwrap().starts_with("use a whole number from"), "{e}");
        }
        assert!(err(&halving("eta = 2.5\nmax_epochs = 8")).message.contains("invalid type"));
    }

    #[test]
    fn halving_needs_min_epochs_below_max_epochs() {
        for keys in ["min_epochs = 4\nmax_epochs = 4", "min_epochs = 5\nmax_epochs = 4", "max_epochs = 1"] {
            let e = err(&halving(keys));
            assert_eq!(e.key.as_deref(), Some("search.max_epochs"), "{e}");
            assert_eq!(e.line, Some(9 + keys.lines().count()), "{e}");
            assert!(e.message.contains("must be greater than `min_epochs`"), "{e}");
            let hint = e.hint.unwrap();
            assert!(hint.contains("raise `max_epochs`") && hint.contains("\"grid\""), "{hint}");
        }
    }

    #[test]
    fn halving_keys_only_apply_to_halving() {
        for key in ["eta = 2", "min_epochs = 1", "max_epochs = 8"] {
            let name = key.split(' ').next().unwrap();
            let e = err(&GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\n{key}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(10), Some(format!("search.{name}").as_str())), "{e}");
            assert!(e.message.contains("only applies to successive halving"), "{e}");
            assert!(e.hint.as_deref().unwrap().contains("strategy = \"successive_halving\""), "{e}");
            let e = err(&GOOD.replace("strategy = \"grid\"", &format!("strategy = \"random\"\nruns = 4\n{key}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(11), Some(format!("search.{name}").as_str())), "{e}");
        }
        // Without a [search] strategy, the grid is meant.
        let e = err(&GOOD.replace("strategy = \"grid\"", "max_epochs = 8"));
        assert_eq!((e.line, e.key.as_deref()), (Some(9), Some("search.max_epochs")));
    }

    #[test]
    fn halving_refuses_n_epochs_runs_and_distributions() {
        let e = err(&GOOD.replace("strategy = \"grid\"", "strategy = \"successive_halving\"\nmax_epochs = 8"));
        assert_eq!((e.line, e.key.as_deref()), (Some(12), Some("hyperparameters.n_epochs")));
        assert!(e.message.contains("sets the epochs rung by rung"), "{e}");
        assert_eq!(e.hint.as_deref(), Some("remove `n_epochs`; set `min_epochs` and `max_epochs` under [search]"));
        let e = err(&GOOD.replace("strategy = \"grid\"", "strategy = \"grid\"\nruns = 4"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.runs")));
        assert!(e.message.contains("does not apply to grid search"), "{e}");
        let e = err(&halving("max_epochs = 8").replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"));
        assert_eq!((e.line, e.key.as_deref()), (Some(12), Some("hyperparameters.learning_rate_multiplier")));
        assert!(e.message.contains("without `runs` searches a grid: it needs a list of values"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("add `runs = 27`"), "{e}");
        // With `runs`, the first rung is that many seeded draws from the space.
        let drawn = halving("max_epochs = 8\nruns = 5").replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }");
        let s = parse_str(&drawn).unwrap();
        assert_eq!(
            s.search,
            Search::SuccessiveHalving(Halving { eta: 3, min_epochs: 1, max_epochs: 8, draws: Some(5) })
        );
        assert_eq!(*s.hyperparameters.domain("learning_rate_multiplier"), Domain::LogUniform(0.05, 20.0));
    }

    /// GOOD as a search of `strategy` with the `[search]` lines `keys`, over a continuous learning rate.
    fn with(strategy: &str, keys: &str) -> String {
        let text = GOOD
            .replace("strategy = \"grid\"", &format!("strategy = \"{strategy}\"\n{keys}"))
            .replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }");
        // Halving sets the epochs itself.
        if strategy == "asha" { text.replace("n_epochs = [1, 3, 8]\n", "") } else { text }
    }

    #[test]
    fn a_bayesian_search_parses_with_its_runs_and_startup() {
        let s = parse_str(&with("bayes", "runs = 20\nstartup = 5")).unwrap();
        assert_eq!(s.search, Search::Bayes { runs: 20, startup: 5 });
        // n_epochs may be an axis, and startup defaults to a third of the runs, at least 4 (at most runs).
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(1.0), Some(3.0), Some(8.0)]));
        assert_eq!(parse_str(&with("bayes", "runs = 30")).unwrap().search, Search::Bayes { runs: 30, startup: 10 });
        assert_eq!(parse_str(&with("bayes", "runs = 6")).unwrap().search, Search::Bayes { runs: 6, startup: 4 });
        assert_eq!(parse_str(&with("bayes", "runs = 2")).unwrap().search, Search::Bayes { runs: 2, startup: 2 });
    }

    #[test]
    fn bayesian_and_asha_keys_are_checked() {
        for (text, line, key, message, hint) in [
            (with("bayes", ""), 9, "search.runs", "Bayesian search needs the number of runs", "add `runs = 8`"),
            (with("bayes", "runs = 0"), 10, "search.runs", "0 is out of range", "from 1 to 1000"),
            (with("bayes", "runs = 4\nstartup = 5"), 11, "search.startup", "(5) is more than `runs` (4)", "at most 4"),
            (with("bayes", "runs = 4\nstartup = 0"), 11, "search.startup", "0 is out of range", "from 1"),
            (with("random", "runs = 4\nstartup = 2"), 11, "search.startup", "only applies to Bayesian", "\"bayes\""),
            (
                with("bayes", "runs = 4\nsampler = \"bayes\""),
                11,
                "search.sampler",
                "only applies to asynchronous",
                "\"asha\"",
            ),
            (
                with("bayes", "runs = 4\nepochs_from_checkpoints = true"),
                11,
                "search.epochs_from_checkpoints",
                "does not apply to Bayesian search",
                "remove the key",
            ),
            (with("bayes", "runs = 4\neta = 3"), 11, "search.eta", "only applies to successive halving", "\"asha\""),
            (
                with("asha", "max_epochs = 8"),
                12,
                "hyperparameters.learning_rate_multiplier",
                "without `runs`",
                "runs = 27",
            ),
            (
                with("asha", "max_epochs = 8\nruns = 4\nsampler = \"tpe\""),
                12,
                "search.sampler",
                "unknown sampler `tpe`",
                "\"bayes\"",
            ),
            (
                with("asha", "max_epochs = 8\nsampler = \"bayes\""),
                9,
                "search.runs",
                "needs the number of runs",
                "add `runs = 8`",
            ),
            (
                with("asha", "max_epochs = 8\nruns = 4\nstartup = 2"),
                12,
                "search.startup",
                "only applies to Bayesian",
                "sampler",
            ),
            (with("asha", "runs = 4"), 9, "search.max_epochs", "last rung", "add `max_epochs = 3`"),
        ] {
            let e = err(&text);
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{text}: {e}");
        }
    }

    #[test]
    fn asha_parses_over_a_grid_draws_or_the_bayesian_sampler() {
        let grid = GOOD
            .replace("strategy = \"grid\"", "strategy = \"asha\"\nmax_epochs = 9")
            .replace("n_epochs = [1, 3, 8]\n", "");
        let s = parse_str(&grid).unwrap();
        let h = Halving { eta: 3, min_epochs: 1, max_epochs: 9, draws: None };
        assert_eq!(s.search, Search::Asha { halving: h, bayes_startup: None });
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(1.0)]));
        let bohb = with("asha", "eta = 2\nmax_epochs = 8\nruns = 12\nsampler = \"bayes\"\nstartup = 3");
        let h = Halving { eta: 2, min_epochs: 1, max_epochs: 8, draws: Some(12) };
        assert_eq!(parse_str(&bohb).unwrap().search, Search::Asha { halving: h, bayes_startup: Some(3) });
        assert_eq!(Search::Asha { halving: h, bayes_startup: None }.halving(), Some(&h));
    }

    #[test]
    fn epochs_from_checkpoints_is_a_flag_but_not_with_halving() {
        assert!(!parse_str(GOOD).unwrap().epochs_from_checkpoints);
        let with = |v: &str| {
            GOOD.replace("strategy = \"grid\"", &format!("strategy = \"grid\"\nepochs_from_checkpoints = {v}"))
        };
        assert!(parse_str(&with("true")).unwrap().epochs_from_checkpoints);
        assert!(!parse_str(&with("false")).unwrap().epochs_from_checkpoints);
        let random =
            GOOD.replace("strategy = \"grid\"", "strategy = \"random\"\nruns = 3\nepochs_from_checkpoints = true");
        assert!(parse_str(&random).unwrap().epochs_from_checkpoints);
        assert!(err(&with("\"yes\"")).message.contains("invalid type"));
        for v in ["true", "false"] {
            let e = err(&halving(&format!("max_epochs = 8\nepochs_from_checkpoints = {v}")));
            assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("search.epochs_from_checkpoints")));
            assert!(e.message.contains("does not apply to successive halving"), "{e}");
            let hint = e.hint.unwrap();
            assert!(hint.contains("remove the key") && hint.contains("own model"), "{hint}");
        }
    }

    #[test]
    fn replicates_parse_with_every_strategy() {
        assert_eq!(parse_str(GOOD).unwrap().replicates, None);
        let want = Some(Replicates { top: 3, seeds: vec![1, 2, 2_147_483_647] });
        let keys = "replicate_top = 3\nreplicate_seeds = [1, 2, 2147483647]";
        assert_eq!(parse_str(&search_keys(keys)).unwrap().replicates, want);
        assert_eq!(parse_str(&halving(&format!("max_epochs = 8\n{keys}"))).unwrap().replicates, want);
        let random = GOOD.replace("strategy = \"grid\"", &format!("strategy = \"random\"\nruns = 4\n{keys}"));
        assert_eq!(parse_str(&random).unwrap().replicates, want);
        // The sweep's seed defaults to 0, and 42 is then free.
        let s =
            parse_str(&search_keys("replicate_top = 1\nreplicate_seeds = [42]").replace("seed = 42\n", "")).unwrap();
        assert_eq!(s.replicates, Some(Replicates { top: 1, seeds: vec![42] }));
    }

    #[test]
    fn replicate_keys_need_each_other() {
        let e = err(&search_keys("replicate_top = 2"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_seeds")));
        assert!(e.hint.as_deref().unwrap().contains("add `replicate_seeds = [1, 2]`"), "{e}");
        let e = err(&search_keys("replicate_seeds = [1, 2]"));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_top")));
        assert!(e.hint.as_deref().unwrap().contains("add `replicate_top = 2`"), "{e}");
    }

    #[test]
    fn replicate_settings_are_checked() {
        for (keys, key, line, message, hint) in [
            (
                "replicate_top = 0\nreplicate_seeds = [1]",
                "search.replicate_top",
                10,
                "0 is out of range",
                "from 1 to 100",
            ),
            (
                "replicate_top = 101\nreplicate_seeds = [1]",
                "search.replicate_top",
                10,
                "101 is out of range",
                "from 1 to 100",
            ),
            ("replicate_top = 2\nreplicate_seeds = []", "search.replicate_seeds", 11, "empty", "at least one seed"),
            (
                "replicate_top = 2\nreplicate_seeds = [1, -1]",
                "search.replicate_seeds",
                11,
                "-1 is out of range",
                "from 0 to 2147483647",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [2147483648]",
                "search.replicate_seeds",
                11,
                "2147483648 is out of range",
                "from 0",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [\n  7,\n  8,\n  7,\n]",
                "search.replicate_seeds",
                14,
                "7 is listed twice",
                "each seed once",
            ),
            (
                "replicate_top = 2\nreplicate_seeds = [1, 42]",
                "search.replicate_seeds",
                11,
                "42 is the sweep's `seed`",
                "other than 42",
            ),
        ] {
            let e = err(&search_keys(keys));
            assert_eq!((e.line, e.key.as_deref()), (Some(line), Some(key)), "{keys}: {e}");
            assert!(e.message.contains(message), "{keys}: {e}");
            assert!(e.hint.as_deref().unwrap().contains(hint), "{keys}: {e}");
        }
        // Without `seed`, the sweep's seed is 0.
        let e = err(&search_keys("replicate_top = 2\nreplicate_seeds = [0, 1]").replace("seed = 42\n", ""));
        assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("search.replicate_seeds")));
        assert!(e.message.contains("0 is the sweep's `seed`"), "{e}");
        assert!(err(&search_keys("replicate_top = 2\nreplicate_seeds = [\"1\"]")).message.contains("invalid type"));
    }
}
