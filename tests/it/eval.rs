//! Evaluation end to end: the leaderboard's baseline, intervals and marks
//! against the leader; `best` keeping the leader when no cheaper run is
//! within the margin (see pick.rs); `compare`; the predictions and grade
//! caches (zero provider calls when ranking again or adding a grader); judge
//! and command graders; `promote` and `aliases` with their guard; `eval`.

use serde_json::Value;

use crate::util::{Workspace, example_data, query, sweep_toml};

/// Six runs of the quickstart's kind: 8/1 leads, 3/1 and 8/0.1 are not
/// significantly different from it (but not within 0.02 of it), 1/0.1 is
/// clearly worse.
const HP: &str = "n_epochs = [1, 3, 8]\nlearning_rate_multiplier = [0.1, 1.0]\nbatch_size = [4]";

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("an array")
}

fn find(rows: &[Value], n_epochs: u64, lr: f64) -> &Value {
    rows.iter()
        .find(|r| r["n_epochs"] == n_epochs && r["learning_rate_multiplier"].as_f64() == Some(lr))
        .unwrap_or_else(|| panic!("no run {n_epochs}/{lr}"))
}

/// (N, M) in "… N<what>M cached) …" of a count line: calls made and cache hits.
fn count(line: &str, what: &str) -> (u64, u64) {
    let (before, after) = line.split_once(what).unwrap_or_else(|| panic!("`{what}` in {line}"));
    let made: u64 = before.rsplit(' ').next().unwrap().parse().unwrap();
    let cached: u64 = after.split(' ').next().unwrap().parse().unwrap();
    (made, cached)
}

fn total((made, cached): (u64, u64)) -> u64 {
    made + cached
}

/// The `evaluation: …` line of `run`'s stderr.
fn evaluation_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.starts_with("evaluation: ")).expect("the evaluation count line")
}

#[test]
fn rank_pick_compare_rescore_and_promote_on_a_quickstart_like_sweep() {
    let ws = Workspace::new();
    let path = ws.write("s.toml", &sweep_toml("s", HP));
    let path = path.to_str().unwrap();
    let (code, table, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("baseline done      exact_match=0.000"), "{err}");
    // 6 runs and the baseline, 184 examples each.
    assert!(evaluation_line(&err).starts_with("evaluation: 1288 provider calls: 1288 completions"), "{err}");
    for needle in ["baseline", "95% CI", "vs leader", "leader", "n.s. p=", "below p<0.001", "Wilson", "McNemar"] {
        assert!(table.contains(needle), "the table shows `{needle}`:\n{table}");
    }

    // The JSON rows: intervals around the scores, one baseline row, ties marked.
    let board = ws.json(&["leaderboard", "s", "--json"]);
    let all = rows(&board);
    assert_eq!(all.len(), 7);
    let baseline: Vec<&Value> = all.iter().filter(|r| r["is_baseline"] == true).collect();
    assert_eq!(baseline.len(), 1);
    assert_eq!((baseline[0]["score"].as_f64(), baseline[0]["tied_with_best"].as_bool()), (Some(0.0), Some(false)));
    assert_eq!(baseline[0]["model"], "local/ngram");
    let runs: Vec<Value> = all.iter().filter(|r| r["is_baseline"] != true).cloned().collect();
    for r in &runs {
        let (lo, s, hi) = (r["ci_low"].as_f64().unwrap(), r["score"].as_f64().unwrap(), r["ci_high"].as_f64().unwrap());
        assert!(lo < s && s < hi && hi - lo < 0.2, "a 95% interval around the score: {r}");
    }
    let leader = find(&runs, 8, 1.0);
    assert_eq!((leader["rank"].as_u64(), leader["tied_with_best"].as_bool()), (Some(1), Some(true)));
    let cheap = find(&runs, 3, 1.0);
    assert_eq!(cheap["tied_with_best"], true, "{cheap}");
    assert_eq!(cheap["test"], "mcnemar_exact");
    assert!(cheap["p_value"].as_f64().unwrap() >= 0.05);
    let worst = find(&runs, 1, 0.1);
    assert_eq!(worst["tied_with_best"], false);
    assert!(worst["p_value"].as_f64().unwrap() < 0.001);

    // Not significantly different is not as good: no cheaper run is shown to be within 0.02 of the
    // leader, so `best` keeps the leader and says why; --strict picks the leader too.
    assert_eq!(cheap["within_margin"], false, "{cheap}");
    let (code, out, err) = ws.run(&["best", "s"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), leader["model"].as_str().unwrap());
    assert!(err.contains("the leader; no cheaper run is shown to be within the margin 0.02"), "{err}");
    assert!(err.contains("177162 trained tokens against the leader's 472432"), "{err}");
    let (_, out, _) = ws.run(&["best", "s", "--strict"]);
    assert_eq!(out.trim(), leader["model"].as_str().unwrap());
    assert_eq!(ws.json(&["best", "s", "--json"])["run_id"], leader["run_id"]);

    // `compare` of the best and the worst: the paired test and the examples where they disagree.
    let (best_id, worst_id) = (cheap["run_id"].as_str().unwrap(), worst["run_id"].as_str().unwrap());
    let (code, out, err) = ws.run(&["compare", best_id, worst_id, "--limit", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exact McNemar test") && out.contains("A is better"), "{out}");
    assert!(out.contains("examples differ on `exact_match`") && out.contains("reference: "), "{out}");
    let c = ws.json(&["compare", &best_id[..6], worst_id, "--json"]);
    let t = &c["paired_test"];
    let differ = c["disagreements"].as_array().unwrap();
    assert_eq!(differ.len() as u64, t["only_a"].as_u64().unwrap() + t["only_b"].as_u64().unwrap());
    assert!(differ.iter().all(|d| d["reply_a"] != d["reply_b"] && d["reference"].is_string()));
    assert!(t["p_value"].as_f64().unwrap() < 0.001);

    // Ranking again reads the database: the same rows, and no reply is asked for again.
    let predictions = query(&ws.db(), "SELECT count(*) FROM predictions");
    assert_eq!(board, ws.json(&["leaderboard", "s", "--json"]));
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    assert!(evaluation_line(&err).starts_with("evaluation: 0 provider calls: 0 completions (184 replies"), "{err}");

    // Adding a grader and grading again asks the provider for nothing.
    ws.write("s.toml", &format!("{}\n[[evaluation.graders]]\ntype = \"token_f1\"\n", sweep_toml("s", HP)));
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    assert!(evaluation_line(&err).starts_with("evaluation: 0 provider calls"), "{err}");
    assert_eq!(predictions, query(&ws.db(), "SELECT count(*) FROM predictions"));
    let board = ws.json(&["leaderboard", "s", "--json"]);
    assert!(rows(&board).iter().all(|r| r["scores"]["token_f1"].is_number()), "{board}");
    let by_f1 = ws.json(&["leaderboard", "s", "--json", "--metric", "token_f1"]);
    assert!(rows(&by_f1).iter().all(|r| r["metric"] == "token_f1"));
    assert_eq!(rows(&by_f1)[0]["test"], Value::Null, "the leader has no test against itself");
    let (_, csv, _) = ws.run(&["leaderboard", "s", "--csv"]);
    assert!(csv.lines().next().unwrap().contains(",exact_match,token_f1,"), "{csv}");
    assert_eq!(csv.lines().count(), 8);
    let (_, md, _) = ws.run(&["leaderboard", "s", "--markdown"]);
    assert!(md.starts_with("| rank | run |") && md.contains("| token_f1 |"), "{md}");
    let (code, _, err) = ws.run(&["leaderboard", "s", "--metric", "bleu"]);
    assert_eq!(code, 2);
    assert!(err.contains("rank by one of: exact_match, token_f1"), "{err}");

    // Promote: the first holder, then the guard.
    let (code, out, err) = ws.run(&["promote", best_id, "--alias", "champion"]);
    assert_eq!((code, out.trim()), (0, cheap["model"].as_str().unwrap()), "{err}");
    let (code, _, err) = ws.run(&["promote", leader["run_id"].as_str().unwrap(), "--alias", "champion"]);
    assert_eq!(code, 1, "a tied run does not replace the champion: {err}");
    assert!(err.contains("not significantly better on the same 184 examples"), "{err}");
    let (code, _, err) = ws.run(&["promote", worst_id, "--alias", "champion"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not better"), "{err}");
    let (code, _, err) = ws.run(&["promote", worst_id, "--alias", "champion", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("anyway (--force)"), "{err}");
    // The best run is significantly better than the worst: it takes the alias back without --force.
    assert_eq!(ws.run(&["promote", best_id, "--alias", "champion"]).0, 0);
    let (_, out, _) = ws.run(&["best", "--alias", "champion"]);
    assert_eq!(out.trim(), cheap["model"].as_str().unwrap());
    let aliases = ws.json(&["aliases", "--json"]);
    let p = &aliases[0]["provenance"];
    assert_eq!(
        (p["sweep"].as_str(), p["run_id"].as_str(), p["metric"].as_str()),
        (Some("s"), Some(best_id), Some("exact_match"))
    );
    assert_eq!(p["previous"]["model"], worst["model"]);
    assert!(p["validation_sha256"].as_str().unwrap().len() == 64 && p["graders"].as_array().unwrap().len() == 2);
    assert_eq!(query(&ws.db(), "SELECT count(*) FROM alias_history WHERE forced = 1"), ["1"]);
    let (_, table, _) = ws.run(&["aliases"]);
    assert!(table.contains("champion") && table.contains(best_id), "{table}");

    // `eval` of any model on the sweep's data reads the cache and stands against the leader.
    let (code, _, err) = ws.run(&["eval", "--model", "local/ngram", "--sweep", "s"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("0 provider calls") && err.contains("significantly below the sweep's leader"), "{err}");
}

#[test]
fn judge_command_graders_and_checkpoints_are_cached_and_counted() {
    let ws = Workspace::new();
    let lines: String = std::fs::read_to_string(example_data("topics-valid.jsonl"))
        .unwrap()
        .lines()
        .take(20)
        .map(|l| format!("{l}\n"))
        .collect();
    let valid = ws.write("valid.jsonl", &lines).display().to_string();
    // The command grader scores 1 for a non-empty reply; the judge is the
    // local base model, which answers nothing: a non-numeric answer scores 0.
    ws.write("grade.sh", "read x\ncase \"$x\" in *'\"reply\":\"\"'*) echo 0;; *) echo 1;; esac\n");
    let graders = "\n[[evaluation.graders]]\ntype = \"command\"\nname = \"nonempty\"\ncommand = [\"sh\", \"grade.sh\"]\n\
                   [[evaluation.graders]]\ntype = \"judge\"\nmodel = \"local/ngram\"\nrubric = \"Is {{reply}} right? 0-10\"\n\
                   range = [0, 10]\n";
    let text = sweep_toml("g", "n_epochs = 3\nlearning_rate_multiplier = 1.0\nbatch_size = 8")
        .replace(&example_data("topics-valid.jsonl"), &valid)
        .replace("metric = \"exact_match\"", "metric = \"exact_match\"\ncheckpoints = true")
        + graders;
    let path = ws.write("g.toml", &text);
    let path = path.to_str().unwrap();
    let (code, _, err) = ws.run(&["run", path]);
    assert_eq!(code, 0, "{err}");
    // The run, its checkpoints at epochs 1 and 2, and the baseline: 4 × 20
    // replies, each graded by the judge and the command unless an identical
    // (prompt, reference, reply) was graded already.
    let line = evaluation_line(&err);
    assert!(line.contains("80 completions (0 replies from the cache)"), "{line}");
    assert_eq!(total(count(line, " judge calls (")), 80, "{line}");
    assert_eq!(total(count(line, " command runs (")), 80, "{line}");
    let board = ws.json(&["leaderboard", "g", "--json"]);
    let kinds: Vec<(&str, Option<u64>)> =
        rows(&board).iter().map(|r| (r["kind"].as_str().unwrap(), r["epoch"].as_u64())).collect();
    for want in [("run", None), ("checkpoint", Some(1)), ("checkpoint", Some(2)), ("baseline", None)] {
        assert!(kinds.contains(&want), "{want:?} in {kinds:?}");
    }
    let run = rows(&board).iter().find(|r| r["kind"] == "run").unwrap();
    let first = rows(&board).iter().find(|r| r["epoch"] == 1).unwrap();
    assert_eq!(first["trained_tokens"].as_i64().unwrap() * 3, run["trained_tokens"].as_i64().unwrap());
    let base = rows(&board).iter().find(|r| r["is_baseline"] == true).unwrap();
    assert_eq!((run["scores"]["nonempty"].as_f64(), base["scores"]["nonempty"].as_f64()), (Some(1.0), Some(0.0)));
    assert_eq!((run["scores"]["judge"].as_f64(), base["scores"]["judge"].as_f64()), (Some(0.0), Some(0.0)));
    let (_, table, _) = ws.run(&["leaderboard", "g"]);
    assert!(table.contains(&format!("{}@1", run["run_id"].as_str().unwrap())), "{table}");

    // Again: everything comes from the caches.
    let (_, _, err) = ws.run(&["run", path]);
    let line = evaluation_line(&err);
    assert!(line.starts_with("evaluation: 0 provider calls: 0 completions"), "{line}");
    assert_eq!((count(line, " judge calls ("), count(line, " command runs (")), ((0, 80), (0, 80)), "{line}");
    // Editing the grading script grades again with it, and asks the provider for nothing.
    ws.write("grade.sh", "read x\necho 0.5\n");
    let (_, _, err) = ws.run(&["run", path]);
    let line = evaluation_line(&err);
    assert!(line.starts_with("evaluation: 0 provider calls"), "{line}");
    let (made, cached) = count(line, " command runs (");
    assert!(made > 0 && made + cached == 80, "{line}");
    let board = ws.json(&["leaderboard", "g", "--json", "--metric", "nonempty"]);
    assert!(rows(&board).iter().all(|r| r["score"].as_f64() == Some(0.5)), "{board}");
    assert!(rows(&board).iter().all(|r| r["ci_low"].as_f64() == Some(0.5)), "the bootstrap of a constant: {board}");

    // `eval` without a sweep: the local provider, exact match, any data file.
    let (code, out, err) = ws.run(&["eval", "--model", "local/ngram", "--data", &valid]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("exact_match") && out.contains("0.000"), "{out}");
    assert!(err.contains("(20 examples): 0 provider calls"), "{err}");
}
