//! The `[search]` table: the strategy (grid, random, successive halving)
//! with its settings, and the seed replicates of the leaders.

use crate::space::{N_EPOCHS_RANGE, SEED_RANGE};

use super::error::{Cx, SpecError};
use super::raw::{RawSearch, Strategy};
use super::{Halving, Replicates, Search};

impl Cx<'_> {
    /// The strategy and its settings; also refuses the keys that belong to
    /// another strategy.
    pub(super) fn search(&self, s: &RawSearch) -> Result<Search, SpecError> {
        let strategy = s.strategy.as_ref().map_or(Strategy::Grid, |v| *v.get_ref());
        if strategy != Strategy::Random
            && let Some(runs) = &s.runs
        {
            return Err(self.at(
                runs,
                "search.runs",
                "`runs` only applies to random search".into(),
                "remove `runs`, or set `strategy = \"random\"`",
            ));
        }
        let halving_keys = [("eta", &s.eta), ("min_epochs", &s.min_epochs), ("max_epochs", &s.max_epochs)];
        if strategy != Strategy::SuccessiveHalving
            && let Some((name, v)) = halving_keys.iter().find_map(|(name, v)| v.as_ref().map(|v| (name, v)))
        {
            return Err(self.at(
                v,
                &format!("search.{name}"),
                format!("`{name}` only applies to successive halving"),
                &format!("remove `{name}`, or set `strategy = \"successive_halving\"`"),
            ));
        }
        match strategy {
            Strategy::Grid => Ok(Search::Grid),
            Strategy::Random => match &s.runs {
                None => Err(SpecError {
                    path: self.path.to_path_buf(),
                    line: s.strategy.as_ref().map(|v| self.line_of(v.span().start)),
                    key: Some("search.runs".into()),
                    message: "random search needs the number of runs".into(),
                    hint: Some("add `runs = 8` (any whole number from 1 to 1000) under [search]".into()),
                }),
                Some(runs) => Ok(Search::Random { runs: self.int_in(runs, "search.runs", (1.0, 1000.0))? as u32 }),
            },
            Strategy::SuccessiveHalving => self.halving(s).map(Search::SuccessiveHalving),
        }
    }

    /// The settings of `strategy = "successive_halving"`.
    fn halving(&self, s: &RawSearch) -> Result<Halving, SpecError> {
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
        Ok(Halving { eta, min_epochs, max_epochs })
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

#[cfg(test)]
mod tests {
    use crate::spec::tests::*;
    use crate::spec::*;

    #[test]
    fn a_halving_sweep_parses_and_its_first_rung_is_min_epochs() {
        let s = parse_str(&halving("eta = 2\nmin_epochs = 2\nmax_epochs = 16")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 2, min_epochs: 2, max_epochs: 16 }));
        assert_eq!(*s.hyperparameters.domain("n_epochs"), Domain::Values(vec![Some(2.0)]));
        assert_eq!(*s.hyperparameters.domain("batch_size"), Domain::Values(vec![Some(4.0), Some(32.0)]));
        assert!(!s.epochs_from_checkpoints);
        let s = parse_str(&halving("max_epochs = 9")).unwrap();
        assert_eq!(s.search, Search::SuccessiveHalving(Halving { eta: 3, min_epochs: 1, max_epochs: 9 }));
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
        let e = err(&halving("max_epochs = 8\nruns = 4"));
        assert_eq!((e.line, e.key.as_deref()), (Some(11), Some("search.runs")));
        assert!(e.message.contains("only applies to random search"), "{e}");
        let e = err(&halving("max_epochs = 8").replace("[0.1, 1.0, 10.0]", "{ log_uniform = [0.05, 20] }"));
        assert_eq!((e.line, e.key.as_deref()), (Some(12), Some("hyperparameters.learning_rate_multiplier")));
        assert!(e.message.contains("successive halving searches a grid: it needs a list of values"), "{e}");
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
