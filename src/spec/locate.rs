//! Finding a key in the sweep file from `toml`'s own spans: the document
//! parsed as a [`DeTable`] keeps the span of every key and value, so an
//! error's offset maps to its dotted key, and a key to its line.
//!
//! One text scan remains, [`deepest_key`]: a key with more dotted parts than
//! the parser allows fails the parse with no span and no document, so its
//! line can only be found in the text.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step<'a> {
    /// A table's key.
    Key(&'a str),
    /// An array's item, 0-based (an array of tables: `[[evaluation.graders]]`).
    Index(usize),
}

/// The span of the key at `path`: the key's name, on its line.
pub(super) fn key_span(doc: &DeTable<'_>, path: &[Step<'_>]) -> Option<Range<usize>> {
    let (mut span, mut value): (Option<Range<usize>>, Option<&Spanned<DeValue<'_>>>) = (None, None);
    let mut table = Some(doc);
    for step in path {
        match *step {
            Step::Key(name) => {
                let (k, v) = table?.iter().find(|(k, _)| k.get_ref() == name)?;
                span = Some(k.span());
                value = Some(v);
            }
            Step::Index(i) => {
                let DeValue::Array(items) = value?.get_ref() else { return None };
                value = Some(items.get(i)?);
                span = value.map(Spanned::span);
            }
        }
        table = value.and_then(|v| v.get_ref().as_table());
    }
    span
}

/// The dotted key (with its tables; an array of tables' item as `[1]`,
/// 1-based) whose name or value holds `offset`: the innermost one.
pub(super) fn key_at(doc: &DeTable<'_>, offset: usize) -> Option<String> {
    let mut path = Vec::new();
    if !in_table(doc, offset, &mut path) {
        return None;
    }
    Some(path.iter().fold(String::new(), |mut key, part| {
        if !key.is_empty() && !part.starts_with('[') {
            key.push('.');
        }
        key.push_str(part);
        key
    }))
}

/// Whether a key of `table`, or one nested in it, holds `offset`; its path
/// is then pushed to `path`.
fn in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(key.get_ref().to_string());
        if in_value(value, offset, path) || key.span().contains(&offset) || value.span().contains(&offset) {
            return true;
        }
        path.pop();
    }
    false
}

/// Whether a key nested in `value` (a table, or an array's tables) holds
/// `offset`.
fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) -> bool {
    match value.get_ref() {
        DeValue::Table(t) => in_table(t, offset, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            let DeValue::Table(t) = item.get_ref() else { return false };
            path.push(format!("[{}]", i + 1));
            let found = in_table(t, offset, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// The line, the start and the number of parts of the first key with
/// more dotted parts than the parser takes (it reports that without a place).
pub(super) fn deepest_key(text: &str) -> Option<(usize, String, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let line = line.trim_start();
        let key = match line.strip_prefix('[') {
            Some(header) => header.split(']').next().unwrap_or_default(),
            None => line.split('=').next().unwrap_or_default(),
        };
        let parts = key.matches('.').count() + 1;
        (parts > 64).then(|| (i + 1, key.trim().chars().take(24).collect(), parts))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "a = 1\n[t]\nb = [1,\n  2]\n[[g]]\nx = 1\n[[g]]\ny = 'z'\nw = { v = true }\n";

    #[test]
    fn an_offset_is_found_in_its_key_however_nested() {
        let doc = DeTable::parse(DOC).unwrap();
        let at = |s: &str| key_at(doc.get_ref(), DOC.find(s).unwrap());
        assert_eq!(at("a =").as_deref(), Some("a"));
        // A value over two lines, found from its second line.
        assert_eq!(at("2]").as_deref(), Some("t.b"));
        // An array of tables' item, 1-based; an inline table's key.
        assert_eq!(at("'z'").as_deref(), Some("g[2].y"));
        assert_eq!(at("true").as_deref(), Some("g[2].w.v"));
    }

    #[test]
    fn a_path_gives_its_keys_span() {
        let doc = DeTable::parse(DOC).unwrap();
        let span = |path: &[Step<'_>]| key_span(doc.get_ref(), path).map(|s| &DOC[s]);
        assert_eq!(span(&[Step::Key("t"), Step::Key("b")]), Some("b"));
        assert_eq!(span(&[Step::Key("g"), Step::Index(1), Step::Key("y")]), Some("y"));
        assert_eq!(span(&[Step::Key("g"), Step::Index(1), Step::Key("w"), Step::Key("v")]), Some("v"));
        assert_eq!(span(&[Step::Key("g"), Step::Index(2)]), None);
        assert_eq!(span(&[Step::Key("b")]), None, "only the top level's keys at the top level");
    }
}
