//! Tidy: the source tree's invariants (ARCHITECTURE.md, Invariants), checked over
//! `src/` the rust-analyzer way. Each file is parsed with `syn` (line numbers from
//! proc-macro2's span locations), and one `#[test]` per rule names every
//! `file:line` that breaks it. Each rule also has a test that runs its checker
//! over a small source with a violation, so the checker itself is known to fail.
//!
//! `scripts/import-cycles` prints the module import graph's cycles (this file's
//! `import_graph_has_no_cycles_among_the_core_modules`, run with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{LazyLock, OnceLock};

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use regex::Regex;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};

/// The longest a function may be, from its `fn` line to its closing brace.
const FN_LIMIT: usize = 120;

/// Modules that do no I/O: a file `src/NAME.rs` or any file under `src/NAME/`.
const PURE: &[&str] =
    &["spec", "plan", "pricing", "stats", "rank", "report", "stopping", "run", "space", "template", "html", "bayes"];

/// Paths that do file, network, process or database I/O, or are an async runtime.
const IO_PATHS: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::os::unix::net",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "std::io::Stdin",
    "std::io::Stdout",
    "std::io::Stderr",
    "io::stdin",
    "io::stdout",
    "io::stderr",
    "tokio",
    "rusqlite",
    "reqwest",
    "hyper",
    "hyper_util",
    "axum",
    "libc",
    "tempfile",
    "File",
    "OpenOptions",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
];

/// Modules a pure module may not import.
const IMPURE_MODULES: &[&str] = &["store", "provider", "sweep", "cli", "serve"];

/// Top-level modules whose import cycles fail the graph test.
const CORE_MODULES: &[&str] = &["spec", "plan", "store", "provider", "rank", "report", "run", "space"];

/// Submodules of `serve` that must not import each other in a circle.
const SERVE_PAIR: &[&str] = &["serve::jobs", "serve::worker"];

/// Top-level modules whose submodules are nodes of the import graph of their own.
const SPLIT_MODULES: &[&str] = &["serve", "eval"];

/// The standard streams only `src/cli/` may write to.
const STD_STREAMS: &[&str] = &["std::io::stdout", "std::io::stderr", "io::stdout", "io::stderr"];

/// The print macros only `src/cli/` may call.
const PRINT_MACROS: &[&str] = &["print", "println", "eprint", "eprintln", "dbg"];

// ---------------------------------------------------------------------------
// The source tree, scanned once.

/// A `.rs` file of `src/`: its path from the repository root and its text.
struct Source {
    path: String,
    text: String,
}

/// One broken rule, at a line of a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    path: String,
    line: usize,
    rule: &'static str,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.path, self.line, self.rule, self.message)
    }
}

/// What the rules need from one file.
#[derive(Default)]
struct Facts {
    path: String,
    /// `["serve", "jobs"]` for `src/serve/jobs.rs`; `None` for `src/main.rs`, the binary.
    module: Option<Vec<String>>,
    header: bool,
    parse_error: Option<(usize, String)>,
    paths: Vec<PathRef>,
    macros: Vec<Mention>,
    strings: Vec<Mention>,
    fns: Vec<FnRef>,
}

/// A path named in the code (a `use` leaf, an expression, a type, a macro's path),
/// resolved to `crate::…` when it starts with `crate`, `self`, `super` or a child module.
struct PathRef {
    path: String,
    line: usize,
    in_test: bool,
}

/// A macro invocation (its name) or a string literal (its value).
struct Mention {
    text: String,
    line: usize,
    in_test: bool,
}

/// A function: its name, the line of `fn` and its length in lines.
struct FnRef {
    name: String,
    line: usize,
    lines: usize,
}

/// The module path of a file of `src/`, `None` for the binary's `src/main.rs`.
fn module_of(path: &str) -> Option<Vec<String>> {
    let rel = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    match parts.as_slice() {
        [only] if only == "main" => return None,
        [only] if only == "lib" => return Some(Vec::new()),
        _ => {}
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// Every `.rs` file under `CARGO_MANIFEST_DIR/src`, in path order.
fn read_tree() -> Vec<Source> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Source>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
                out.push(Source { path: rel, text });
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(root, &root.join("src"), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(out.len() > 10, "src/ looks empty: {} files", out.len());
    out
}

/// The real tree, parsed once for all the rules.
fn tree() -> &'static [Facts] {
    static TREE: OnceLock<Vec<Facts>> = OnceLock::new();
    TREE.get_or_init(|| scan_all(&read_tree()))
}

/// Facts of every file; module paths are resolved against the files' own modules.
fn scan_all(sources: &[Source]) -> Vec<Facts> {
    let modules: BTreeSet<Vec<String>> = sources.iter().filter_map(|s| module_of(&s.path)).collect();
    sources.iter().map(|s| scan(s, &modules)).collect()
}

/// Parses one file and collects its facts.
fn scan(source: &Source, modules: &BTreeSet<Vec<String>>) -> Facts {
    let module = module_of(&source.path);
    let mut facts = Facts {
        path: source.path.clone(),
        module: module.clone(),
        header: source.text.trim_start().starts_with("//!"),
        ..Facts::default()
    };
    match syn::parse_file(&source.text) {
        Ok(file) => {
            let mut scanner = Scanner {
                facts: &mut facts,
                modules,
                module: module.unwrap_or_default(),
                in_test: 0,
                fn_depth: 0,
                impl_type: None,
            };
            scanner.visit_file(&file);
        }
        Err(e) => facts.parse_error = Some((e.span().start().line, e.to_string())),
    }
    facts
}

fn line(span: Span) -> usize {
    span.start().line
}

/// Whether the attributes make an item test-only: `#[cfg(test)]`, `#[test]`, `#[tokio::test]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        if !path.is_ident("cfg") {
            return false;
        }
        let tokens = match &a.meta {
            syn::Meta::List(list) => list.tokens.to_string().replace(' ', ""),
            _ => return false,
        };
        tokens == "test" || (tokens.starts_with("all(") && tokens.contains("test") && !tokens.contains("not(test"))
    })
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

/// The `syn` visitor behind [`scan`].
struct Scanner<'a> {
    facts: &'a mut Facts,
    modules: &'a BTreeSet<Vec<String>>,
    /// The module being visited (the file's, plus inline `mod`s).
    module: Vec<String>,
    in_test: usize,
    fn_depth: usize,
    impl_type: Option<String>,
}

impl Scanner<'_> {
    /// `crate::…` for a path that starts with `crate`, `self`, `super` or a child
    /// module of the current one (`use jobs::X` in `serve/mod.rs`); others unchanged.
    fn resolve(&self, segments: &[String], leading_colon: bool, is_use: bool) -> String {
        let absolute = |tail: &[String], base: &[String]| {
            let mut all = vec!["crate".to_string()];
            all.extend(base.iter().cloned());
            all.extend(tail.iter().cloned());
            all.join("::")
        };
        let first = segments.first().map(String::as_str);
        if leading_colon || first.is_none() {
            return segments.join("::");
        }
        match first.unwrap() {
            "crate" => absolute(&segments[1..], &[]),
            "self" => absolute(&segments[1..], &self.module),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = &self.module[..self.module.len().saturating_sub(ups)];
                absolute(&segments[ups..], base)
            }
            child if (is_use || segments.len() > 1) && self.is_child(child) => absolute(segments, &self.module),
            _ => segments.join("::"),
        }
    }

    fn is_child(&self, name: &str) -> bool {
        let mut path = self.module.clone();
        path.push(name.to_string());
        self.modules.contains(&path)
    }

    fn add_path(&mut self, segments: &[String], leading_colon: bool, is_use: bool, line: usize) {
        let path = self.resolve(segments, leading_colon, is_use);
        self.facts.paths.push(PathRef { path, line, in_test: self.in_test > 0 });
    }

    /// Each leaf of a `use` tree as one path, at the leaf's line.
    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>, leading_colon: bool) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix, leading_colon);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut full = prefix.clone();
                if n.ident != "self" {
                    full.push(n.ident.to_string());
                }
                self.add_path(&full, leading_colon, true, line(n.ident.span()));
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.add_path(&full, leading_colon, true, line(r.ident.span()));
            }
            syn::UseTree::Glob(g) => {
                let full = prefix.clone();
                self.add_path(&full, leading_colon, true, line(g.star_token.span));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, prefix, leading_colon);
                }
            }
        }
    }

    fn string(&mut self, value: String, line: usize) {
        self.facts.strings.push(Mention { text: value, line, in_test: self.in_test > 0 });
    }

    /// A macro body that is not a list of expressions (`macro_rules!`, `json!`, `matches!`):
    /// its string literals, macro calls and `a::b` paths, read from the tokens.
    fn raw_tokens(&mut self, tokens: TokenStream) {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            match &tokens[i] {
                TokenTree::Group(g) => self.raw_tokens(g.stream()),
                TokenTree::Literal(lit) => {
                    if let Ok(s) = syn::parse2::<syn::LitStr>(TokenTree::Literal(lit.clone()).into()) {
                        self.string(s.value(), line(lit.span()));
                    }
                }
                TokenTree::Ident(ident) => {
                    let mut segments = vec![ident.to_string()];
                    let mut j = i;
                    while let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)), Some(TokenTree::Ident(next))) =
                        (tokens.get(j + 1), tokens.get(j + 2), tokens.get(j + 3))
                    {
                        if a.as_char() != ':' || a.spacing() != Spacing::Joint || b.as_char() != ':' {
                            break;
                        }
                        segments.push(next.to_string());
                        j += 3;
                    }
                    if let Some(TokenTree::Punct(bang)) = tokens.get(j + 1)
                        && bang.as_char() == '!'
                    {
                        let name = segments.last().cloned().unwrap_or_default();
                        self.facts.macros.push(Mention {
                            text: name,
                            line: line(ident.span()),
                            in_test: self.in_test > 0,
                        });
                    }
                    if segments.len() > 1 {
                        self.add_path(&segments, false, false, line(ident.span()));
                    }
                    i = j;
                }
                TokenTree::Punct(_) => {}
            }
            i += 1;
        }
    }

    fn function(&mut self, name: String, fn_token: Span, close: Span) {
        if self.fn_depth == 0 {
            let (start, end) = (line(fn_token), line(close));
            self.facts.fns.push(FnRef { name, line: start, lines: end + 1 - start });
        }
    }
}

impl<'ast> Visit<'ast> for Scanner<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let test = is_test(item_attrs(item));
        self.in_test += usize::from(test);
        visit::visit_item(self, item);
        self.in_test -= usize::from(test);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&item.tree, &mut Vec::new(), item.leading_colon.is_some());
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        let at = path.segments.first().map(|s| line(s.ident.span())).unwrap_or(0);
        self.add_path(&segments, path.leading_colon.is_some(), false, at);
        visit::visit_path(self, path);
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Doc comments are attributes with a string: prose, not code.
        if !attr.path().is_ident("doc") {
            visit::visit_attribute(self, attr);
        }
    }

    fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
        self.string(lit.value(), line(lit.span()));
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let name = mac.path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        let at = mac.path.segments.last().map(|s| line(s.ident.span())).unwrap_or(0);
        self.facts.macros.push(Mention { text: name, line: at, in_test: self.in_test > 0 });
        self.visit_path(&mac.path);
        match mac.parse_body_with(Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated) {
            Ok(args) => args.iter().for_each(|e| self.visit_expr(e)),
            Err(_) => self.raw_tokens(mac.tokens.clone()),
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let name = match &*item.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        let outer = std::mem::replace(&mut self.impl_type, name);
        visit::visit_item_impl(self, item);
        self.impl_type = outer;
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        self.function(item.sig.ident.to_string(), item.sig.fn_token.span, item.block.brace_token.span.close());
        self.fn_depth += 1;
        visit::visit_item_fn(self, item);
        self.fn_depth -= 1;
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        let name = match &self.impl_type {
            Some(t) => format!("{t}::{}", item.sig.ident),
            None => item.sig.ident.to_string(),
        };
        let test = is_test(&item.attrs);
        self.function(name, item.sig.fn_token.span, item.block.brace_token.span.close());
        self.fn_depth += 1;
        self.in_test += usize::from(test);
        visit::visit_impl_item_fn(self, item);
        self.in_test -= usize::from(test);
        self.fn_depth -= 1;
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(body) = &item.default {
            self.function(item.sig.ident.to_string(), item.sig.fn_token.span, body.brace_token.span.close());
        }
        self.fn_depth += 1;
        visit::visit_trait_item_fn(self, item);
        self.fn_depth -= 1;
    }
}

// ---------------------------------------------------------------------------
// The rules.

fn parse_errors(tree: &[Facts]) -> Vec<Violation> {
    tree.iter()
        .filter_map(|f| {
            let (line, message) = f.parse_error.clone()?;
            Some(Violation { path: f.path.clone(), line, rule: "parse", message })
        })
        .collect()
}

fn is_pure(path: &str) -> Option<&'static str> {
    PURE.iter().copied().find(|m| path == format!("src/{m}.rs") || path.starts_with(&format!("src/{m}/")))
}

/// Whether `path` is `prefix` or starts with `prefix::`.
fn starts_with_path(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with("::"))
}

/// Rule a: a pure module does no I/O and imports neither store, provider, sweep, cli,
/// serve nor tokio. Its `#[cfg(test)]` code is not checked: tests may read fixtures.
fn check_pure_modules(tree: &[Facts]) -> Vec<Violation> {
    let mut out = parse_errors(tree);
    for file in tree {
        let Some(module) = is_pure(&file.path) else { continue };
        for p in file.paths.iter().filter(|p| !p.in_test) {
            // A crate's name alone (`hyper`) is as likely a local variable: a crate is
            // used through a path into it (`hyper::Server`). A type (`File`) counts alone.
            let crate_alone = |io: &str| !io.contains("::") && io.starts_with(char::is_lowercase) && p.path == io;
            let io = IO_PATHS.iter().find(|io| starts_with_path(&p.path, io) && !crate_alone(io));
            let impure = IMPURE_MODULES.iter().find(|m| starts_with_path(&p.path, &format!("crate::{m}")));
            let message = match (io, impure) {
                (Some(io), _) => format!("pure module `{module}` does I/O: `{}` (`{io}`)", p.path),
                (None, Some(m)) => format!("pure module `{module}` imports `{m}`: `{}`", p.path),
                (None, None) => continue,
            };
            out.push(Violation { path: file.path.clone(), line: p.line, rule: "pure-module", message });
        }
    }
    dedup(out)
}

/// SQL statements, by their shape: a keyword pair (`SELECT … FROM`, `INSERT INTO`,
/// `UPDATE x SET`, …) in capitals, as `src/store/` writes SQL; a lone `BEGIN` or
/// `COMMIT` is a statement when it is the whole string. Prose in lower case
/// ("select a model from the list") is not SQL.
static SQL: LazyLock<Regex> = LazyLock::new(|| {
    let statement = r"SELECT\s[\s\S]*?\sFROM\s|INSERT\s+(OR\s+\w+\s+)?INTO\s|REPLACE\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s|DROP\s+(TABLE|INDEX|VIEW)\s|ALTER\s+TABLE\s|PRAGMA\s+\w+|^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT)(\s+\w+)?\s*;?\s*$";
    Regex::new(&format!(r"\b({statement})")).expect("a regex")
});

fn is_sql(text: &str) -> bool {
    SQL.is_match(text)
}

/// Rule b: SQL only in `src/store/`, its tests included.
fn check_sql(tree: &[Facts]) -> Vec<Violation> {
    let mut out = parse_errors(tree);
    for file in tree.iter().filter(|f| !f.path.starts_with("src/store/")) {
        for s in file.strings.iter().filter(|s| is_sql(&s.text)) {
            let shown: String = s.text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(60).collect();
            let message = format!("SQL outside src/store/: \"{shown}\"");
            out.push(Violation { path: file.path.clone(), line: s.line, rule: "sql-outside-store", message });
        }
    }
    dedup(out)
}

/// Rule c: `print!`, `println!`, `eprint!`, `eprintln!` and `dbg!` only in `src/cli/`,
/// and no `std::io::stdout()`/`stderr()` either. Test code elsewhere may print (tests
/// print their figures, and libtest captures them); `dbg!` is refused there too.
fn check_prints(tree: &[Facts]) -> Vec<Violation> {
    let mut out = parse_errors(tree);
    for file in tree.iter().filter(|f| !f.path.starts_with("src/cli/")) {
        for m in &file.macros {
            if PRINT_MACROS.contains(&m.text.as_str()) && (!m.in_test || m.text == "dbg") {
                let message = format!("`{}!` outside src/cli/ (print through cli::out, log with tracing)", m.text);
                out.push(Violation { path: file.path.clone(), line: m.line, rule: "print-outside-cli", message });
            }
        }
        for p in file.paths.iter().filter(|p| !p.in_test) {
            if let Some(stream) = STD_STREAMS.iter().find(|s| starts_with_path(&p.path, s)) {
                let message = format!("`{stream}` outside src/cli/ (print through cli::out, log with tracing)");
                out.push(Violation { path: file.path.clone(), line: p.line, rule: "print-outside-cli", message });
            }
        }
    }
    dedup(out)
}

/// Rule d: every file opens with its `//!` header.
fn check_headers(tree: &[Facts]) -> Vec<Violation> {
    tree.iter()
        .filter(|f| !f.header)
        .map(|f| Violation {
            path: f.path.clone(),
            line: 1,
            rule: "doc-header",
            message: "the file does not begin with a `//!` header saying what it is for".to_string(),
        })
        .collect()
}

/// Rule e: no function over [`FN_LIMIT`] lines, from its `fn` line to its closing brace.
fn check_fn_length(tree: &[Facts]) -> Vec<Violation> {
    let mut out = parse_errors(tree);
    for file in tree {
        for f in file.fns.iter().filter(|f| f.lines > FN_LIMIT) {
            out.push(Violation {
                path: file.path.clone(),
                line: f.line,
                rule: "fn-length",
                message: format!("fn {} is {} lines (limit {FN_LIMIT})", f.name, f.lines),
            });
        }
    }
    out
}

fn dedup(mut v: Vec<Violation>) -> Vec<Violation> {
    v.sort();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------
// The import graph.

/// Module → module it imports → where (the first place found).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The node of a module path: its top-level module, or for `serve` and `eval` the submodule.
fn node_of(module: &[String], modules: &BTreeSet<Vec<String>>) -> Option<String> {
    let top = module.first()?;
    if SPLIT_MODULES.contains(&top.as_str())
        && let Some(sub) = module.get(1)
        && modules.contains(&vec![top.clone(), sub.clone()])
    {
        return Some(format!("{top}::{sub}"));
    }
    Some(top.clone())
}

/// Edges from `use crate::…`, `super::…` and `crate::x::…` paths outside test code.
fn import_graph(tree: &[Facts]) -> Graph {
    let modules: BTreeSet<Vec<String>> = tree.iter().filter_map(|f| f.module.clone()).collect();
    let mut graph = Graph::new();
    for file in tree {
        let Some(from) = file.module.as_deref().and_then(|m| node_of(m, &modules)) else { continue };
        graph.entry(from.clone()).or_default();
        for p in file.paths.iter().filter(|p| !p.in_test) {
            let Some(rest) = p.path.strip_prefix("crate::") else { continue };
            let target: Vec<String> = rest.split("::").map(str::to_string).collect();
            let Some(to) = node_of(&target, &modules) else { continue };
            if to != from && modules.contains(&vec![target[0].clone()]) {
                graph.entry(from.clone()).or_default().entry(to).or_insert_with(|| format!("{}:{}", file.path, p.line));
            }
        }
    }
    graph
}

/// Strongly connected components with more than one node (Tarjan), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn connect(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                if !self.index.contains_key(w.as_str()) {
                    self.connect(w);
                    let low = self.low[v].min(self.low[w.as_str()]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w.as_str()) {
                    let low = self.low[v].min(self.index[w.as_str()]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.connect(v);
        }
    }
    t.out.sort();
    t.out
}

/// One cycle through the component's first node, with the place of each edge:
/// `a -> b (src/a.rs:3) -> a (src/b.rs:9)`.
fn example_chain(graph: &Graph, component: &[String]) -> String {
    let inside: BTreeSet<&str> = component.iter().map(String::as_str).collect();
    let start = component[0].as_str();
    // Breadth-first from the start back to it, inside the component.
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().map(String::as_str).filter(|w| inside.contains(w)) {
            if w == start {
                last = Some(v);
                break;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
        if last.is_some() {
            break;
        }
    }
    let mut middle = Vec::new();
    let mut v = last.expect("a component has a cycle through each node");
    while v != start {
        middle.push(v);
        v = came_from[v];
    }
    middle.reverse();
    let path: Vec<&str> = [start].into_iter().chain(middle).chain([start]).collect();
    let mut text = start.to_string();
    for pair in path.windows(2) {
        text.push_str(&format!(" -> {} ({})", pair[1], graph[pair[0]][pair[1]]));
    }
    text
}

/// The subgraph of `parent`'s submodules, without `parent` itself.
fn children_graph(graph: &Graph, parent: &str) -> Graph {
    let prefix = format!("{parent}::");
    graph
        .iter()
        .filter(|(from, _)| from.starts_with(&prefix))
        .map(|(from, to)| {
            let inner = to.iter().filter(|(t, _)| t.starts_with(&prefix)).map(|(t, at)| (t.clone(), at.clone()));
            (from.clone(), inner.collect())
        })
        .collect()
}

/// A component's line: its modules, one example chain, then each edge inside it.
fn describe(graph: &Graph, component: &[String], label: &str) -> String {
    let mut text = format!("{{{}}}{label}: {}", component.join(", "), example_chain(graph, component));
    for from in component {
        for (to, at) in graph[from].iter().filter(|(to, _)| component.contains(to)) {
            text.push_str(&format!("\n      {from} -> {to} ({at})"));
        }
    }
    text
}

/// Rule f: the cycles of the whole graph (printed), and those that fail: any touching a
/// core module, and any among `serve`'s submodules touching `serve::jobs` or `serve::worker`.
fn check_cycles(tree: &[Facts]) -> (Vec<String>, Vec<String>) {
    let graph = import_graph(tree);
    let mut printed = Vec::new();
    let mut failing = Vec::new();
    for component in cycles(&graph) {
        let text = describe(&graph, &component, "");
        if component.iter().any(|m| CORE_MODULES.contains(&m.as_str())) {
            failing.push(text.clone());
        }
        printed.push(text);
    }
    let serve = children_graph(&graph, "serve");
    for component in cycles(&serve) {
        let text = describe(&serve, &component, " (within serve)");
        if component.iter().any(|m| SERVE_PAIR.contains(&m.as_str())) {
            failing.push(text.clone());
        }
        printed.push(text);
    }
    (printed, failing)
}

// ---------------------------------------------------------------------------
// The tree's tests.

fn assert_none(rule: &str, violations: Vec<Violation>) {
    let list: Vec<String> = violations.iter().map(Violation::to_string).collect();
    assert!(list.is_empty(), "{} violation(s) of the {rule} rule:\n{}", list.len(), list.join("\n"));
}

#[test]
fn pure_modules_do_no_io_and_import_no_effects() {
    assert_none("pure-module", check_pure_modules(tree()));
}

#[test]
fn sql_only_in_store() {
    assert_none("sql-outside-store", check_sql(tree()));
}

#[test]
fn prints_only_in_cli() {
    assert_none("print-outside-cli", check_prints(tree()));
}

#[test]
fn every_file_has_a_doc_header() {
    assert_none("doc-header", check_headers(tree()));
}

#[test]
fn no_function_over_the_length_limit() {
    let tree = tree();
    let mut all: Vec<(usize, String)> = tree
        .iter()
        .flat_map(|f| f.fns.iter().map(|g| (g.lines, format!("{}:{} fn {}", f.path, g.line, g.name))))
        .collect();
    all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    eprintln!("the longest functions in src/ (lines from `fn` to its closing brace; limit {FN_LIMIT}):");
    for (lines, name) in all.iter().take(10) {
        eprintln!("  {lines:>4}  {name}");
    }
    assert_none("fn-length", check_fn_length(tree));
}

#[test]
fn import_graph_has_no_cycles_among_the_core_modules() {
    let (printed, failing) = check_cycles(tree());
    eprintln!("import cycles (strongly connected components of the module graph): {}", printed.len());
    for line in &printed {
        eprintln!("  {line}");
    }
    assert!(failing.is_empty(), "import cycles through the core modules:\n{}", failing.join("\n"));
}

// ---------------------------------------------------------------------------
// Each checker, over a small tree with a violation.

fn sources(files: &[(&str, &str)]) -> Vec<Facts> {
    let files: Vec<Source> =
        files.iter().map(|(path, text)| Source { path: path.to_string(), text: text.to_string() }).collect();
    scan_all(&files)
}

fn shown(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(Violation::to_string).collect()
}

#[test]
fn pure_module_checker_finds_io_and_grouped_imports() {
    let tree = sources(&[
        (
            "src/rank.rs",
            "//! Ranking.\nuse crate::{eval, store::RunState};\nuse std::io::Write;\n\nfn f() {\n    let _ = std::fs::read(\"x\");\n    let _ = format!(\"{:?}\", tokio::time::Instant::now());\n}\nfn g(hyper: &[u8]) -> usize {\n    hyper.len()\n}\n#[cfg(test)]\nmod tests {\n    use std::fs::File;\n}\n",
        ),
        ("src/store/mod.rs", "//! Store.\n"),
        ("src/eval/mod.rs", "//! Eval.\n"),
        ("src/sweep.rs", "//! Sweep: not pure.\nuse std::fs;\n"),
    ]);
    assert_eq!(
        shown(&check_pure_modules(&tree)),
        [
            "src/rank.rs:2: [pure-module] pure module `rank` imports `store`: `crate::store::RunState`",
            "src/rank.rs:6: [pure-module] pure module `rank` does I/O: `std::fs::read` (`std::fs`)",
            "src/rank.rs:7: [pure-module] pure module `rank` does I/O: `tokio::time::Instant::now` (`tokio`)",
        ]
    );
    let tree = sources(&[
        ("src/spec/raw.rs", "//! Raw.\nuse super::super::provider::local::BASE_MODEL;\nuse std::process::Command;\n"),
        ("src/provider/mod.rs", "//! Providers.\n"),
    ]);
    assert_eq!(
        shown(&check_pure_modules(&tree)),
        [
            "src/spec/raw.rs:2: [pure-module] pure module `spec` imports `provider`: `crate::provider::local::BASE_MODEL`",
            "src/spec/raw.rs:3: [pure-module] pure module `spec` does I/O: `std::process::Command` (`std::process`)",
        ]
    );
}

#[test]
fn sql_checker_finds_statements_in_strings_not_comments() {
    let tree = sources(&[
        (
            "src/eval/load.rs",
            "//! Load.\n/// SELECT id FROM runs, in a doc comment.\nfn f() {\n    // INSERT INTO runs, in a comment.\n    let a = \"SELECT id FROM runs WHERE state = ?1\";\n    let b = format!(\"UPDATE runs SET state = '{}'\", 1);\n    let c = r#\"PRAGMA journal_mode\"#;\n    let d = \"COMMIT\";\n    let e = \"select a model from the list\";\n}\n",
        ),
        ("src/store/mod.rs", "//! Store.\nconst Q: &str = \"DELETE FROM runs\";\n"),
    ]);
    assert_eq!(
        shown(&check_sql(&tree)),
        [
            "src/eval/load.rs:5: [sql-outside-store] SQL outside src/store/: \"SELECT id FROM runs WHERE state = ?1\"",
            "src/eval/load.rs:6: [sql-outside-store] SQL outside src/store/: \"UPDATE runs SET state = '{}'\"",
            "src/eval/load.rs:7: [sql-outside-store] SQL outside src/store/: \"PRAGMA journal_mode\"",
            "src/eval/load.rs:8: [sql-outside-store] SQL outside src/store/: \"COMMIT\"",
        ]
    );
}

#[test]
fn print_checker_finds_print_macros_outside_cli() {
    let tree = sources(&[
        (
            "src/rank.rs",
            "//! Ranking.\nfn f() {\n    println!(\"x\");\n    let v = vec![dbg!(1)];\n    std::eprint!(\"y\");\n}\nmacro_rules! shout { () => { eprintln!(\"z\") }; }\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n        eprintln!(\"a figure\");\n        dbg!(2);\n    }\n}\nfn g() { let _ = writeln!(std::io::stdout(), \"w\"); }\n",
        ),
        ("src/cli/mod.rs", "//! The command line.\nfn f() { println!(\"fine here\"); }\n"),
    ]);
    assert_eq!(
        shown(&check_prints(&tree)),
        [
            "src/rank.rs:3: [print-outside-cli] `println!` outside src/cli/ (print through cli::out, log with tracing)",
            "src/rank.rs:4: [print-outside-cli] `dbg!` outside src/cli/ (print through cli::out, log with tracing)",
            "src/rank.rs:5: [print-outside-cli] `eprint!` outside src/cli/ (print through cli::out, log with tracing)",
            "src/rank.rs:7: [print-outside-cli] `eprintln!` outside src/cli/ (print through cli::out, log with tracing)",
            "src/rank.rs:13: [print-outside-cli] `dbg!` outside src/cli/ (print through cli::out, log with tracing)",
            "src/rank.rs:16: [print-outside-cli] `std::io::stdout` outside src/cli/ (print through cli::out, log with tracing)",
        ]
    );
}

#[test]
fn header_checker_finds_a_file_without_its_header() {
    let tree = sources(&[("src/a.rs", "// A plain comment.\nfn f() {}\n"), ("src/b.rs", "\n//! B.\n")]);
    assert_eq!(
        shown(&check_headers(&tree)),
        ["src/a.rs:1: [doc-header] the file does not begin with a `//!` header saying what it is for"]
    );
}

#[test]
fn length_checker_counts_from_fn_to_closing_brace() {
    let body = |n: usize| "    let _ = 1;\n".repeat(n);
    // 1 + 119 + 1 = 121 lines; 1 + 118 + 1 = 120 lines (at the limit); a method of 122 lines;
    // a nested fn and a closure count in their enclosing fn.
    let text = format!(
        "//! Long.\n/// Doc lines do not count.\n#[inline]\nfn long() {{\n{}}}\nfn at_limit() {{\n{}}}\nstruct S;\nimpl S {{\n    pub fn method(&self) {{\n{}    }}\n}}\ntrait T {{\n    fn provided(&self) {{\n{}    }}\n}}\nfn outer() {{\n    fn inner() {{\n{}    }}\n    let c = || {{\n{}    }};\n}}\n",
        body(119),
        body(118),
        body(120),
        body(121),
        body(60),
        body(60),
    );
    let tree = sources(&[("src/stats.rs", &text)]);
    let found = shown(&check_fn_length(&tree));
    assert_eq!(
        found,
        [
            "src/stats.rs:4: [fn-length] fn long is 121 lines (limit 120)",
            "src/stats.rs:247: [fn-length] fn S::method is 122 lines (limit 120)",
            "src/stats.rs:371: [fn-length] fn provided is 123 lines (limit 120)",
            "src/stats.rs:495: [fn-length] fn outer is 126 lines (limit 120)",
        ]
    );
}

#[test]
fn cycle_checker_finds_cycles_and_fails_only_on_the_core_ones() {
    let tree = sources(&[
        ("src/lib.rs", "//! Root.\npub mod spec;\n"),
        ("src/spec.rs", "//! Spec.\nuse crate::data::X;\nfn f() { crate::plan::show(); }\n"),
        ("src/plan.rs", "//! Plan.\nuse crate::{data, spec::Sweep};\n"),
        // Test code makes no edge: otherwise `data` would join the `plan`/`spec` cycle.
        ("src/data/mod.rs", "//! Data.\n#[cfg(test)]\nmod tests { use crate::plan::x; }\n"),
        ("src/cli/mod.rs", "//! Cli.\nuse crate::sweep::go;\n"),
        ("src/sweep.rs", "//! Sweep.\nuse crate::cli::Cli;\n"),
        ("src/serve/mod.rs", "//! Serve.\nuse jobs::create;\nuse worker::train;\n"),
        ("src/serve/jobs.rs", "//! Jobs.\nuse super::{App, worker};\n"),
        ("src/serve/worker.rs", "//! Worker.\nuse super::jobs::event;\nuse super::App;\n"),
    ]);
    let (printed, failing) = check_cycles(&tree);
    assert_eq!(
        printed,
        [
            "{cli, sweep}: cli -> sweep (src/cli/mod.rs:2) -> cli (src/sweep.rs:2)\n      cli -> sweep (src/cli/mod.rs:2)\n      sweep -> cli (src/sweep.rs:2)",
            "{plan, spec}: plan -> spec (src/plan.rs:2) -> plan (src/spec.rs:3)\n      plan -> spec (src/plan.rs:2)\n      spec -> plan (src/spec.rs:3)",
            "{serve, serve::jobs, serve::worker}: serve -> serve::jobs (src/serve/mod.rs:2) -> serve (src/serve/jobs.rs:2)\n      serve -> serve::jobs (src/serve/mod.rs:2)\n      serve -> serve::worker (src/serve/mod.rs:3)\n      serve::jobs -> serve (src/serve/jobs.rs:2)\n      serve::jobs -> serve::worker (src/serve/jobs.rs:2)\n      serve::worker -> serve (src/serve/worker.rs:3)\n      serve::worker -> serve::jobs (src/serve/worker.rs:2)",
            "{serve::jobs, serve::worker} (within serve): serve::jobs -> serve::worker (src/serve/jobs.rs:2) -> serve::jobs (src/serve/worker.rs:2)\n      serve::jobs -> serve::worker (src/serve/jobs.rs:2)\n      serve::worker -> serve::jobs (src/serve/worker.rs:2)",
        ]
    );
    assert_eq!(failing, [printed[1].clone(), printed[3].clone()]);
}
