//! `docs/ARCHITECTURE.md` opens with the path of one message, naming the file of each step: the
//! files it names must be the tree's, so the map cannot drift from the code.

use std::path::{Path, PathBuf};

/// The repository's root: this crate's parent.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("raftmq/ has a parent").to_path_buf()
}

/// The `## The path of one message` section, up to the next `## ` heading.
fn path_section(doc: &str) -> &str {
    let start = doc.find("## The path of one message").expect("ARCHITECTURE.md has a section 'The path of one message'");
    let rest = &doc[start + 3..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

/// Every `code span` of `text` that names a file or folder: it contains a `/` or ends in `.rs`.
fn named_paths(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).filter(|s| (s.contains('/') || s.ends_with(".rs")) && !s.contains(' ')).collect()
}

/// Each step names its files with a full path (`broker/src/queue/apply.rs`) or, after one,
/// relative to the last folder named in the same step (`queue/command.rs`, `state_machine.rs`).
#[test]
fn every_file_the_path_of_one_message_names_exists() {
    let root = root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("read docs/ARCHITECTURE.md");
    let section = path_section(&doc);
    let mut checked = 0;
    let mut missing = Vec::new();
    // A step is a numbered item (`7. **Apply** ...` and its indented lines), or a paragraph.
    let mut steps: Vec<String> = Vec::new();
    for line in section.lines() {
        let numbered = line.split_once(". ").is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if numbered || line.trim().is_empty() || steps.is_empty() {
            steps.push(String::new());
        }
        if let Some(step) = steps.last_mut() {
            step.push_str(line);
            step.push('\n');
        }
    }
    for step in &steps {
        let mut base: Option<PathBuf> = None;
        for name in named_paths(step) {
            let crate_path =
                ["broker/", "raft-log/", "controller/", "client/", "jepsen/", "raftmq/", "proto/"].iter().any(|c| name.starts_with(c));
            let path = if crate_path {
                root.join(name)
            } else {
                let Some(b) = &base else { continue };
                // `queue/command.rs` after `broker/src/queue/state_machine.rs`: from the crate's src.
                let src = b.ancestors().find(|a| a.ends_with("src")).unwrap_or(b).to_path_buf();
                if name.contains('/') && src.join(name).exists() { src.join(name) } else { b.join(name) }
            };
            if crate_path {
                base = Some(if name.ends_with('/') { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() });
            }
            checked += 1;
            if !path.exists() {
                missing.push(format!("{name} (looked for {})", path.display()));
            }
        }
    }
    assert!(checked >= 20, "only {checked} files named: the section lost its map");
    assert!(missing.is_empty(), "the path of one message names files that do not exist:\n{}", missing.join("\n"));
}
