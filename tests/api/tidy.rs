//! The house rules, read from the source: the layering ARCHITECTURE.md draws and the size of a file.
//!
//! A top-level module is `src/x.rs` with what lies in `src/x/`. ARCHITECTURE.md's `layers` block lists them from the
//! top down, one layer per line; a module may use (`crate::...`) only modules on lines below its own. These tests
//! read every file under `src/` and fail, naming the file and the path, when one goes against the drawing, so the
//! drawing and the code cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The longest a source file may be: beyond it, a file holds more than one idea and is split along its seams.
const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file under `src/` belongs to; `None` for the crate roots.
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The layers of ARCHITECTURE.md's `layers` block, top first.
fn layers() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let start =
        text.find("```layers\n").expect("ARCHITECTURE.md draws the layering in a ```layers block");
    let block = &text[start + "```layers\n".len()..];
    let block = &block[..block.find("```").expect("the layers block ends")];
    block
        .lines()
        .map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The source without comments, string literals and character literals, so that only code is read.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let at = |k: usize| chars.get(k).copied();
        match chars[i] {
            '/' if at(i + 1) == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0;
                loop {
                    if i >= chars.len() {
                        break;
                    }
                    if chars[i] == '/' && at(i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && at(i + 1) == Some('/') {
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
            'r' if (at(i + 1) == Some('"') || at(i + 1) == Some('#'))
                && !chars
                    .get(i.wrapping_sub(1))
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push(chars[i]);
                    i += 1;
                    continue;
                }
                i += 2 + hashes;
                let close: Vec<char> =
                    std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                while i < chars.len() && chars[i..].iter().take(close.len()).ne(close.iter()) {
                    i += 1;
                }
                i += close.len();
                out.push_str("\"\"");
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if at(i + 1) == Some('\\') => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if at(i + 2) == Some('\'') => i += 3,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The top-level modules a piece of code names through `crate::`, with the line each is named on; a group
/// (`crate::{a, b::C}`) names each of its members.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[at + "crate::".len()..];
        let ident = |s: &str| {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        };
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut member_start = 0;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push((line, ident(&group[member_start..j])));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push((line, ident(&group[member_start..j])));
                        member_start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line, ident(rest)));
        }
    }
    found.retain(|(_, name)| !name.is_empty());
    found
}

#[test]
fn every_module_uses_only_the_layers_below_its_own() {
    let layers = layers();
    let mut layer_of = BTreeMap::new();
    for (depth, layer) in layers.iter().enumerate() {
        for module in layer {
            assert!(
                layer_of.insert(module.clone(), depth).is_none(),
                "ARCHITECTURE.md draws {module} twice"
            );
        }
    }
    let files: Vec<PathBuf> = rust_files(&root().join("src"));
    let mut modules = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else { continue };
        modules.insert(module.clone());
        let Some(&own) = layer_of.get(&module) else { continue };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for (line, used) in crate_paths(&code) {
            let Some(&theirs) = layer_of.get(&used) else { continue };
            if used != module && theirs <= own {
                let relation = if theirs == own { "beside it" } else { "above it" };
                wrong.push(format!(
                    "{}:{line}: {module} uses crate::{used}, which ARCHITECTURE.md draws {relation}",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    let undrawn: Vec<&String> = modules.iter().filter(|m| !layer_of.contains_key(*m)).collect();
    assert!(
        undrawn.is_empty(),
        "ARCHITECTURE.md's layers block does not draw {undrawn:?}; add each where it belongs"
    );
    let gone: Vec<&String> = layer_of.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md's layers block draws {gone:?}, which src/ does not have"
    );
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_reader_of_the_layering_sees_groups_and_ignores_comments_and_strings() {
    let code = code_only(
        "use crate::{alert::{self, Format}, store::Store};\n// crate::engine in a comment\nlet s = \"crate::http\";\nlet r = r#\"crate::cli\"#;\nlet c = '\"'; crate::text::clip(x);\n/* crate::demo */ fn f<'a>(x: &'a str) -> crate::domain::ServerName {}\n",
    );
    let named: Vec<(usize, String)> = crate_paths(&code);
    let names: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["alert", "store", "text", "domain"]);
    assert_eq!(named.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [1, 1, 5, 6]);
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for dir in ["src", "tests", "benches"] {
        for file in rust_files(&root().join(dir)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_LINES {
                long.push(format!(
                    "{}: {lines} lines",
                    file.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines; split each along its seams:\n{}",
        long.join("\n")
    );
}
