//! The layering rule, checked over the source tree: every top-level module sits in one layer
//! of [`LAYERS`], and a module may refer (`use crate::…`, `crate::…::` paths, and `mpcp_pa::…`
//! in the binary) only to itself and to modules of strictly lower layers. Modules of one layer
//! therefore never refer to each other: in particular the adapters `audit`, `hsm` and `keys`
//! meet only through the traits of [`crate::seams`].
//!
//! A re-export counts like any other `use`: an upper module may re-export a lower item at its
//! old path, never the reverse. Comments and string literals are ignored. Edges inside one
//! top-level module (for example `cli::keys` to `cli::serve`) are not this rule's concern.
//!
//! Test code (inline `#[cfg(test)] mod … { … }` blocks, and files declared as
//! `#[cfg(test)] mod …;`) may also refer to modules of its own layer, so that unit tests can
//! wire real adapters together (the key registry's tests record into the real audit log);
//! it may never refer upwards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom to top. Items at the crate root (`crate::Error`, `crate::Result`,
/// `crate::ErrorCode` re-exported from `error`, and `crate::MPCP_SPEC_VERSION`) count as
/// layer 0.
const LAYERS: &[(usize, &[&str])] = &[
    // Errors with stable codes.
    (0, &["error", "os"]),
    // Values and primitives that need nothing but errors.
    (1, &["canonical", "crypto", "events", "metrics", "xrpl"]),
    // Public keys as JWKs (on top of `crypto` and `canonical`).
    (2, &["jwk"]),
    // The thin traits and their small value types.
    (3, &["seams"]),
    // Seam implementations without policy: the clocks, the sled store, the software signer.
    (4, &["clock", "signer", "store"]),
    // Domain: the algorithm policy and the typed artifacts.
    (5, &["algorithms", "model"]),
    // Domain on top of the artifacts: bundle profiles and the offline verifier.
    (6, &["bundle_profiles", "verify", "receipts"]),
    // Adapters: they meet only through seams.
    (7, &["audit", "hsm", "keys"]),
    // The HTTP service.
    (8, &["api"]),
    // The application builder (wiring), between the service and the CLI.
    (9, &["app"]),
    // The command line.
    (10, &["cli"]),
    // The binary.
    (11, &["main"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .find(|(_, mods)| mods.contains(&module))
        .map(|(l, _)| *l)
}

/// Source text with comments and the contents of string and char literals blanked out.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // Raw string r"…", r#"…"#: find the matching closing quote and hashes.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let mut j = i + 2;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            // Copy one UTF-8 character.
            let len = utf8_len(c);
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn ident_at(b: &[u8], mut i: usize) -> (String, usize) {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    let start = i;
    while i < b.len() && is_ident(b[i]) {
        i += 1;
    }
    (String::from_utf8_lossy(&b[start..i]).into_owned(), i)
}

/// The crate-root names that `code` refers to through `prefix` (`crate::` or `mpcp_pa::`):
/// `crate::a::b` gives `a`, `use crate::{a::x, b}` gives `a` and `b`.
fn root_names(code: &str, prefix: &str) -> BTreeSet<String> {
    let b = code.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b'$') {
            continue;
        }
        let mut i = from;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b.get(i) == Some(&b'{') {
            // A group: the first identifier of each element at depth 1.
            let mut depth = 1;
            let mut expect_name = true;
            i += 1;
            while i < b.len() && depth > 0 {
                match b[i] {
                    b'{' => {
                        depth += 1;
                        i += 1;
                    }
                    b'}' => {
                        depth -= 1;
                        i += 1;
                    }
                    b',' if depth == 1 => {
                        expect_name = true;
                        i += 1;
                    }
                    c if depth == 1 && expect_name && is_ident(c) => {
                        let (name, next) = ident_at(b, i);
                        names.insert(name);
                        expect_name = false;
                        i = next;
                    }
                    _ => i += 1,
                }
            }
        } else {
            let (name, _) = ident_at(b, i);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// The layer of a crate-root name: a module's layer, or 0 for items at the root.
fn target_layer(name: &str) -> Option<usize> {
    match name {
        "self" => None,
        "Error" | "ErrorCode" | "Result" | "MPCP_SPEC_VERSION" | "VERSION_STRING" => Some(0),
        _ => layer_of(name),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Splits code into what is compiled always and what only under `cfg(test)`: inline
/// `#[cfg(test)] mod name { … }` blocks go to the second part. Also returns the names of the
/// child modules declared `#[cfg(test)] mod name;` (files of test code).
fn split_test_code(code: &str) -> (String, String, Vec<String>) {
    let b = code.as_bytes();
    let mut prod = String::new();
    let mut test = String::new();
    let mut children = Vec::new();
    let mut from = 0;
    let mut copied = 0;
    while let Some(pos) = code[from..].find("#[cfg(test)]") {
        let at = from + pos;
        from = at + "#[cfg(test)]".len();
        let mut i = from;
        loop {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let (word, next) = ident_at(b, i);
            match word.as_str() {
                "pub" if b.get(next) == Some(&b'(') => {
                    i = next + code[next..].find(')').map_or(0, |p| p + 1);
                }
                "pub" => i = next,
                _ => break,
            }
        }
        let (word, next) = ident_at(b, i);
        if word != "mod" {
            continue;
        }
        let (name, mut j) = ident_at(b, next);
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        match b.get(j) {
            Some(b';') => children.push(name),
            Some(b'{') => {
                let mut depth = 0;
                let mut k = j;
                while k < b.len() {
                    match b[k] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                let end = (k + 1).min(b.len());
                prod.push_str(&code[copied..at]);
                test.push_str(&code[at..end]);
                test.push('\n');
                copied = end;
                from = end;
            }
            _ => {}
        }
    }
    prod.push_str(&code[copied..]);
    (prod, test, children)
}

/// The files of child module `name` declared in `file`.
fn child_files(file: &Path, name: &str) -> [PathBuf; 2] {
    let stem = file.file_stem().unwrap().to_string_lossy();
    let dir = if stem == "mod" || stem == "lib" || stem == "main" {
        file.parent().unwrap().to_path_buf()
    } else {
        file.with_extension("")
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
}

/// Every edge that breaks the rule, as `file: module (layer) -> module (layer)`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut sources = std::collections::BTreeMap::new();
    let mut test_files = BTreeSet::new();
    for file in &files {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let (prod, test, children) = split_test_code(&code);
        for child in children {
            test_files.extend(child_files(file, &child));
        }
        sources.insert(file.clone(), (prod, test));
    }
    // Children of test files are test code too.
    for file in &files {
        if test_files
            .iter()
            .any(|t| file.starts_with(t.with_extension("")))
        {
            test_files.insert(file.clone());
        }
    }
    let mut bad = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            bad.push(format!("{}: module {module} is in no layer", rel.display()));
            continue;
        };
        let (prod, test) = sources.remove(&file).unwrap();
        let (prod, test) = if test_files.contains(&file) {
            (String::new(), prod + &test)
        } else {
            (prod, test)
        };
        let prefix = if module == "main" {
            "mpcp_pa::"
        } else {
            "crate::"
        };
        for (code, is_test) in [(prod, false), (test, true)] {
            for name in root_names(&code, prefix) {
                if name == module {
                    continue;
                }
                match target_layer(&name) {
                    None if name == "self" => {}
                    None => bad.push(format!("{}: {module} -> unknown {name}", rel.display())),
                    Some(l) if l > own || (l == own && !is_test) => bad.push(format!(
                        "{}: {module} (layer {own}) -> {name} (layer {l}){}",
                        rel.display(),
                        if is_test { " in test code" } else { "" }
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    bad
}

#[test]
fn no_module_refers_to_a_module_of_its_own_or_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = violations(&src);
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

#[test]
fn every_module_of_the_crate_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in code_only(&lib).lines() {
        if let Some(rest) = line.trim().strip_prefix("pub mod ") {
            let name = rest.trim_end_matches(';').trim();
            assert!(layer_of(name).is_some(), "module {name} is in no layer");
        }
    }
}

#[test]
fn test_code_is_told_apart() {
    let code = "use crate::a::X;\n#[cfg(test)]\nmod tests {\n    use crate::b::Y;\n    fn f() { if x { crate::c::z() } }\n}\n#[cfg(test)]\npub(crate) mod test_support;\nfn g() { crate::d::w() }\n";
    let (prod, test, children) = split_test_code(code);
    let names = |c: &str| root_names(c, "crate::").into_iter().collect::<Vec<_>>();
    assert_eq!(names(&prod), ["a", "d"]);
    assert_eq!(names(&test), ["b", "c"]);
    assert_eq!(children, ["test_support"]);
    assert_eq!(
        child_files(Path::new("src/keys/registry.rs"), "tests")[0],
        Path::new("src/keys/registry/tests.rs")
    );
}

#[test]
fn references_are_found_in_paths_and_groups_but_not_in_comments_or_strings() {
    let code = code_only(
        "use crate::{a::X, b, c::{d, e}};\n\
         // crate::hidden\n\
         let s = \"crate::quoted\"; let r = r#\"crate::raw\"#; let c = '\"';\n\
         fn f<'a>() { crate::f::g(); }",
    );
    let names: Vec<String> = root_names(&code, "crate::").into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "f"]);
}
