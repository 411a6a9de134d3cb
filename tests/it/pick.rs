//! `best` and `promote` trade quality for cost only on a shown bound: a
//! cheaper run is picked (or takes an alias) only when the upper bound on
//! its shortfall from the leader is below `[evaluation] margin`; a paired
//! test that fails to find a difference is not enough. Shown on a
//! 30-example and on the 184-example validation set of the quickstart data.

use serde_json::Value;

use crate::util::{Workspace, example_data, sweep_toml};

/// The ranked runs of a leaderboard.
fn ranked(board: &Value) -> Vec<&Value> {
    board.as_array().expect("an array").iter().filter(|r| r["rank"].is_u64()).collect()
}

fn tokens(r: &Value) -> i64 {
    r["trained_tokens"].as_i64().expect("trained tokens")
}

/// The rule: the pick is the leader, or a cheaper run whose bound is below the margin.
fn assert_rule(board: &Value, picked: &Value, margin: f64) {
    let runs = ranked(board);
    let leader = runs[0];
    assert_eq!(leader["is_leader"], true);
    if picked["run_id"] != leader["run_id"] {
        let upper = picked["shortfall_upper"].as_f64().expect("a bound");
        assert!(upper < margin && picked["within_margin"] == true, "{picked}");
        assert!(tokens(picked) < tokens(leader), "{picked}");
    }
    for r in &runs[1..] {
        let upper = r["shortfall_upper"].as_f64().expect("every ranked run has a bound");
        assert_eq!(r["within_margin"], upper < margin, "{r}");
    }
}

#[test]
fn on_30_examples_best_keeps_the_leader_and_says_the_set_is_too_small() {
    let ws = Workspace::new();
    let valid: String = std::fs::read_to_string(example_data("topics-valid.jsonl"))
        .unwrap()
        .lines()
        .take(30)
        .map(|l| l.to_owned() + "\n")
        .collect();
    let valid = ws.write("valid30.jsonl", &valid);
    let hp = "n_epochs = [1, 3]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4, 32]";
    let toml = sweep_toml("small", hp).replace(&example_data("topics-valid.jsonl"), valid.to_str().unwrap());
    let path = ws.write("small.toml", &toml);
    let (code, _, err) = ws.run(&["run", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let board = ws.json(&["leaderboard", "small", "--json"]);
    let runs = ranked(&board);
    assert_eq!(runs[0]["n_eval"], 30);
    // A cheaper run that the paired test cannot tell from the leader, yet is far from shown to be as good.
    let lure = runs
        .iter()
        .find(|r| tokens(r) < tokens(runs[0]) && r["tied_with_best"] == true)
        .expect("a cheaper run not significantly different from the leader");
    assert!(lure["p_value"].as_f64().unwrap() >= 0.05 && lure["within_margin"] == false, "{lure}");
    assert!(lure["shortfall_upper"].as_f64().unwrap() > 0.1, "{lure}");

    let (code, out, err) = ws.run(&["best", "small"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), runs[0]["model"].as_str().unwrap(), "the leader, not the cheaper lookalike: {err}");
    assert!(err.contains("the leader; no cheaper run is shown to be within the margin 0.02"), "{err}");
    assert!(err.contains("which is no evidence that it is as good"), "{err}");
    assert!(
        err.contains("too small to tell runs apart within the margin 0.02: with 30 examples the smallest shortfall it can rule out is 0.083"),
        "{err}"
    );
    assert!(err.contains("about 133 examples would resolve a margin of 0.02"), "{err}");
    let picked = ws.json(&["best", "small", "--json"]);
    assert_rule(&board, &picked, 0.02);

    // The table tells "not different" from "within the margin".
    let (_, table, _) = ws.run(&["leaderboard", "small"]);
    assert!(table.contains("n.s. p=") && table.contains(" below") && !table.contains("tie p="), "{table}");
    assert!(table.contains("which is no evidence that it is as good"), "{table}");
}

#[test]
fn on_184_examples_best_and_promote_follow_the_margin() {
    let ws = Workspace::new();
    let hp = "n_epochs = [3, 8]\nlearning_rate_multiplier = [1.0]\nbatch_size = [4]";
    let path = ws.write("big.toml", &sweep_toml("big", hp));
    let path = path.to_str().unwrap();
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    let board = ws.json(&["leaderboard", "big", "--json"]);
    let runs = ranked(&board);
    let (leader, cheap) = (runs[0], runs[1]);
    assert!(tokens(cheap) < tokens(leader) && cheap["tied_with_best"] == true, "{cheap}");
    let upper = cheap["shortfall_upper"].as_f64().unwrap();

    // The default margin, 0.02.
    let (code, out, err) = ws.run(&["best", "big"]);
    assert_eq!(code, 0, "{err}");
    let picked = ws.json(&["best", "big", "--json"]);
    assert_rule(&board, &picked, 0.02);
    assert_eq!(out.trim(), picked["model"].as_str().unwrap());
    assert!(!err.contains("too small"), "184 examples resolve 0.0145: {err}");
    if picked["run_id"] == leader["run_id"] {
        assert!(upper >= 0.02 && err.contains(&format!("may be up to {upper:.3} below it")), "{err}");
    }
    // The first holder, then a cheaper model not shown to be within 0.02 does not replace it.
    let (leader_id, cheap_id) = (leader["run_id"].as_str().unwrap(), cheap["run_id"].as_str().unwrap());
    assert_eq!(ws.run(&["promote", leader_id, "--alias", "champion"]).0, 0);
    if upper >= 0.02 {
        let (code, _, err) = ws.run(&["promote", cheap_id, "--alias", "champion"]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("it is cheaper, but not shown to be within the margin 0.02 of it"), "{err}");
    }

    // A margin above the cheaper run's bound: `best` picks it, and it may take the alias without --force.
    let margin = ((upper * 100.0).ceil() + 1.0) / 100.0;
    let toml = sweep_toml("big", hp)
        .replace("metric = \"exact_match\"", &format!("metric = \"exact_match\"\nmargin = {margin}"));
    ws.write("big.toml", &toml);
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 trained"), "a new margin trains nothing: {err}");
    let board = ws.json(&["leaderboard", "big", "--json"]);
    let (code, out, err) = ws.run(&["best", "big"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), cheap["model"].as_str().unwrap(), "{err}");
    assert!(err.contains(&format!("shown to be within the margin {margin} of the leader {leader_id}")), "{err}");
    assert!(err.contains(&format!("at most {upper:.3} below it (95% one-sided bound, tango score)")), "{err}");
    assert_rule(&board, &ws.json(&["best", "big", "--json"]), margin);
    let (_, out, _) = ws.run(&["best", "big", "--strict"]);
    assert_eq!(out.trim(), leader["model"].as_str().unwrap());

    let (code, out, err) = ws.run(&["promote", cheap_id, "--alias", "champion"]);
    assert_eq!((code, out.trim()), (0, cheap["model"].as_str().unwrap()), "{err}");
    assert!(err.contains(&format!("shown to be within the margin {margin} of it")), "{err}");
    let aliases = ws.json(&["aliases", "--json"]);
    let p = &aliases[0]["provenance"];
    assert_eq!((p["forced"].as_bool(), p["margin"].as_f64()), (Some(false), Some(margin)));
    assert_eq!(p["previous"]["cheaper_within_margin"], true);
}
