//! Asynchronous successive halving on the real binary, local provider: its
//! keys' errors; with one slot, the runs the rule gives (a configuration in
//! the top 1/eta of its rung's results so far continues at once, before the
//! rung has ended); a restart plans no extra run.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{Workspace, assert_refused, query, sweep_toml};

fn asha_toml(name: &str, keys: &str, hp: &str) -> String {
    sweep_toml(name, hp)
        .replace("strategy = \"grid\"", &format!("strategy = \"asha\"\n{keys}"))
        .replace("max_concurrent = 2", "max_concurrent = 1")
}

const GRID: &str = "learning_rate_multiplier = [0.3, 1.0, 3.0]\nbatch_size = [8, 32]";

#[test]
fn asha_keys_are_refused_with_the_key_line_and_fix() {
    let ws = Workspace::new();
    let p = ws.write("s.toml", &asha_toml("a", "eta = 3", GRID));
    assert_refused(&ws, &p, &["s.toml:9", "search.max_epochs", "last rung", "max_epochs = 3"]);
    let p = ws.write("s.toml", &asha_toml("a", "max_epochs = 3\nruns = 4\nsampler = \"tpe\"", GRID));
    assert_refused(&ws, &p, &["s.toml:12", "search.sampler", "unknown sampler `tpe`", "sampler = \"bayes\""]);
    let hp = "learning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [8, 32]";
    let p = ws.write("s.toml", &asha_toml("a", "max_epochs = 3", hp));
    assert_refused(&ws, &p, &["hyperparameters.learning_rate_multiplier", "without `runs`", "runs = 27"]);
    let p = ws.write("s.toml", &asha_toml("a", "max_epochs = 3", &format!("n_epochs = [1, 2]\n{GRID}")));
    assert_refused(&ws, &p, &["hyperparameters.n_epochs", "rung by rung"]);
}

/// The search's runs by position: (run id, rung, parent, score, valid loss).
fn rows(ws: &Workspace, name: &str) -> Vec<(String, u64, String, f64, f64)> {
    let board = ws.json(&["leaderboard", name, "--json"]);
    let by_id: BTreeMap<String, &Value> = board
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "run")
        .map(|r| (r["run_id"].as_str().unwrap().to_string(), r))
        .collect();
    query(&ws.db(), "SELECT run_id FROM sweep_runs WHERE active = 1 ORDER BY position")
        .into_iter()
        .map(|id| {
            let r = by_id[&id];
            let parent = r["source_run"].as_str().unwrap_or("").to_string();
            (id, r["rung"].as_u64().unwrap(), parent, r["score"].as_f64().unwrap(), r["valid_loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn asha_promotes_as_soon_as_a_run_is_in_its_rungs_top_third_and_a_restart_plans_no_more() {
    let ws = Workspace::new();
    ws.write("s.toml", &asha_toml("a", "eta = 3\nmin_epochs = 1\nmax_epochs = 3", GRID));
    let (code, plan, err) = ws.run(&["plan", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("asynchronous"), "{plan}");
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let got = rows(&ws, "a");
    // One slot: each decision follows the end of the run before. After 3 and
    // after 6 first-rung results, one more is in the top third: it continues.
    assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 0, 0, 1, 0, 0, 0, 1], "{got:?}");
    let rank = |members: &[&(String, u64, String, f64, f64)]| {
        let mut m = members.to_vec();
        m.sort_by(|a, b| b.3.total_cmp(&a.3).then(a.4.total_cmp(&b.4)).then(a.0.cmp(&b.0)));
        m.into_iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    };
    let first: Vec<&(String, u64, String, f64, f64)> = got[..3].iter().collect();
    assert_eq!(got[3].2, rank(&first)[0], "the best of the first three continues");
    let all: Vec<&(String, u64, String, f64, f64)> = got.iter().filter(|r| r.1 == 0).collect();
    let top2 = rank(&all)[..2].to_vec();
    let second = top2.iter().find(|id| **id != got[3].2).unwrap();
    assert_eq!(&got[7].2, second, "then the one of the top two of six not continued yet");
    // The first promotion was created before a first-rung run ended.
    let created = query(&ws.db(), &format!("SELECT created_at FROM runs WHERE run_id = '{}'", got[3].0));
    let ended = query(&ws.db(), &format!("SELECT updated_at FROM runs WHERE run_id = '{}'", got[4].0));
    let (created, ended): (f64, f64) = (created[0].parse().unwrap(), ended[0].parse().unwrap());
    assert!(created < ended, "promoted at {created}, before the first rung's run that ended at {ended}");
    // A restart plans no extra run and trains nothing.
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 trained"), "{err}");
    assert_eq!(
        rows(&ws, "a").into_iter().map(|r| r.0).collect::<Vec<_>>(),
        got.iter().map(|r| r.0.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn asha_with_the_bayesian_sampler_proposes_its_configurations() {
    let ws = Workspace::new();
    let hp = "learning_rate_multiplier = { log_uniform = [0.05, 20] }\nbatch_size = [8, 32]";
    ws.write(
        "s.toml",
        &asha_toml("a", "eta = 2\nmin_epochs = 1\nmax_epochs = 2\nruns = 4\nsampler = \"bayes\"\nstartup = 2", hp),
    );
    let (code, _, err) = ws.run(&["run", "s.toml"]);
    assert_eq!(code, 0, "{err}");
    let got = rows(&ws, "a");
    assert_eq!(got.iter().filter(|r| r.1 == 0).count(), 4, "{got:?}");
    // Each continues a distinct first-rung configuration (one in the top half of the rung's results
    // when it was decided: two at least, one more when a later result overtook a promoted one).
    let parents: std::collections::BTreeSet<&str> = got.iter().filter(|r| r.1 == 1).map(|r| r.2.as_str()).collect();
    let promoted = got.iter().filter(|r| r.1 == 1).count();
    assert!((2..=3).contains(&promoted) && parents.len() == promoted, "{got:?}");
    let best = got.iter().filter(|r| r.1 == 0).max_by(|a, b| a.3.total_cmp(&b.3)).unwrap();
    assert!(parents.contains(best.0.as_str()), "the best of the first rung continues: {got:?}");
}
