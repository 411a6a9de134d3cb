//! The external command grader: runs a user's program with the example as
//! JSON on stdin, reads a score from its stdout, and kills it at its timeout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::config::{CommandSpec, NamedGrader, hex};
use crate::data::{Reply, ToolCall};
use crate::store::EvalExample;

/// What the program reads on stdin, as one JSON object: the reply and the reference as people
/// read them (text, then each call as `name({arguments})`), their calls as
/// `{name, arguments}` (the arguments parsed) in `reply_tool_calls` and `reference_tool_calls`,
/// the prompt's messages, and where the example is.
pub fn input_json(x: &EvalExample, reference: &Reply, reply: &Reply) -> String {
    let prompt: Vec<serde_json::Value> = (x.prompt.iter())
        .map(|m| {
            let mut v = serde_json::json!({"role": m.role, "content": m.content});
            if !m.tool_calls.is_empty() {
                v["tool_calls"] = calls(&m.tool_calls);
            }
            if let Some(id) = &m.tool_call_id {
                v["tool_call_id"] = id.clone().into();
            }
            v
        })
        .collect();
    serde_json::json!({
        "reply": reply.display(),
        "reference": reference.display(),
        "reply_tool_calls": calls(&reply.tool_calls),
        "reference_tool_calls": calls(&reference.tool_calls),
        "prompt": prompt,
        "example": x.example,
        "line": x.line,
    })
    .to_string()
}

fn calls(calls: &[ToolCall]) -> serde_json::Value {
    (calls.iter()).map(|c| serde_json::json!({"name": c.name, "arguments": c.parsed_arguments()})).collect()
}

/// The program to start: a relative path with a `/` is taken from the
/// sweep file's folder; a bare name is looked up on `PATH`.
fn program(spec: &CommandSpec, dir: &Path) -> PathBuf {
    let p = Path::new(&spec.command[0]);
    if p.is_relative() && spec.command[0].contains('/') { dir.join(p) } else { p.to_path_buf() }
}

/// The grade cache key of a command grader: its fingerprint and the content
/// of every argument that names a file in the sweep file's folder, so that
/// editing the grading script grades again.
pub fn key(grader: &NamedGrader, spec: &CommandSpec, dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(grader.fingerprint().as_bytes());
    for arg in &spec.command {
        let path = dir.join(arg);
        if !path.is_file() {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&path) {
            h.update(arg.as_bytes());
            h.update(Sha256::digest(&bytes));
        }
    }
    format!("command:{}", &hex(&h.finalize())[..16])
}

/// Parses the program's output: a number, or a JSON object with a numeric
/// `score` or `result`; scaled from `range` to [0, 1] after clamping.
pub fn parse_output(stdout: &str, [lo, hi]: [f64; 2]) -> Option<f64> {
    let t = stdout.trim();
    let x = t.parse::<f64>().ok().or_else(|| {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        let field = v.get("score").or_else(|| v.get("result"))?;
        field.as_f64().or_else(|| field.as_str()?.trim().parse().ok())
    })?;
    if x.is_nan() {
        return None;
    }
    Some(((x.clamp(lo, hi) - lo) / (hi - lo)).clamp(0.0, 1.0))
}

/// Runs the program on one example; blocks. Returns the score in [0, 1] and
/// the raw output, or why there is no score.
pub fn run(spec: &CommandSpec, dir: &Path, input: &str) -> Result<(f64, String), String> {
    let shown = spec.command.join(" ");
    let mut child = Command::new(program(spec, dir))
        .args(&spec.command[1..])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{shown}` in {}: {e}", dir.display()))?;
    let mut stdin = child.stdin.take();
    let bytes = input.as_bytes().to_vec();
    // The program may not read its input: write from a thread so a full pipe cannot block us.
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&bytes);
        }
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(1 << 20).read_to_end(&mut out);
            }
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let timeout = Duration::from_secs_f64(spec.timeout_seconds);
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` did not finish within {} s and was stopped", spec.timeout_seconds));
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("waiting for `{shown}` failed: {e}")),
        }
    };
    let _ = writer.join();
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        let tail: String = err.trim().chars().rev().take(200).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(if tail.is_empty() {
            format!("`{shown}` failed ({status})")
        } else {
            format!("`{shown}` failed ({status}): {tail}")
        });
    }
    match parse_output(&out, spec.range) {
        Some(score) => Ok((score, out.trim().to_string())),
        None => Err(format!("`{shown}` printed no score: `{}`", out.trim().chars().take(80).collect::<String>())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout_seconds: f64) -> CommandSpec {
        CommandSpec {
            name: None,
            command: argv.iter().map(|s| s.to_string()).collect(),
            timeout_seconds,
            range: [0.0, 10.0],
        }
    }

    #[test]
    fn outputs_are_numbers_or_json_scaled_to_the_range() {
        assert_eq!(parse_output(" 7.5\n", [0.0, 10.0]), Some(0.75));
        assert_eq!(parse_output(r#"{"score": 12}"#, [0.0, 10.0]), Some(1.0));
        assert_eq!(parse_output(r#"{"result": "2"}"#, [0.0, 10.0]), Some(0.2));
        assert_eq!(parse_output("-1", [0.0, 1.0]), Some(0.0));
        assert_eq!(parse_output("good", [0.0, 1.0]), None);
        assert_eq!(parse_output("", [0.0, 1.0]), None);
        assert_eq!(parse_output("NaN", [0.0, 1.0]), None);
    }

    #[test]
    fn the_program_reads_the_example_and_prints_a_score() {
        let dir = std::env::temp_dir();
        let x = EvalExample {
            example: 0,
            line: 1,
            conversation_sha256: String::new(),
            prompt: Vec::new(),
            reference: "Paris".into(),
            prediction: "Paris".into(),
            probability: None,
        };
        let input = input_json(&x, &Reply::text("Paris"), &Reply::text("Paris"));
        // The program prints 10 when the reply is Paris, else 0.
        let script = r#"read x; case "$x" in *'"reply":"Paris"'*) echo 10;; *) echo 0;; esac"#;
        assert_eq!(run(&spec(&["sh", "-c", script], 5.0), &dir, &input).unwrap().0, 1.0);
        let other = input_json(&x, &Reply::text("Paris"), &Reply::text("Lyon"));
        assert_eq!(run(&spec(&["sh", "-c", script], 5.0), &dir, &other).unwrap().0, 0.0);
    }

    #[test]
    fn failures_say_why() {
        let dir = std::env::temp_dir();
        let started = Instant::now();
        let e = run(&spec(&["sh", "-c", "sleep 5"], 0.2), &dir, "{}").unwrap_err();
        assert!(e.contains("did not finish within 0.2 s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let e = run(&spec(&["sh", "-c", "echo oops >&2; exit 3"], 5.0), &dir, "{}").unwrap_err();
        assert!(e.contains("oops"), "{e}");
        let e = run(&spec(&["sh", "-c", "echo maybe"], 5.0), &dir, "{}").unwrap_err();
        assert!(e.contains("printed no score"), "{e}");
        let e = run(&spec(&["./no-such-grader"], 5.0), &dir, "{}").unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
    }

    #[test]
    fn the_key_follows_the_script_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.sh"), "echo 1").unwrap();
        let table: toml::Table = toml::from_str("type = \"command\"\ncommand = [\"sh\", \"g.sh\"]").unwrap();
        let grader = super::super::config::parse(&table).unwrap();
        let super::super::config::Kind::Command(c) = &grader.kind else { panic!("a command") };
        let before = key(&grader, c, dir.path());
        assert_eq!(before, key(&grader, c, dir.path()));
        std::fs::write(dir.path().join("g.sh"), "echo 0").unwrap();
        assert_ne!(before, key(&grader, c, dir.path()));
    }
}
