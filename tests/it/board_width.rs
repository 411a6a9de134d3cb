//! The leaderboard fits the terminal: with `COLUMNS` set, every line of `leaderboard` and of the
//! table `run` ends with is within it, the columns left out are named under the table, `--wide`
//! and a pipe show every column, and the row `best` picks is marked (`N best`, `is_pick`). The
//! README's column list is the header `--wide` prints. On a local sweep with tool-call replies
//! graded three ways (tests/data/drone-tools.jsonl), whose full table is about 290 columns wide.

use crate::util::{Workspace, root};

/// A local sweep of four runs on the tool-call fixture, graded by three tool-call graders.
fn sweep(ws: &Workspace) -> std::path::PathBuf {
    let data = root().join("tests/data/drone-tools.jsonl").display().to_string();
    ws.write(
        "drone.toml",
        &format!(
            r#"name = "drone"
provider = "local"
base_model = "local/ngram"
training_file = "{data}"
validation_file = "{data}"
seed = 42

[hyperparameters]
n_epochs = [1, 3]
learning_rate_multiplier = [1.0, 10.0]
batch_size = [4]

[evaluation]
metric = "tool_call"

[[evaluation.graders]]
type = "tool_call"

[[evaluation.graders]]
type = "tool_call"
match = "name"

[[evaluation.graders]]
type = "tool_call"
arguments = "partial"
"#
        ),
    )
}

/// Runs `ftsweep ARGS` with `COLUMNS` set to `columns`: (exit code, stdout, stderr).
fn with_columns(ws: &Workspace, columns: &str, args: &[&str]) -> (i32, String, String) {
    let out = ws.cmd().env("COLUMNS", columns).args(args).output().expect("running ftsweep");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The header of the first table in `out`: the cells of its second line.
fn header(out: &str) -> Vec<String> {
    let line = out.lines().nth(1).expect("a header line");
    line.trim_matches('│').split('┆').map(|c| c.trim().to_string()).collect()
}

/// Every line of `out` is at most `width` characters (every character here is one column wide).
fn assert_within(out: &str, width: usize) {
    for line in out.lines() {
        assert!(line.chars().count() <= width, "a line of {} > {width}:\n{line}\n\n{out}", line.chars().count());
    }
}

/// The sweep, run once in a workspace of its own.
fn ran() -> Workspace {
    let ws = Workspace::new();
    let file = sweep(&ws);
    let (code, out, err) = ws.run(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).is_some_and(|l| l.chars().count() > 200), "a pipe gets the whole table:\n{out}");
    ws
}

#[test]
fn the_leaderboard_fits_columns_and_says_what_it_left_out() {
    let ws = ran();
    let (_, piped, _) = ws.run(&["leaderboard", "drone"]);
    let full = header(&piped);
    assert_eq!(full.len(), 17, "{full:?}");
    assert!(!piped.contains("--wide"), "nothing is left out of a pipe:\n{piped}");
    for width in [50, 60, 80, 100, 120, 160, 200] {
        let (code, out, err) = with_columns(&ws, &width.to_string(), &["leaderboard", "drone"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{err}");
        assert_within(&out, width);
        let shown = header(&out);
        for kept in ["rank", "run", "tool_call", "vs leader"] {
            assert!(shown.iter().any(|h| h == kept), "`{kept}` is kept at {width}:\n{out}");
        }
        let prose = out.replace('\n', " ");
        assert!(prose.contains(&format!("to fit {width} columns, left out: batch (4 in every run)")), "{out}");
        assert!(prose.contains("`ftsweep leaderboard drone --wide` shows every column"), "{out}");
        // `n_epochs` and `trained_tokens` are shown as `epochs` and `tokens` when space is short.
        fn abbreviated(h: &str) -> &str {
            match h {
                "n_epochs" => "epochs",
                "trained_tokens" => "tokens",
                h => h,
            }
        }
        let left_out: Vec<&String> = full.iter().filter(|h| !shown.iter().any(|s| s == abbreviated(h))).collect();
        for h in left_out {
            assert!(prose.contains(h.as_str()), "`{h}` is named as left out at {width}:\n{out}");
        }
    }
    // At 80 the other graders give way before the hyperparameters that vary.
    let (_, narrow, _) = with_columns(&ws, "80", &["leaderboard", "drone"]);
    let shown = header(&narrow);
    assert!(shown.contains(&"lr_mult".to_string()) && !shown.contains(&"tool_call_name".to_string()), "{narrow}");
    // --wide shows every column whatever the width, as a pipe does.
    let (code, wide, _) = with_columns(&ws, "80", &["leaderboard", "drone", "--wide"]);
    assert_eq!(code, 0);
    assert_eq!(wide, piped, "--wide is the full table");
    // JSON, CSV and Markdown are never cut.
    for format in ["--json", "--csv", "--markdown"] {
        assert_eq!(
            with_columns(&ws, "60", &["leaderboard", "drone", format]).1,
            ws.run(&["leaderboard", "drone", format]).1
        );
    }
}

#[test]
fn the_table_run_ends_with_fits_too() {
    let ws = Workspace::new();
    let file = sweep(&ws);
    let (code, out, err) = with_columns(&ws, "100", &["run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_within(&out, 100);
    assert!(out.replace('\n', " ").contains("to fit 100 columns"), "{out}");
}

#[test]
fn a_columns_value_that_is_not_a_positive_integer_is_ignored_with_a_warning() {
    let ws = ran();
    let (_, piped, _) = ws.run(&["leaderboard", "drone"]);
    for bad in ["abc", "0", "-80", "80x"] {
        let (code, out, err) = with_columns(&ws, bad, &["leaderboard", "drone"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, piped, "COLUMNS={bad} is ignored: a pipe's full table");
        assert_eq!(err, format!("warning: ignoring COLUMNS={bad}: not a positive integer\n"));
    }
    let (code, out, err) = with_columns(&ws, "", &["leaderboard", "drone"]);
    assert_eq!((code, out, err), (0, piped, String::new()), "an empty COLUMNS is unset");
}

#[test]
fn the_row_best_picks_is_marked_in_the_table_and_the_json() {
    let ws = ran();
    let (code, model, _) = ws.run(&["best", "drone"]);
    assert_eq!(code, 0);
    let model = model.trim();
    let rows = ws.json(&["leaderboard", "drone", "--json"]);
    let picks: Vec<&serde_json::Value> = rows.as_array().unwrap().iter().filter(|r| r["is_pick"] == true).collect();
    assert_eq!(picks.len(), 1, "{rows:#}");
    assert_eq!(picks[0]["model"], model, "is_pick is the row `best` prints");
    assert!(rows.as_array().unwrap().iter().all(|r| r["is_pick"].is_boolean()), "every row says");
    let rank = picks[0]["rank"].as_u64().unwrap();
    let id = picks[0]["run_id"].as_str().unwrap();
    for columns in ["80", "300"] {
        let (_, table, _) = with_columns(&ws, columns, &["leaderboard", "drone"]);
        let marked: Vec<&str> = table.lines().filter(|l| l.contains(" best ┆")).collect();
        assert_eq!(marked.len(), 1, "{table}");
        assert!(marked[0].starts_with(&format!("│ {rank} best ┆ ")), "{table}");
        assert!(table.replace('\n', " ").contains(&format!("best: rank {rank} ({id}), model {model}: ")), "{table}");
    }
}

/// The README's leaderboard row in the Commands table lists the columns in order: `name` for a
/// column, *placeholder* for the hyperparameters, the metric or the other graders; what is in
/// parentheses describes the item before it.
fn readme_columns() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| `ftsweep leaderboard NAME [--wide]")).expect("the row");
    let start = row.find("Its columns, in order: ").expect("the column list") + "Its columns, in order: ".len();
    let list = &row[start..start + row[start..].find(". ").unwrap()];
    let mut depth = 0;
    let flat: String = list
        .chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => return depth == 0,
            }
            false
        })
        .collect();
    flat.split(", ")
        .map(|item| {
            let item = item.trim();
            if let Some(name) = item.strip_prefix('`') {
                name.trim_end_matches('`').to_string()
            } else {
                let placeholder = item.split('*').nth(1).unwrap_or_else(|| panic!("`name` or *placeholder*: {item}"));
                format!("<{placeholder}>")
            }
        })
        .collect()
}

#[test]
fn the_readme_lists_the_columns_the_wide_table_prints() {
    let ws = ran();
    let (_, wide, _) = with_columns(&ws, "80", &["leaderboard", "drone", "--wide"]);
    let documented: Vec<String> = readme_columns()
        .into_iter()
        .flat_map(|c| match c.as_str() {
            "<the hyperparameters>" => vec!["lr_mult".to_string(), "batch".to_string()],
            "<the metric>" => vec!["tool_call".to_string()],
            "<the other graders>" => vec!["tool_call_name".to_string(), "tool_call_partial".to_string()],
            _ => vec![c],
        })
        .collect();
    assert_eq!(documented, header(&wide), "README.md's column list (Commands: `ftsweep leaderboard`) is the header");
}
