//! Expands a sweep into runs: grid or seeded random search, each run with a
//! stable id derived from everything that defines it. Pure: no I/O.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::spec::{Domain, Search, Sweep};

/// The hyperparameters of one run, in OpenAI's names; `None` is `"auto"`
/// (the provider chooses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunConfig {
    pub n_epochs: Option<u32>,
    pub batch_size: Option<u32>,
    pub learning_rate_multiplier: Option<f64>,
    pub seed: u64,
}

/// Shows a hyperparameter value, `auto` for `None`.
pub fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "auto".to_string(), |x| x.to_string())
}

/// What a run is trained on and where: part of the run id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataIdentity {
    pub training_sha256: String,
    pub validation_sha256: String,
    /// The server's base URL for a hosted provider (a model trained on one
    /// server is not on another); empty for the local provider.
    pub server: String,
}

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    pub run_id: String,
    pub config: RunConfig,
}

/// Expands `sweep` into its runs, in a stable order (grid: the order the
/// values are written, last key fastest; random: the order drawn). Points
/// that coincide are planned once.
pub fn expand(sweep: &Sweep, data: &DataIdentity) -> Vec<PlannedRun> {
    let hp = &sweep.hyperparameters;
    let configs: Vec<RunConfig> = match sweep.search {
        Search::Grid | Search::SuccessiveHalving(_) => {
            let mut out = Vec::new();
            for &n_epochs in values(&hp.n_epochs) {
                for &lr in values(&hp.learning_rate_multiplier) {
                    for &batch_size in values(&hp.batch_size) {
                        for &seed in values(&hp.seed) {
                            out.push(RunConfig {
                                n_epochs: n_epochs.map(|x| x as u32),
                                batch_size: batch_size.map(|x| x as u32),
                                learning_rate_multiplier: lr,
                                seed: seed.map_or(sweep.seed, |x| x as u64),
                            });
                        }
                    }
                }
            }
            out
        }
        Search::Random { runs } => {
            let mut rng = ChaCha8Rng::seed_from_u64(sweep.seed);
            (0..runs)
                .map(|_| RunConfig {
                    n_epochs: draw(&mut rng, &hp.n_epochs, true).map(|x| x as u32),
                    learning_rate_multiplier: draw(&mut rng, &hp.learning_rate_multiplier, false),
                    batch_size: draw(&mut rng, &hp.batch_size, true).map(|x| x as u32),
                    seed: draw(&mut rng, &hp.seed, true).map_or(sweep.seed, |x| x as u64),
                })
                .collect()
        }
    };
    let mut seen = BTreeSet::new();
    configs
        .into_iter()
        .filter_map(|config| {
            let run_id = run_id(sweep, data, &config);
            seen.insert(run_id.clone()).then_some(PlannedRun { run_id, config })
        })
        .collect()
}

/// The stable id of a run: a hash of provider (and server), base model,
/// data and hyperparameters. The sweep's name takes no part, so a renamed or
/// extended sweep finds its finished runs again.
pub fn run_id(sweep: &Sweep, data: &DataIdentity, c: &RunConfig) -> String {
    let canonical = format!(
        "ftsweep-run-v1\nprovider={}\nbase_model={}\ntraining={}\nvalidation={}\nn_epochs={}\nbatch_size={}\nlearning_rate_multiplier={}\nseed={}\n",
        sweep.provider.as_str(),
        sweep.base_model,
        data.training_sha256,
        data.validation_sha256,
        show(c.n_epochs),
        show(c.batch_size),
        show(c.learning_rate_multiplier),
        c.seed,
    );
    let canonical = if data.server.is_empty() { canonical } else { format!("{canonical}server={}\n", data.server) };
    let digest = Sha256::digest(canonical.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("r-{hex}")
}

fn values(d: &Domain) -> &[Option<f64>] {
    match d {
        Domain::Values(v) => v,
        // The parser only allows distributions with random search.
        Domain::Uniform(..) | Domain::LogUniform(..) => &[],
    }
}

/// Draws one value; floats are rounded to 3 significant digits so that ids
/// and tables stay readable.
fn draw(rng: &mut ChaCha8Rng, d: &Domain, integer: bool) -> Option<f64> {
    let x = match d {
        Domain::Values(v) => return v[rng.random_range(0..v.len())],
        Domain::Uniform(lo, hi) if integer => rng.random_range(*lo as i64..=*hi as i64) as f64,
        Domain::Uniform(lo, hi) => rng.random_range(*lo..*hi),
        Domain::LogUniform(lo, hi) => (rng.random_range(lo.ln()..hi.ln())).exp(),
    };
    Some(if integer { x.round() } else { round_significant(x, 3) })
}

fn round_significant(x: f64, digits: usize) -> f64 {
    // Scientific notation with `digits - 1` decimals rounds to `digits`
    // significant digits; parsing it back gives the nearest f64, which prints
    // as the short decimal.
    format!("{:.*e}", digits.saturating_sub(1), x).parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;
    use std::path::Path;

    fn sweep(extra: &str, hp: &str) -> Sweep {
        let text = format!(
            "name = \"t\"\nbase_model = \"local/ngram\"\ntraining_file = \"a.jsonl\"\nvalidation_file = \"b.jsonl\"\nseed = 7\n{extra}\n[hyperparameters]\n{hp}\n"
        );
        spec::parse(Path::new("s.toml"), &text).unwrap()
    }

    fn data() -> DataIdentity {
        DataIdentity { training_sha256: "aa".into(), validation_sha256: "bb".into(), server: String::new() }
    }

    const HP: &str = "n_epochs = [1, 3]\nlearning_rate_multiplier = [0.1, 1.0, 10.0]\nbatch_size = [4, 32]";

    #[test]
    fn grid_is_the_cartesian_product_in_written_order() {
        let runs = expand(&sweep("", HP), &data());
        assert_eq!(runs.len(), 12);
        assert_eq!(
            runs[0].config,
            RunConfig { n_epochs: Some(1), batch_size: Some(4), learning_rate_multiplier: Some(0.1), seed: 7 }
        );
        assert_eq!(runs[1].config.batch_size, Some(32));
        assert_eq!(
            runs[11].config,
            RunConfig { n_epochs: Some(3), batch_size: Some(32), learning_rate_multiplier: Some(10.0), seed: 7 }
        );
        let ids: BTreeSet<_> = runs.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids.len(), 12, "ids are distinct");
    }

    #[test]
    fn ids_are_stable_and_extension_keeps_them() {
        let a = expand(&sweep("", HP), &data());
        let b = expand(&sweep("", &HP.replace("[1, 3]", "[1, 3, 8]")), &data());
        assert_eq!(b.len(), 18);
        for run in &a {
            assert!(b.contains(run), "{} survives the extension", run.run_id);
        }
        // A known value pins the id scheme: changing it orphans every stored run.
        assert_eq!(a[0].run_id.len(), 12);
        assert_eq!(a, expand(&sweep("", HP), &data()));
    }

    #[test]
    fn ids_depend_on_data_and_seed_but_not_on_the_name() {
        let s = sweep("", HP);
        let c = expand(&s, &data())[0].config;
        let other_data = DataIdentity { training_sha256: "ab".into(), ..data() };
        assert_ne!(run_id(&s, &data(), &c), run_id(&s, &other_data, &c));
        let other_server = DataIdentity { server: "https://example.com/v1".into(), ..data() };
        assert_ne!(run_id(&s, &data(), &c), run_id(&s, &other_server, &c));
        assert_ne!(run_id(&s, &data(), &c), run_id(&s, &data(), &RunConfig { seed: 8, ..c }));
        let renamed = Sweep { name: "other".into(), ..s.clone() };
        assert_eq!(run_id(&s, &data(), &c), run_id(&renamed, &data(), &c));
    }

    #[test]
    fn random_search_is_seeded_and_within_bounds() {
        let hp = "n_epochs = { uniform = [1, 10] }\nlearning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [4, 8, 16]";
        let s = sweep("[search]\nstrategy = \"random\"\nruns = 20", hp);
        let a = expand(&s, &data());
        assert_eq!(a, expand(&s, &data()), "same seed, same runs");
        assert!(a.len() >= 18, "20 draws rarely coincide: {}", a.len());
        for r in &a {
            assert!((1..=10).contains(&r.config.n_epochs.unwrap()));
            assert!((0.05..=20.0).contains(&r.config.learning_rate_multiplier.unwrap()));
            assert!([4, 8, 16].contains(&r.config.batch_size.unwrap()));
        }
        let reseeded = Sweep { seed: 8, ..s };
        assert_ne!(a, expand(&reseeded, &data()), "another seed, other runs");
    }

    #[test]
    fn auto_takes_part_in_the_grid_and_the_id() {
        let runs = expand(&sweep("", &HP.replace("[1, 3]", "[\"auto\", 3]")), &data());
        assert_eq!(runs[0].config.n_epochs, None);
        let fixed = expand(&sweep("", HP), &data());
        assert_ne!(runs[0].run_id, fixed[0].run_id, "auto is not 1");
        assert_eq!(runs[6].run_id, fixed[6].run_id, "the 3-epoch runs are the same");
    }

    #[test]
    fn rounding_keeps_three_significant_digits() {
        assert_eq!(round_significant(0.123456, 3), 0.123);
        assert_eq!(round_significant(12.3456, 3), 12.3);
        assert_eq!(round_significant(0.30000000000000004, 3), 0.3);
    }
}
