//! The shape of the workspace, checked on its sources: no two files of a crate import each
//! other (directly or through others), and every dependency a crate declares is named in its
//! Rust code. Reads files only; no build tool beyond cargo is needed (the equivalent of
//! `cargo machete` and a module-graph tool, which a fresh machine does not have). A file's
//! imports are its `use` trees and the paths it writes from `crate`, `super` or `self`; a
//! relative path to a child module (`use child::Item`) counts no edge.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn members(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let manifest: toml::Table = text.parse().unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "target" {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file of `src` defines: `a/b.rs` and `a/b/mod.rs` are `a::b`, `lib.rs`,
/// `main.rs` the crate root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("lib" | "main" | "mod")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test module (at the end, by
/// convention).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                ""
            } else {
                l
            }
        })
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths of a `use` tree (`a::{b, c::{d, e as f}}`), each split at `::`.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Module>) {
    let mut depth = 0;
    let mut items = vec![String::new()];
    for ch in tree.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            items.push(String::new());
        } else if let Some(last) = items.last_mut() {
            last.push(ch);
        }
    }
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let split = |s: &str| -> Module {
            s.split("::")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let (Some(open), true) = (item.find('{'), item.ends_with('}')) {
            let mut head = prefix.to_vec();
            head.extend(split(&item[..open]));
            expand(&head, &item[open + 1..item.len() - 1], out);
        } else {
            let mut path = prefix.to_vec();
            path.extend(split(item.split(" as ").next().unwrap_or(item)));
            out.push(path);
        }
    }
}

/// Every path of `code` that starts at `crate`, `super` or `self`: `use` trees and paths
/// written inline.
fn paths_in(code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().next_back();
        let stmt_start = &rest[at + 4..];
        rest = stmt_start;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let stmt = stmt_start.split(';').next().unwrap_or("");
        let stmt: String = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|p| stmt.starts_with(p))
        {
            expand(&[], &stmt, &mut out);
        }
    }
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    out
}

/// The module `path` (written in `me`) points into: the longest prefix that is a file. The
/// crate root is left out: it declares the modules and re-exports their items, a facade that
/// every file may name.
fn resolve(me: &Module, path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut at, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super" | "self") => {
            let mut at = me.clone();
            let mut i = 0;
            while let Some(p) = path.get(i) {
                match p.as_str() {
                    "super" => {
                        at.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                i += 1;
            }
            (at, &path[i..])
        }
        _ => return None,
    };
    for part in rest {
        let mut next = at.clone();
        next.push(part.clone());
        if modules.contains(&next) {
            at = next;
        } else {
            break;
        }
    }
    (!at.is_empty() && modules.contains(&at)).then_some(at)
}

/// The import graph of one crate's `src`, file by file.
fn import_graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let me = module_of(src, file);
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let edges = graph.entry(me.clone()).or_default();
        for path in paths_in(&code) {
            if let Some(target) = resolve(&me, &path, &modules)
                && target != me
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// The modules that reach themselves through others, grouped by the circle they are in.
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> BTreeSet<BTreeSet<Module>> {
    let reach = |from: &Module| -> BTreeSet<Module> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&Module> = graph.get(from).into_iter().flatten().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                todo.extend(graph.get(m).into_iter().flatten());
            }
        }
        seen
    };
    let reached: BTreeMap<&Module, BTreeSet<Module>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut out = BTreeSet::new();
    for (m, r) in &reached {
        if r.contains(*m) {
            let circle: BTreeSet<Module> = r
                .iter()
                .filter(|o| reached.get(o).is_some_and(|back| back.contains(*m)))
                .cloned()
                .collect();
            out.insert(circle);
        }
    }
    out
}

fn names(circle: &BTreeSet<Module>) -> Vec<String> {
    circle
        .iter()
        .map(|m| {
            if m.is_empty() {
                "lib".into()
            } else {
                m.join("::")
            }
        })
        .collect()
}

#[test]
fn no_file_imports_another_that_imports_it_back() {
    let root = workspace_root();
    let mut found = Vec::new();
    for member in members(&root) {
        for circle in circles(&import_graph(&root.join(&member).join("src"))) {
            found.push(format!("{member}: {:?}", names(&circle)));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_a_circle_and_a_use_tree() {
    let dir = std::env::temp_dir().join(format!("house-{}", std::process::id()));
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a/mod.rs"), "mod x;\nuse crate::{b::B, c};\n").unwrap();
    std::fs::write(
        src.join("a/x.rs"),
        "// use crate::c;\nfn f() { super::super::c::g(); super::h() }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub struct B;\nfn f() { crate::a::x::f() }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn g() {}\n#[cfg(test)]\nuse crate::b;\n",
    )
    .unwrap();
    let graph = import_graph(&src);
    let _ = std::fs::remove_dir_all(&dir);
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    assert_eq!(graph[&m("a")], BTreeSet::from([m("b"), m("c")]));
    assert_eq!(graph[&m("a::x")], BTreeSet::from([m("a"), m("c")]));
    assert!(
        graph[&m("c")].is_empty(),
        "comments and test code are left out"
    );
    let found = circles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(
        names(found.iter().next().unwrap()),
        vec!["a".to_owned(), "a::x".into(), "b".into()]
    );
}

/// Whether `ident` stands in `text` as a whole word.
fn names_word(text: &str, ident: &str) -> bool {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(ident).any(|(i, _)| {
        !word(text[..i].chars().next_back()) && !word(text[i + ident.len()..].chars().next())
    })
}

#[test]
fn every_declared_dependency_is_used() {
    let root = workspace_root();
    let mut unused = Vec::new();
    for member in members(&root) {
        let dir = root.join(&member);
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        let code: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(toml::Value::as_table) else {
                continue;
            };
            for name in deps.keys() {
                if !names_word(&code, &name.replace('-', "_")) {
                    unused.push(format!("{member} [{section}] {name}"));
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "declared but never named in the crate's code:\n{}",
        unused.join("\n")
    );
}

/// The code of `text` with strings, characters and comments blanked (newlines kept), so
/// braces count as code only.
fn blank_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let keep = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(keep(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            !prev.is_some_and(|p| p.is_alphanumeric() || p == '_')
        } {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body: String = chars[j + 1..].iter().collect();
            let end = body.find(&close).map_or(chars.len(), |e| {
                j + 1 + body[..e].chars().count() + close.chars().count()
            });
            for &ch in &chars[i..end] {
                out.push(keep(ch));
            }
            i = end;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                let step = if chars[i] == '\\' { 2 } else { 1 };
                for &ch in chars.iter().skip(i).take(step) {
                    out.push(keep(ch));
                }
                i += step;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..chars.len()).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            if let Some(e) = end {
                for &ch in &chars[i..=e] {
                    out.push(keep(ch));
                }
                i = e + 1;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Each function of `text` (outside its test module) longer than `limit` lines: (name, first
/// line, lines).
fn long_functions(text: &str, limit: usize) -> Vec<(String, usize, usize)> {
    let code = blank_literals(text.split("#[cfg(test)]").next().unwrap_or(""));
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let lead = &words[..at];
        let item = lead.iter().all(|w| {
            matches!(
                *w,
                "pub" | "crate" | "super" | "in" | "async" | "const" | "unsafe" | "extern"
            )
        });
        let Some(name) = words.get(at + 1).filter(|_| item) else {
            continue;
        };
        let mut depth = 0usize;
        let mut opened = false;
        'scan: for (n, l) in lines.iter().enumerate().skip(start) {
            for ch in l.chars() {
                match ch {
                    ';' if !opened => break 'scan,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => {
                        depth = depth.saturating_sub(1);
                        if opened && depth == 0 {
                            let len = n - start + 1;
                            if len > limit {
                                out.push(((*name).to_owned(), start + 1, len));
                            }
                            break 'scan;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// The Rust files of the workspace that are not tests: every member but the `tests` crate,
/// without `tests/` folders, `tests.rs` files and the conformance suite (a test suite shipped
/// as a library for backend authors).
fn non_test_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for member in members(root) {
        if member == "tests" {
            continue;
        }
        rust_files(&root.join(&member), &mut files);
    }
    files.retain(|f| {
        let rel = f.strip_prefix(root).unwrap_or(f);
        !rel.components().any(|c| c.as_os_str() == "tests")
            && f.file_name()
                .is_some_and(|n| n != "tests.rs" && n != "conformance.rs")
    });
    files
}

#[test]
fn no_file_over_800_lines_outside_tests() {
    let root = workspace_root();
    let long: Vec<String> = non_test_files(&root)
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > 800).then(|| format!("{}: {lines}", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over 800 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_over_100_lines_outside_tests() {
    let root = workspace_root();
    let mut long = Vec::new();
    for f in non_test_files(&root) {
        for (name, line, len) in long_functions(&std::fs::read_to_string(&f).unwrap(), 100) {
            long.push(format!("{}:{line} {name}: {len} lines", f.display()));
        }
    }
    assert!(
        long.is_empty(),
        "functions over 100 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_length_checker_sees_through_strings_and_comments() {
    let body = "    let x = 1;\n".repeat(99);
    let short = "    let x = 1;\n".repeat(98);
    let text = format!(
        "fn short() {{\n{short}}}\n\
         pub(crate) async fn long() {{\n    let s = \"}}\"; // }}\n    let c = '{{';\n{body}}}\n\
         fn decl();\nfn raw() -> &'static str {{ r#\"}}\"# }}\n\
         #[cfg(test)]\nmod tests {{ fn huge() {{\n{body}{body}}} }}\n"
    );
    assert_eq!(
        long_functions(&text, 100),
        vec![("long".to_owned(), 101, 103)]
    );
}
