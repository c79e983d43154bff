//! The README's snippets are the code of this repository: every ```rust
//! and ```proto block is preceded by `<!-- from PATH -->` and stands, line
//! for line, as consecutive lines of that file (which the build compiles
//! and the tests run). The README also opens with the two commands a
//! newcomer runs.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A fenced block of the README: its language, its lines, and the file the
/// comment before it names.
struct Block {
    language: String,
    lines: Vec<String>,
    from: Option<String>,
    line: usize,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut from = None;
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if let Some(path) = line
            .strip_prefix("<!-- from ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        {
            from = Some(path.to_owned());
            continue;
        }
        if let Some(language) = line.strip_prefix("```") {
            let body = lines
                .by_ref()
                .map(|(_, l)| l)
                .take_while(|l| *l != "```")
                .map(str::to_owned)
                .collect();
            blocks.push(Block {
                language: language.to_owned(),
                lines: body,
                from: from.take(),
                line: n + 1,
            });
            continue;
        }
        if !line.trim().is_empty() {
            from = None;
        }
    }
    blocks
}

#[test]
fn every_code_snippet_is_the_code_of_the_repository() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut checked = 0;
    for block in blocks(&readme) {
        if block.language != "rust" && block.language != "proto" {
            continue;
        }
        let from = block.from.unwrap_or_else(|| {
            panic!(
                "README.md:{}: a ```{} block without a `<!-- from PATH -->` line before it",
                block.line, block.language
            )
        });
        let source = std::fs::read_to_string(root().join(&from))
            .unwrap_or_else(|e| panic!("README.md:{}: {from}: {e}", block.line));
        let source: Vec<&str> = source.lines().collect();
        let found = source
            .windows(block.lines.len())
            .any(|window| window.iter().zip(&block.lines).all(|(a, b)| a == b));
        assert!(
            found,
            "README.md:{}: the snippet is not in {from} as shown (line for line):\n{}",
            block.line,
            block.lines.join("\n")
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} snippets checked");
}

#[test]
fn the_readme_opens_with_the_demo_and_the_tests() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let first = blocks(&readme).into_iter().next().expect("a code block");
    assert_eq!(first.language, "sh");
    let commands: Vec<&str> = first
        .lines
        .iter()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands,
        [
            "cargo run -p grpc-blocking-examples --bin demo",
            "cargo test --workspace"
        ]
    );
}
