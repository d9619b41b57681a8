//! GGCR-style depcheck: the lower layers must not import the upper ones.
//!
//! The check reads the source of each module and collects every in-crate path it names,
//! resolved from the crate root: `use crate::queue::Source`, grouped and nested imports
//! (`use crate::{metrics, queue::{self, Source}}`), paths in expressions and types
//! (`crate::queue::Source::new()`), `$crate::` in macros, and relative paths that climb
//! out of the module (`super::super::queue`, resolved against the file's module path and
//! any inline `mod name { … }` around it). Comments, string and character literals are
//! skipped, so prose that mentions an upper layer is not an import.
//!
//! Must never: pass a file it cannot read (every directory it is given must hold sources),
//! or match text instead of path segments (`crate::queue_ext` is not `crate::queue`).

use std::path::Path;

/// One lexical token of Rust source, as far as paths are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword (`crate`, `super`, `self`, `$crate`, `r#type` as `type`).
    Ident(String),
    /// `::`
    PathSep,
    /// Any other punctuation character (`{`, `}`, `,`, `;`, `*`, `(`, `<`, …).
    Punct(char),
}

/// Tokens of `text`, without comments, string, byte-string, raw-string and character
/// literals, and lifetimes. Numbers come out as identifiers, which is harmless here.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            _ if c.is_whitespace() => i += 1,
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                // Block comments nest in Rust.
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            '"' => i = skip_string(&chars, i + 1),
            '\'' => {
                // A character literal ('a', '\n', '\'', '\u{1F600}') or a lifetime ('a, 'static).
                if next == Some('\\') {
                    // Past the quote, the backslash and the escaped character.
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                }
            }
            ':' if next == Some(':') => {
                out.push(Token::PathSep);
                i += 2;
            }
            '$' if next.is_some_and(|n| n.is_alphabetic() || n == '_') => {
                let start = i;
                i += 1;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            _ if ident_char(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                // Raw strings (r"…", r#"…"#, br#"…"#, cr"…") and raw identifiers (r#type).
                if matches!(word.as_str(), "r" | "br" | "cr") && matches!(chars.get(i), Some('"' | '#')) {
                    let mut hashes = 0;
                    while chars.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if chars.get(i + hashes) == Some(&'"') {
                        i = skip_raw_string(&chars, i + hashes + 1, hashes);
                        continue;
                    }
                    if word == "r" && hashes == 1 {
                        let start = i + 1;
                        i = start;
                        while i < chars.len() && ident_char(chars[i]) {
                            i += 1;
                        }
                        out.push(Token::Ident(chars[start..i].iter().collect()));
                        continue;
                    }
                }
                // b"…" and c"…" are ordinary strings after their prefix.
                if matches!(word.as_str(), "b" | "c") && chars.get(i) == Some(&'"') {
                    i = skip_string(&chars, i + 1);
                    continue;
                }
                // b'x' is a character literal after its prefix.
                if word == "b" && chars.get(i) == Some(&'\'') {
                    i += 1;
                    if chars.get(i) == Some(&'\\') {
                        i += 1;
                    }
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                    continue;
                }
                out.push(Token::Ident(word));
            }
            _ => {
                out.push(Token::Punct(c));
                i += 1;
            }
        }
    }
    out
}

/// The index just past the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index just past `"` followed by `hashes` `#`s, for a raw string whose body starts at `i`.
fn skip_raw_string(chars: &[char], mut i: usize, hashes: usize) -> usize {
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// Every path that starts at `tokens[i]` (just after a `::`), expanded through groups:
/// `a::{b, c::{d, *}}` gives `a::b`, `a::c::d` and `a::c`. Returns the paths and the index
/// after the last token read.
fn path_tree(tokens: &[Token], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    loop {
        match tokens.get(i) {
            Some(Token::Ident(seg)) => {
                // `self` in a group names the group's prefix itself.
                if seg != "self" {
                    prefix.push(seg.clone());
                }
                i += 1;
            }
            Some(Token::Punct('{')) => {
                let mut paths = Vec::new();
                i += 1;
                while let Some(tok) = tokens.get(i) {
                    match tok {
                        Token::Punct('}') => {
                            i += 1;
                            break;
                        }
                        Token::Punct(',') => i += 1,
                        _ => {
                            let (subs, after) = path_tree(tokens, i);
                            // Skip `as alias` and anything else up to the next item.
                            i = after;
                            while let Some(t) = tokens.get(i) {
                                if matches!(t, Token::Punct(',' | '}')) {
                                    break;
                                }
                                i += 1;
                            }
                            paths.extend(subs.into_iter().map(|s| [prefix.clone(), s].concat()));
                        }
                    }
                }
                if paths.is_empty() {
                    paths.push(prefix);
                }
                return (paths, i);
            }
            _ => return (vec![prefix], i),
        }
        if tokens.get(i) == Some(&Token::PathSep) {
            i += 1;
        } else {
            return (vec![prefix], i);
        }
    }
}

/// Every in-crate path that the source `text` of module `module` (its path from the crate
/// root, e.g. `["registry", "http"]`) names, resolved to a path from the crate root.
fn crate_paths(text: &str, module: &[&str]) -> Vec<Vec<String>> {
    paths_from(text, module, &["crate", "$crate"])
}

/// [`crate_paths`] with other names for the crate root: `regrelay` in the binary.
fn paths_from(text: &str, module: &[&str], roots: &[&str]) -> Vec<Vec<String>> {
    let toks = tokens(text);
    // The module each brace level belongs to: the file's module plus inline `mod x { … }`s.
    let mut scope: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut found = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        match tok {
            Token::Punct('{') => {
                depth += 1;
                if i >= 2
                    && toks[i - 2] == Token::Ident("mod".into())
                    && let Token::Ident(name) = &toks[i - 1]
                {
                    scope.push(name.clone());
                    inline.push(depth);
                }
            }
            Token::Punct('}') => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) => {
                // A path starts here only if no `::` comes before it.
                let starts = i == 0 || toks[i - 1] != Token::PathSep;
                if !starts || toks.get(i + 1) != Some(&Token::PathSep) {
                    continue;
                }
                let base: Vec<String> = match word.as_str() {
                    w if roots.contains(&w) => Vec::new(),
                    "self" => scope.clone(),
                    "super" => {
                        // Climb once per `super`.
                        let mut up = scope.clone();
                        up.pop();
                        let mut j = i + 2;
                        while toks.get(j) == Some(&Token::Ident("super".into()))
                            && toks.get(j + 1) == Some(&Token::PathSep)
                        {
                            up.pop();
                            j += 2;
                        }
                        let (paths, _) = path_tree(&toks, j);
                        found.extend(paths.into_iter().map(|p| [up.clone(), p].concat()));
                        continue;
                    }
                    _ => continue,
                };
                let (paths, _) = path_tree(&toks, i + 2);
                found.extend(paths.into_iter().map(|p| [base.clone(), p].concat()));
            }
            _ => {}
        }
    }
    found
}

/// The paths `text` (module `module`) names that fall under one of `forbidden`
/// (`"crate::queue"`, or `"crate::"` for anything in the crate), leaving out paths into
/// `module`'s own subtree. Each hit is printed as `crate::a::b`.
fn forbidden_paths(text: &str, module: &[&str], forbidden: &[&str]) -> Vec<String> {
    let prefixes: Vec<Vec<&str>> = forbidden
        .iter()
        .map(|f| {
            let rest = f.strip_prefix("crate::").unwrap_or(f);
            rest.split("::").filter(|s| !s.is_empty()).collect()
        })
        .collect();
    // Paths into the module's own top-level module (its children, its `super`s) are its own.
    let own = module.first();
    let mut hits = Vec::new();
    for path in crate_paths(text, module) {
        if own.is_some_and(|own| path.first().is_some_and(|first| first == own)) {
            continue;
        }
        let under = |p: &Vec<&str>| path.len() >= p.len() && path.iter().zip(p).all(|(a, b)| a == b);
        if prefixes.iter().any(under) {
            let shown = format!("crate::{}", path.join("::"));
            if !hits.contains(&shown) {
                hits.push(shown);
            }
        }
    }
    hits
}

/// The module path of a source file under `src/` (`registry/http.rs` → `["registry",
/// "http"]`, `registry/mod.rs` → `["registry"]`, `lib.rs` → `[]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            parts.push(stem);
        }
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Fails if any source under `src/<dir>` names a path under one of `forbidden`.
fn assert_no_imports(dir: &str, forbidden: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src.join(dir), &mut files);
    assert!(!files.is_empty(), "no sources under src/{dir}");
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let module = module_of(path.strip_prefix(&src).unwrap());
        let module: Vec<&str> = module.iter().map(String::as_str).collect();
        let hits = forbidden_paths(&text, &module, forbidden);
        assert!(
            hits.is_empty(),
            "{} names {}, which points up the layering (forbidden here: {})",
            path.display(),
            hits.join(", "),
            forbidden.join(", ")
        );
    }
}

#[test]
fn registry_and_replicate_never_import_queue_or_pipeline() {
    let upper = [
        "crate::queue",
        "crate::pipeline",
        "crate::app",
        "crate::admin",
        "crate::cli",
    ];
    assert_no_imports("registry", &upper);
    assert_no_imports("replicate", &upper);
}

#[test]
fn registry_never_imports_replicate_and_leaves_import_nothing() {
    assert_no_imports("registry", &["crate::replicate"]);
    assert_no_imports("oci", &["crate::"]);
    assert_no_imports("event", &["crate::registry", "crate::replicate", "crate::config"]);
    assert_no_imports("metrics.rs", &["crate::"]);
    assert_no_imports("shutdown.rs", &["crate::"]);
    let not_config = [
        "crate::registry",
        "crate::replicate",
        "crate::queue",
        "crate::pipeline",
        "crate::metrics",
    ];
    // `config` builds the rule model of `rules` (patterns, templates) and checks names with
    // `oci`'s grammar; nothing else of the crate.
    assert_no_imports(
        "config",
        &[&not_config[..], &["crate::event", "crate::app", "crate::cli"]].concat(),
    );
    assert_no_imports("rules/model.rs", &["crate::config", "crate::event", "crate::rules"]);
    // Token providers sit just above config, for the registry client and queues alike.
    assert_no_imports(
        "credentials.rs",
        &[&not_config[..], &["crate::app", "crate::oci"]].concat(),
    );
}

#[test]
fn only_the_pipeline_sits_between_sources_and_the_engine() {
    // Sources know nothing of the engine; the planner and the admin server do no I/O
    // on registries; the pipeline reaches registries only through `replicate`.
    let engine = ["crate::registry", "crate::replicate", "crate::pipeline"];
    assert_no_imports("queue", &engine);
    assert_no_imports("rules", &engine);
    // The rule model sits below `config`, which builds it: `rules` never names `config`.
    assert_no_imports("rules", &["crate::config"]);
    assert_no_imports(
        "admin.rs",
        &["crate::registry", "crate::replicate", "crate::queue", "crate::pipeline"],
    );
    assert_no_imports(
        "pipeline",
        &["crate::registry", "crate::app", "crate::admin", "crate::cli"],
    );
}

/// What only the message path and the application may import: the broker, the pipeline,
/// events, and the composition roots.
const MESSAGES: [&str; 6] = [
    "crate::queue",
    "crate::pipeline",
    "crate::event",
    "crate::app",
    "crate::admin",
    "crate::cli",
];

#[test]
fn the_executor_knows_nothing_of_messages() {
    assert_no_imports("engine", &MESSAGES);
    assert_no_imports(
        "health.rs",
        &[&MESSAGES[..], &["crate::engine", "crate::replicate", "crate::registry"]].concat(),
    );
}

#[test]
fn watches_and_gates_know_nothing_of_messages() {
    // Issue 14: watches are a front end over the executor, beside the pipeline, not on it;
    // gates only read registries.
    assert_no_imports("watch", &MESSAGES);
    assert_no_imports(
        "gates",
        &[&MESSAGES[..], &["crate::engine", "crate::watch", "crate::replicate"]].concat(),
    );
}

#[test]
fn sync_is_a_front_end_beside_the_pipeline() {
    // It changes targets only through the executor and never sees a message.
    assert_no_imports("sync", &MESSAGES);
    assert_no_imports("engine", &["crate::sync"]);
    assert_no_imports("pipeline", &["crate::sync"]);
}

#[test]
fn command_front_ends_sit_on_the_composition_root_not_below_it() {
    // `cli` (the `copy` command) builds its engine through `app`, like `run`; nothing but
    // the binary calls into it, and it does not reach into the daemon's layers.
    assert_no_imports("cli", &["crate::queue", "crate::pipeline", "crate::admin"]);
    assert_no_imports("app.rs", &["crate::cli"]);
    for dir in ["queue", "pipeline", "rules", "event", "credentials.rs", "admin.rs"] {
        assert_no_imports(dir, &["crate::cli"]);
    }
}

#[test]
fn the_binary_stays_thin() {
    // main.rs parses the command line and hands each command to a library front end.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let allowed = ["app", "cli", "config", "notify"];
    let paths = paths_from(&text, &[], &["regrelay"]);
    assert!(!paths.is_empty(), "main.rs names nothing of the library");
    for p in paths {
        let top = p.first().map(String::as_str).unwrap_or_default();
        assert!(
            allowed.contains(&top),
            "main.rs names regrelay::{}: only {allowed:?} belong in the binary",
            p.join("::")
        );
    }
}

mod matcher {
    use super::{crate_paths, forbidden_paths, module_of, tokens};

    fn hits(text: &str, module: &[&str]) -> Vec<String> {
        forbidden_paths(text, module, &["crate::queue", "crate::pipeline"])
    }

    #[test]
    fn a_plain_import_is_caught() {
        assert_eq!(
            hits("use crate::queue::Source;", &["registry"]),
            ["crate::queue::Source"]
        );
    }

    #[test]
    fn a_grouped_import_is_caught() {
        let text = "use crate::{metrics, queue};\n";
        assert_eq!(hits(text, &["registry", "http"]), ["crate::queue"]);
        let text = "use crate::{\n    config::RegistryConfig,\n    queue::{self, Delivery as D},\n};";
        assert_eq!(hits(text, &["replicate"]), ["crate::queue", "crate::queue::Delivery"]);
    }

    #[test]
    fn a_nested_group_is_caught() {
        let text = "use crate::{oci::{Digest, Reference}, {pipeline::{dedup::*}}};";
        assert_eq!(hits(text, &["registry"]), ["crate::pipeline::dedup"]);
    }

    #[test]
    fn a_path_in_an_expression_or_a_type_is_caught() {
        let text = "fn f() -> usize { let s: crate::queue::Settlement = crate::queue::Settlement::Ack; 0 }";
        assert_eq!(
            hits(text, &["replicate", "ops"]),
            ["crate::queue::Settlement", "crate::queue::Settlement::Ack"]
        );
        let text = "macro_rules! m { () => { $crate::pipeline::Pipeline::new() } }";
        assert_eq!(hits(text, &["registry"]), ["crate::pipeline::Pipeline::new"]);
    }

    #[test]
    fn super_paths_that_climb_out_of_the_module_are_caught() {
        // src/registry/http.rs: super = registry, super::super = the crate root.
        let text = "use super::super::queue::Source;";
        assert_eq!(hits(text, &["registry", "http"]), ["crate::queue::Source"]);
        let text = "use super::super::{oci, queue};";
        assert_eq!(hits(text, &["registry", "http"]), ["crate::queue"]);
        // src/registry/mod.rs: one `super` is already the root.
        assert_eq!(
            hits("fn f() { super::pipeline::run(); }", &["registry"]),
            ["crate::pipeline::run"]
        );
    }

    #[test]
    fn an_allowed_grouped_import_is_not_caught() {
        let text = "use crate::{config::{self, RegistryConfig}, metrics, oci::{Digest, Locator}};";
        assert!(hits(text, &["registry"]).is_empty());
        assert_eq!(
            crate_paths(text, &["registry"]),
            [
                vec!["config"],
                vec!["config", "RegistryConfig"],
                vec!["metrics"],
                vec!["oci", "Digest"],
                vec!["oci", "Locator"]
            ]
        );
    }

    #[test]
    fn super_paths_inside_inline_modules_resolve_from_that_module() {
        // In `mod tests` of src/registry/http.rs, super::super is `registry`: this names
        // `registry::queue`, a child of the module itself, not the crate's `queue`.
        let text = "mod tests { use super::super::queue::Fake; use super::*; }\nuse super::oci;";
        assert!(hits(text, &["registry", "http"]).is_empty());
        assert_eq!(
            crate_paths(text, &["registry", "http"]),
            [
                vec!["registry", "queue", "Fake"],
                vec!["registry", "http"],
                vec!["registry", "oci"]
            ]
        );
        // After the inline module closes, `super` is the file's parent again.
        let text = "mod a { mod b { } }\nfn f() { super::super::queue::x(); }";
        assert_eq!(hits(text, &["registry", "http"]), ["crate::queue::x"]);
    }

    #[test]
    fn comments_strings_and_look_alike_names_are_not_imports() {
        let text = r####"
            //! Must never import crate::queue.
            /* nor crate::pipeline /* nested crate::queue */ still a comment crate::queue */
            /// See [`crate::queue::Source`].
            const A: &str = "crate::queue::Source";
            const B: &str = r#"use crate::{queue}; "# ;
            const C: &[u8] = b"crate::pipeline";
            const D: char = '"'; const E: char = '\''; fn f<'a>(x: &'a str) -> &'a str { x }
            use crate::queue_ext::Thing;
            pub(crate) fn g() {}
            pub(in crate::config) fn h() {}
        "####;
        assert!(
            hits(text, &["registry"]).is_empty(),
            "{:?}",
            crate_paths(text, &["registry"])
        );
        assert_eq!(
            crate_paths(text, &["registry"]),
            [vec!["queue_ext", "Thing"], vec!["config"]]
        );
    }

    #[test]
    fn paths_into_the_module_itself_are_allowed_and_anything_else_is_caught_by_crate() {
        let text = "use crate::oci::Digest; use super::Reference; use crate::metrics;";
        assert_eq!(forbidden_paths(text, &["oci", "x"], &["crate::"]), ["crate::metrics"]);
    }

    #[test]
    fn raw_identifiers_and_lifetimes_do_not_confuse_the_tokenizer() {
        let toks = tokens("let r#type = 'x'; fn f<'a>() {} crate::queue");
        assert!(toks.contains(&super::Token::Ident("type".into())));
        assert!(!toks.contains(&super::Token::Ident("a".into())));
        assert_eq!(
            crate_paths("let r#type = '{'; crate::queue::X", &["registry"]),
            [vec!["queue", "X"]]
        );
    }

    #[test]
    fn file_paths_map_to_module_paths() {
        use std::path::Path;
        assert_eq!(module_of(Path::new("registry/http.rs")), ["registry", "http"]);
        assert_eq!(module_of(Path::new("registry/mod.rs")), ["registry"]);
        assert_eq!(module_of(Path::new("metrics.rs")), ["metrics"]);
        assert!(module_of(Path::new("lib.rs")).is_empty());
    }
}
