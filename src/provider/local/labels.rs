//! What the local classifier can learn: its labels (one per distinct training reply, text or tool
//! calls) and how many validation references are among them. Pure: no I/O.

use std::collections::HashSet;

use crate::data::check::canonical_json;
use crate::data::{Conversation, Reply, ToolCall};

/// The label the local classifier learns for a reply, and the reply it gives for that label: the
/// encoded reply ([`Reply::encode`]) with the text trimmed and the calls in a canonical form (each
/// call's arguments parsed and written with sorted keys and no spaces, the calls sorted, their ids
/// dropped). So a text reply's label is its trimmed text, as before tool calls, and replies with
/// the same trimmed text that make the same calls ([`Reply::same_calls`]: names and parsed
/// arguments, in any order) have one label. Empty for a reply of neither text nor calls.
pub fn label(reply: &Reply) -> String {
    let mut calls: Vec<(String, String)> = reply
        .tool_calls
        .iter()
        .map(|c| {
            let arguments = match serde_json::from_str::<serde_json::Value>(&c.arguments) {
                Ok(v) => canonical_json(&v),
                // Arguments that are not JSON stand for themselves, trimmed.
                Err(_) => c.arguments.trim().to_string(),
            };
            (c.name.clone(), arguments)
        })
        .collect();
    calls.sort();
    let tool_calls =
        calls.into_iter().map(|(name, arguments)| ToolCall { id: String::new(), name, arguments }).collect();
    Reply { content: reply.content.trim().to_string(), tool_calls }.encode()
}

/// The label of a conversation's reference reply (empty without one).
pub fn reference_label(c: &Conversation) -> String {
    c.reference_reply().map(|r| label(&r)).unwrap_or_default()
}

/// How many validation references the local classifier can give: a reference is covered when its
/// [`label`] is the label of a training reply, i.e. its encoded reply, trimmed, equals a training
/// reply's, tool calls compared by name and parsed arguments in any order. An uncovered
/// reference is never the model's reply, whatever it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Coverage {
    /// The distinct non-empty training replies: the classes the model picks among.
    pub training_replies: usize,
    /// Validation examples whose reference is among them.
    pub covered: usize,
    /// Validation examples.
    pub total: usize,
}

impl Coverage {
    /// Whether some validation reference is out of the model's reach.
    pub fn is_partial(&self) -> bool {
        self.covered < self.total
    }

    /// The covered share in whole percent, rounded down (so 19 of 20 is 95 % and 199 of 200 is
    /// 99 %, never a misleading 100 %).
    pub fn percent(&self) -> u64 {
        (self.covered as u64 * 100).checked_div(self.total as u64).unwrap_or(100)
    }

    /// What `plan`, `run` and `resume` warn of when some validation reference is out of reach
    /// (`None` when every one is covered): any uncovered reference is an example no run can get
    /// exactly right, so the bound is stated whatever its size. When fewer than half are covered
    /// the replies are free text rather than labels, and the warning says what can learn them.
    pub fn warning(&self) -> Option<String> {
        if !self.is_partial() {
            return None;
        }
        let (covered, total, percent) = (self.covered, self.total, self.percent());
        let advice = if covered * 2 < total {
            ". Free-text replies need a hosted provider or your own trainer (provider = \"command\")".to_string()
        } else {
            format!(
                "; the other {} validation reference(s) appear in no training example: add training examples that \
                 give them, or expect those examples to be missed",
                total - covered
            )
        };
        Some(format!(
            "the local provider picks among the {} replies seen in training; {covered} of {total} validation \
             references ({percent} %) are among them, so at most {percent} % of its replies can be exactly right{advice}",
            self.training_replies
        ))
    }

    /// The leaderboard's note on a local sweep whose references are not all covered.
    pub fn note(&self) -> Option<String> {
        let (covered, total, percent, replies) = (self.covered, self.total, self.percent(), self.training_replies);
        self.is_partial().then(|| {
            format!(
                "local provider: only {covered} of {total} validation references ({percent} %) are replies it can \
                 give (it picks among the {replies} training replies): at most {percent} % of its replies can be \
                 exactly right"
            )
        })
    }
}

/// The coverage of `validation` by the replies of `training` (see [`Coverage`]).
pub fn coverage(training: &[Conversation], validation: &[Conversation]) -> Coverage {
    let classes: HashSet<String> = training.iter().map(reference_label).filter(|l| !l.is_empty()).collect();
    let covered = validation.iter().filter(|c| classes.contains(&reference_label(c))).count();
    Coverage { training_replies: classes.len(), covered, total: validation.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Message;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall { id: "call_id".into(), name: name.into(), arguments: arguments.into() }
    }

    fn conversation(content: &str, calls: Vec<ToolCall>) -> Conversation {
        let reply =
            Message { role: "assistant".into(), content: content.into(), tool_calls: calls, tool_call_id: None };
        Conversation { messages: vec![Message::text("user", "u"), reply], ..Conversation::default() }
    }

    #[test]
    fn equal_calls_have_one_label_and_text_labels_are_the_trimmed_text() {
        let a = Reply { content: String::new(), tool_calls: vec![call("f", r#"{"b": 1, "a": [2, {"y":1,"x":0}]}"#)] };
        let b = Reply { content: " ".into(), tool_calls: vec![call("f", "{\"a\":[2,{\"x\":0, \"y\":1}],\n\"b\":1}")] };
        assert!(a.same_calls(&b));
        assert_eq!(label(&a), label(&b));
        // The label decodes to the same calls.
        assert!(Reply::decode(&label(&a)).same_calls(&a));
        // Two calls in either order.
        let two = |x: &str, y: &str| Reply { content: String::new(), tool_calls: vec![call(x, "{}"), call(y, "{}")] };
        assert_eq!(label(&two("f", "g")), label(&two("g", "f")));
        // Other arguments, another label; a text reply is its trimmed text.
        let c = Reply { content: String::new(), tool_calls: vec![call("f", r#"{"b": 2, "a": [2]}"#)] };
        assert_ne!(label(&a), label(&c));
        assert_eq!(label(&Reply::text("  yes \n")), "yes");
        assert_eq!(label(&Reply::default()), "");
    }

    #[test]
    fn coverage_counts_validation_references_among_the_training_replies() {
        let up = |args: &str| conversation("", vec![call("takeoff_drone", args)]);
        let training = vec![up(r#"{"altitude": 100}"#), conversation("billing", vec![]), conversation("  ", vec![])];
        let validation = vec![
            up(r#"{ "altitude":100 }"#),
            up(r#"{"altitude": 50}"#),
            conversation("billing ", vec![]),
            conversation("refund", vec![]),
        ];
        let c = coverage(&training, &validation);
        assert_eq!(c, Coverage { training_replies: 2, covered: 2, total: 4 });
        assert_eq!((c.percent(), c.is_partial()), (50, true));
        let c = Coverage { training_replies: 9, covered: 199, total: 200 };
        assert_eq!(c.percent(), 99, "rounded down");
        assert!(!coverage(&training, &validation[..1]).is_partial());
        assert_eq!(coverage(&training, &validation[..1]).warning(), None);
        let free = Coverage { training_replies: 60, covered: 0, total: 20 };
        assert_eq!(
            free.warning().unwrap(),
            "the local provider picks among the 60 replies seen in training; 0 of 20 validation references (0 %) \
             are among them, so at most 0 % of its replies can be exactly right. Free-text replies need a hosted \
             provider or your own trainer (provider = \"command\")"
        );
        let labels = Coverage { training_replies: 21, covered: 59, total: 60 };
        assert!(labels.warning().unwrap().contains("59 of 60 validation references (98 %)"));
        assert_eq!(
            free.note().unwrap(),
            "local provider: only 0 of 20 validation references (0 %) are replies it can give (it picks among the \
             60 training replies): at most 0 % of its replies can be exactly right"
        );
        assert!(
            labels.warning().unwrap().contains("; the other 1 validation reference(s) appear in no training example")
        );
    }
}
