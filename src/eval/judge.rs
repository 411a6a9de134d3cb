//! The model-graded judge: the rubric and the example rendered into a chat
//! for the judge model. Its answer is scored by
//! [`graders::parse_judge_score`](super::graders::parse_judge_score); pure.

use super::config::JudgeSpec;
use crate::data::{Message, Reply};

/// What the judge is told before the rubric, as OpenAI's `score_model` grader asks.
pub const INSTRUCTIONS: &str = "You are a careful grader. Grade the reply by the rubric, comparing it with the \
     reference answer when one is given. Answer with JSON only, in the form \
     {\"result\": <number>, \"steps\": [{\"description\": \"...\", \"conclusion\": \"...\"}]}.";

/// The prompt's messages as `role: content` lines (an assistant's calls as `name({arguments})`).
pub fn render_prompt(prompt: &[Message]) -> String {
    let shown = |m: &Message| Reply { content: m.content.clone(), tool_calls: m.tool_calls.clone() }.display();
    prompt.iter().map(|m| format!("{}: {}", m.role, shown(m))).collect::<Vec<_>>().join("\n")
}

/// The messages sent to the judge model. Placeholders in the rubric are
/// replaced; a rubric without placeholders is followed by the example.
pub fn messages(judge: &JudgeSpec, prompt: &[Message], reference: &str, reply: &str) -> Vec<Message> {
    let [lo, hi] = judge.range;
    let system = format!("{INSTRUCTIONS} The result must be a number from {lo} to {hi}.");
    let conversation = render_prompt(prompt);
    let placeholders: [(&str, &str); 6] = [
        ("{{prompt}}", &conversation),
        ("{{item.input}}", &conversation),
        ("{{reference}}", reference),
        ("{{item.reference}}", reference),
        ("{{reply}}", reply),
        ("{{sample.output_text}}", reply),
    ];
    let templated = placeholders.iter().any(|(p, _)| judge.rubric.contains(p));
    let user = if templated {
        // One pass over the rubric, so a reply that contains a placeholder is not expanded again.
        let mut out = String::with_capacity(judge.rubric.len());
        let mut rest = judge.rubric.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let tail = &rest[start..];
            match placeholders.iter().find(|(p, _)| tail.starts_with(p)) {
                Some((p, value)) => {
                    out.push_str(value);
                    rest = &tail[p.len()..];
                }
                None => {
                    out.push_str("{{");
                    rest = &tail[2..];
                }
            }
        }
        out.push_str(rest);
        out
    } else {
        format!(
            "{}\n\n# Conversation\n{conversation}\n\n# Reference answer\n{reference}\n\n# Reply to grade\n{reply}",
            judge.rubric.trim_end()
        )
    };
    vec![Message::text("system", system), Message::text("user", user)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(rubric: &str) -> JudgeSpec {
        JudgeSpec { name: None, model: "m".into(), rubric: rubric.into(), range: [0.0, 10.0] }
    }

    fn prompt() -> Vec<Message> {
        vec![Message::text("user", "capital of France?")]
    }

    #[test]
    fn placeholders_are_replaced_once() {
        let m = messages(
            &judge("Q: {{prompt}}\nA: {{sample.output_text}} (want {{reference}}) {{other}}"),
            &prompt(),
            "Paris",
            "{{reference}}",
        );
        assert_eq!(m.len(), 2);
        assert!(m[0].content.contains("from 0 to 10"), "{}", m[0].content);
        assert_eq!(m[1].content, "Q: user: capital of France?\nA: {{reference}} (want Paris) {{other}}");
    }

    #[test]
    fn a_plain_rubric_is_followed_by_the_example() {
        let m = messages(&judge("Is the reply correct?"), &prompt(), "Paris", "Lyon");
        assert!(m[1].content.starts_with("Is the reply correct?\n\n# Conversation\nuser: capital of France?"));
        assert!(m[1].content.ends_with("# Reference answer\nParis\n\n# Reply to grade\nLyon"));
    }
}
