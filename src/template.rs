//! `{placeholder}` templates: a trainer command's arguments and its config
//! template. `{name}` is replaced by the value of `name`; `{{` and `}}` are
//! a literal brace. Pure: no I/O.

use std::collections::BTreeMap;

/// Why a template cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` names nothing the caller gives.
    #[error("unknown placeholder `{{{0}}}`")]
    Unknown(String),
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("unmatched `{0}` at byte {1}; write `{0}{0}` for a literal brace")]
    Unmatched(char, usize),
    /// `{}` or a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("`{{{0}}}` is not a placeholder name (letters, digits and `_`, not starting with a digit)")]
    BadName(String),
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Brace(char),
    Name(&'a str),
}

fn pieces(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let bytes = template.as_bytes();
    let (mut i, mut text_start) = (0, 0);
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'{' && c != b'}' {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push(Piece::Text(&template[text_start..i]));
        }
        if bytes.get(i + 1) == Some(&c) {
            out.push(Piece::Brace(c as char));
            i += 2;
        } else if c == b'}' {
            return Err(TemplateError::Unmatched('}', i));
        } else {
            let Some(len) = template[i + 1..].find(['}', '{']).filter(|&l| bytes[i + 1 + l] == b'}') else {
                return Err(TemplateError::Unmatched('{', i));
            };
            let name = &template[i + 1..i + 1 + len];
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(TemplateError::BadName(name.to_string()));
            }
            out.push(Piece::Name(name));
            i += len + 2;
        }
        text_start = i;
    }
    if text_start < bytes.len() {
        out.push(Piece::Text(&template[text_start..]));
    }
    Ok(out)
}

/// The placeholder names a template uses, in order, each once.
pub fn placeholders(template: &str) -> Result<Vec<&str>, TemplateError> {
    let mut names = Vec::new();
    for p in pieces(template)? {
        if let Piece::Name(n) = p
            && !names.contains(&n)
        {
            names.push(n);
        }
    }
    Ok(names)
}

/// The template with each placeholder replaced by its value.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for p in pieces(template)? {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Brace(c) => out.push(c),
            Piece::Name(n) => out.push_str(values.get(n).ok_or_else(|| TemplateError::Unknown(n.to_string()))?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<String, String> {
        BTreeMap::from([("lr".to_string(), "0.0002".to_string()), ("output_dir".to_string(), "/r/a".to_string())])
    }

    #[test]
    fn renders_names_and_literal_braces() {
        assert_eq!(render("--lr={lr}", &values()).unwrap(), "--lr=0.0002");
        assert_eq!(render("{output_dir}/x {{lr}} }}", &values()).unwrap(), "/r/a/x {lr} }");
        assert_eq!(render("plain", &values()).unwrap(), "plain");
        assert_eq!(placeholders("{lr}{output_dir}{lr}").unwrap(), ["lr", "output_dir"]);
    }

    #[test]
    fn refuses_unknown_unmatched_and_bad_names() {
        assert_eq!(render("{lora_r}", &values()), Err(TemplateError::Unknown("lora_r".into())));
        assert_eq!(render("a{lr", &values()), Err(TemplateError::Unmatched('{', 1)));
        assert_eq!(render("a}b", &values()), Err(TemplateError::Unmatched('}', 1)));
        assert_eq!(render("{a{lr}}", &values()), Err(TemplateError::Unmatched('{', 0)));
        assert_eq!(render("{}", &values()), Err(TemplateError::BadName(String::new())));
        assert_eq!(render("{1x}", &values()), Err(TemplateError::BadName("1x".into())));
        assert_eq!(render("{a b}", &values()), Err(TemplateError::BadName("a b".into())));
    }
}
