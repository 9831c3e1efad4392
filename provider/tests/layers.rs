//! The layering, checked (README "Architecture"): no crate of the workspace has two top-level
//! modules that import each other (directly or round a longer loop), and inside the provider
//! every import runs downwards: `config` → `core` → `http` → wiring, the doors of `http` reaching
//! each other only through its kit.
//!
//! Imports are read from the source: `crate::x` paths (in `use` trees and in code) and `super::`
//! paths that climb to the crate root, outside `#[cfg(test)]` modules and comments.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// The workspace root (this crate's parent folder).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the provider crate sits in the workspace")
        .to_path_buf()
}

/// Every crate of the workspace: a folder with a `Cargo.toml` and a `src/`.
fn crates() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![workspace()];
    while let Some(dir) = stack.pop() {
        if dir.join("Cargo.toml").is_file() && dir.join("src").is_dir() {
            found.push(dir.clone());
        }
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir()
                && !name.starts_with('.')
                && !matches!(name.as_ref(), "target" | "node_modules" | "src" | "tests")
            {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments.
fn without_comments(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    for line in source.lines() {
        let line = match line.find("//") {
            // A `//` inside a string (a URL) is kept: only whole-line and trailing comments
            // that follow code are dropped, which is what matters for imports.
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The source without comments and without `#[cfg(test)] mod … { … }` blocks.
fn production_code(source: &str) -> String {
    let code = without_comments(source);
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        match (is_mod, after.find('{')) {
            (true, Some(open)) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Every path a piece of code names through `crate::`, as segments: `crate::a::b::c` in code,
/// and each leaf of a `use crate::{a::{b, c}, d}` tree (`[a, b]`, `[a, c]`, `[d]`).
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if !code[..at].ends_with('$') {
            flatten(&code[at + "crate::".len()..], Vec::new(), &mut paths);
        }
    }
    paths
}

/// Reads one path (or use tree) at the start of `rest`, each leaf prefixed by `prefix`.
fn flatten(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut rest = rest.trim_start();
    loop {
        if let Some(tree) = rest.strip_prefix('{') {
            // Split the tree's items at its top level, to the matching brace.
            let mut depth = 1usize;
            let mut start = 0;
            for (i, c) in tree.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        let item = tree[start..i].trim();
                        if !item.is_empty() {
                            flatten(item, path.clone(), out);
                        }
                        start = i + 1;
                        if c == '}' {
                            return;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            break;
        }
        rest = &rest[name.len()..];
        if name != "self" {
            path.push(name);
        }
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// The modules `code` names at one level: the first segment of each `crate::` path, or, under
/// `prefix`, the segment after it.
fn named_modules(code: &str, prefix: &[&str]) -> BTreeSet<String> {
    crate_paths(code)
        .into_iter()
        .filter(|p| p.len() > prefix.len() && prefix.iter().zip(p).all(|(a, b)| a == b))
        .map(|p| p[prefix.len()].clone())
        .collect()
}

/// `super::x` paths that climb to the crate root from a file at `depth` below `src/`.
fn climbing_modules(code: &str, depth: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let needle = "super::".repeat(depth);
    if depth == 0 {
        return names;
    }
    for (at, _) in code.match_indices(&needle) {
        let rest = &code[at + needle.len()..];
        if rest.starts_with("super::") {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// The import graph of one crate: top-level module → top-level modules it names, with the
/// files that name each one.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The graph at a module depth: `depth` 0 is the crate's top-level modules; `prefix` restricts
/// to the submodules of one module (`["http"]`: the doors).
fn graph(krate: &Path, prefix: &[&str]) -> Graph {
    graph_of(krate, prefix, Code::Production)
}

/// Which code of a file the graph reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Code {
    /// Without its `#[cfg(test)]` modules (what the crate is built from).
    Production,
    /// With them: a module's own tests may not reach up the layering either.
    WithTests,
}

fn graph_of(krate: &Path, prefix: &[&str], code: Code) -> Graph {
    let src = krate.join("src");
    let base = prefix.iter().fold(src.clone(), |p, m| p.join(m));
    let mut files = Vec::new();
    rust_files(&base, &mut files);
    let mut graph = Graph::new();
    for file in files {
        let relative = file.strip_prefix(&base).unwrap();
        let mut parts: Vec<String> = relative
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
            .collect();
        let first = parts.remove(0);
        if matches!(first.as_str(), "lib" | "main" | "mod" | "bin") {
            continue;
        }
        let source = fs::read_to_string(&file).unwrap();
        let code = match code {
            Code::Production => production_code(&source),
            Code::WithTests => without_comments(&source),
        };
        // How far the file's module is below `base` (the crate root, or the prefix module), for
        // `super::` paths that climb back to it.
        let depth = 1 + parts.len() - usize::from(relative.ends_with("mod.rs"));
        let mut named = climbing_modules(&code, depth);
        named.extend(named_modules(&code, prefix));
        for target in named {
            if target != first {
                graph
                    .entry(first.clone())
                    .or_default()
                    .entry(target)
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    graph
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            if let Some(targets) = self.graph.get(v) {
                for w in targets.keys() {
                    let w = w.as_str();
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let low = self.low[v].min(self.low[w]);
                        self.low.insert(v, low);
                    } else if self.on_stack.contains(w) {
                        let low = self.low[v].min(self.index[w]);
                        self.low.insert(v, low);
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
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
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

fn describe(graph: &Graph, component: &[String]) -> String {
    let mut out = String::new();
    for from in component {
        for (to, files) in graph.get(from).into_iter().flatten() {
            if component.contains(to) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                out.push_str(&format!("\n    {from} -> {to}: {}", files.join(", ")));
            }
        }
    }
    out
}

#[test]
fn no_crate_has_an_import_cycle_between_its_top_level_modules() {
    let crates = crates();
    assert!(crates.len() >= 7, "found only {crates:?}");
    let mut problems = String::new();
    for krate in &crates {
        let g = graph(krate, &[]);
        for component in cycles(&g) {
            problems.push_str(&format!(
                "\n{}: {}{}",
                krate.file_name().unwrap().to_string_lossy(),
                component.join(" "),
                describe(&g, &component)
            ));
        }
    }
    assert!(problems.is_empty(), "import cycles:{problems}");
}

/// Each layer of the provider, and what it may import (DESIGN.md, README "Architecture"); the
/// bottom two layers are crates of their own, so Cargo enforces theirs.
const PROVIDER_LAYERS: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("core", &["config"]),
    ("http", &["core", "config"]),
];

#[test]
fn provider_imports_run_downwards() {
    // Tests included: a layer's own tests may not reach up either (they would need the layer
    // above to build the layer below).
    let g = graph_of(&workspace().join("provider"), &[], Code::WithTests);
    let mut problems = String::new();
    for (layer, allowed) in PROVIDER_LAYERS {
        for (to, files) in g.get(*layer).into_iter().flatten() {
            let is_layer = PROVIDER_LAYERS.iter().any(|(l, _)| l == to)
                || [
                    "app",
                    "server",
                    "cli",
                    "doctor",
                    "telemetry",
                    "test_harness",
                ]
                .contains(&to.as_str());
            if is_layer && !allowed.contains(&to.as_str()) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                problems.push_str(&format!("\n{layer} -> {to}: {}", files.join(", ")));
            }
        }
    }
    assert!(problems.is_empty(), "imports up the layering:{problems}");
}

#[test]
fn the_doors_meet_only_in_the_kit() {
    let g = graph(&workspace().join("provider"), &["http"]);
    let doors = ["oauth2", "web", "admin", "compat", "upstream"];
    let mut problems = String::new();
    // The kit is below the doors: it imports none of them.
    for from in doors.iter().copied().chain(["kit"]) {
        for (to, files) in g.get(from).into_iter().flatten() {
            if doors.contains(&to.as_str()) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                problems.push_str(&format!("\n{from} -> {to}: {}", files.join(", ")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "doors importing each other, or the kit a door:{problems}"
    );
}

#[test]
fn the_reader_sees_what_it_checks() {
    // The parser itself: a cycle it must find, and what it must ignore.
    let code = production_code(
        "use crate::{a::x, b::{self, y}};\n// crate::c\nfn f() { crate::d::g(); $crate::e::h(); }\n\
         #[cfg(test)]\nmod tests { use crate::z; }\n",
    );
    assert_eq!(
        named_modules(&code, &[]),
        ["a", "b", "d"].iter().map(|s| s.to_string()).collect()
    );
    let code = "use crate::{http::{kit, web::{self, x}}, core::y};";
    assert_eq!(
        named_modules(code, &["http"]),
        ["kit", "web"].iter().map(|s| s.to_string()).collect()
    );
    let mut g = Graph::new();
    g.entry("a".into())
        .or_default()
        .entry("b".into())
        .or_default();
    g.entry("b".into())
        .or_default()
        .entry("c".into())
        .or_default();
    g.entry("c".into())
        .or_default()
        .entry("a".into())
        .or_default();
    g.entry("c".into())
        .or_default()
        .entry("d".into())
        .or_default();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

/// The module path of a provider file (`http/oauth2/token/mod.rs` → `http::oauth2::token`).
fn module_of(relative: &str) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The provider file that holds the item a path names: the longest prefix of the path that is
/// a file (`a/b.rs` or `a/b/mod.rs`), relative to `provider/src`.
fn file_of(path: &[String]) -> Option<String> {
    let src = workspace().join("provider/src");
    (1..=path.len()).rev().find_map(|n| {
        let joined = path[..n].join("/");
        [format!("{joined}.rs"), format!("{joined}/mod.rs")]
            .into_iter()
            .find(|candidate| src.join(candidate).is_file())
    })
}

/// Every provider file one file imports from or calls into: `crate::` paths, `super::` paths
/// (resolved from the file's module) and paths into its own child modules (`mod x;` then
/// `x::…`). Re-exports are followed no further: a file that names `a::Item` leans on `a`.
fn leans_on(relative: &str) -> BTreeSet<String> {
    let source = fs::read_to_string(workspace().join("provider/src").join(relative)).unwrap();
    let code = production_code(&source);
    let module = module_of(relative);
    let mut paths = crate_paths(&code);
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (at, _) in code.match_indices("super::") {
        if code[..at].ends_with("super::") {
            continue;
        }
        let mut rest = &code[at..];
        let mut base = module.clone();
        while let Some(more) = rest.strip_prefix("super::") {
            base.pop();
            rest = more;
        }
        flatten(rest, base, &mut paths);
    }
    for line in code.lines() {
        let line = line.trim_start().trim_start_matches("pub ");
        let Some(child) = line.strip_prefix("mod ").and_then(|l| l.strip_suffix(';')) else {
            continue;
        };
        let needle = format!("{child}::");
        for (at, _) in code.match_indices(&needle) {
            if !code[..at].ends_with(is_ident) {
                flatten(&code[at..], module.clone(), &mut paths);
            }
        }
    }
    paths
        .iter()
        .filter_map(|path| file_of(path))
        .filter(|file| file != relative)
        .collect()
}

/// Where the walk's files may lean without saying so (README: the domain, storage and the kit
/// are on every path).
fn below_the_walk(path: &str) -> bool {
    path.starts_with("http/kit/")
}

/// The backquoted `.rs` files of a piece of the README: provider files (relative to
/// `provider/src`), each checked to exist; the domain's files are left out.
fn readme_files(text: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    for token in text.split('`').skip(1).step_by(2) {
        if !token.ends_with(".rs") || token.contains(' ') {
            continue;
        }
        let path = if token.starts_with("domain/") {
            workspace().join(token)
        } else {
            workspace().join("provider/src").join(token)
        };
        assert!(
            path.is_file(),
            "the README's walk names {token}, which doesn't exist"
        );
        if !token.starts_with("domain/") {
            files.insert(token.to_owned());
        }
    }
    files
}

/// The README's walk of one login ("Architecture") names files that exist, its count of them
/// is the number it lists (the domain's files left out, as the README says), and the files it
/// says the walk leans on are exactly those its files import from or call into (besides the
/// domain, storage and the kit): so the walk can't drift from the code unseen, nor leave a
/// file on the way out of sight.
#[test]
fn the_readme_walk_names_the_files_it_counts() {
    let readme = fs::read_to_string(workspace().join("README.md")).unwrap();
    let walk = readme
        .split_once("### The walk of one login")
        .expect("README has the walk of one login")
        .1;
    let walk = walk.split("\n## ").next().unwrap();
    let numbers = [
        "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten", "Eleven",
        "Twelve", "Thirteen", "Fourteen", "Fifteen",
    ];
    let (steps, said) = walk
        .lines()
        .enumerate()
        .find_map(|(i, line)| {
            let word = line.split(' ').next()?;
            let n = numbers.iter().position(|w| *w == word)? + 1;
            line.strip_prefix(word)?
                .starts_with(" files")
                .then(|| (walk.lines().take(i).collect::<Vec<_>>().join("\n"), n))
        })
        .expect("the walk ends with its count of files (\"Ten files, …\")");
    let files = readme_files(&steps);
    assert_eq!(
        files.len(),
        said,
        "the README's walk says {said} files and lists {}: {files:?}",
        files.len()
    );
    let leaning = walk
        .split_once(LEANS_ON)
        .unwrap_or_else(|| panic!("the walk says what it leans on (\"{LEANS_ON}\")"))
        .1;
    // Its opening paragraph, then the list.
    let leaning = leaning
        .split("\n\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n\n");
    // A room of the walk may be named there too ("the check behind `core/sign_in.rs`").
    let said_leaning: BTreeSet<String> =
        readme_files(&leaning).difference(&files).cloned().collect();
    let leaned_on: BTreeSet<String> = files
        .iter()
        .flat_map(|file| leans_on(file))
        .filter(|file| !files.contains(file) && !below_the_walk(file))
        .collect();
    assert_eq!(
        said_leaning, leaned_on,
        "the README's walk says it leans on {said_leaning:?}; its files import from {leaned_on:?}"
    );
}

/// The words that open the README's list of what the walk leans on.
const LEANS_ON: &str = "What these files lean on";

#[test]
fn the_walk_reader_resolves_paths_to_files() {
    assert_eq!(
        module_of("http/oauth2/token/mod.rs"),
        ["http", "oauth2", "token"]
    );
    let leaning = leans_on("http/oauth2/token/authorization_code.rs");
    assert!(leaning.contains("http/oauth2/token/mod.rs"), "{leaning:?}");
    assert!(
        leaning.contains("core/matrix/provisioning.rs"),
        "{leaning:?}"
    );
    let leaning = leans_on("http/oauth2/token/mod.rs");
    assert!(
        leaning.contains("http/oauth2/token/authorization_code.rs"),
        "{leaning:?}"
    );
    assert!(!leaning.contains("http/oauth2/token/mod.rs"), "{leaning:?}");
}
