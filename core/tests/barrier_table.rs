//! `docs/barriers.md` (inside this package, so the check also runs from the published crate)
//! holds the pairing table generated from `Barrier`; this test fails when the two drift.
//! Regenerate with `MMUSYNC_BLESS=1 cargo test -p mmusync --test barrier_table`.

use std::path::Path;

const BEGIN: &str = "<!-- BEGIN GENERATED: mmusync::barrier::pairing_table -->\n";
const END: &str = "<!-- END GENERATED -->\n";

#[test]
fn docs_pairing_table_matches_the_enum() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/barriers.md");
    let doc = std::fs::read_to_string(&path).expect("docs/barriers.md exists in the package");
    let mut table = String::new();
    mmusync::barrier::pairing_table(&mut table).unwrap();
    let (head, rest) = doc.split_once(BEGIN).expect("begin marker");
    let (_, tail) = rest.split_once(END).expect("end marker");
    let expected = format!("{head}{BEGIN}{table}{END}{tail}");
    if std::env::var_os("MMUSYNC_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert!(
        doc == expected,
        "docs/barriers.md is out of date with mmusync::Barrier; rerun with MMUSYNC_BLESS=1"
    );
}

/// Every step label, barrier tag and invariant the crate's documentation uses is defined (has
/// its own heading) in `docs/protocols.md`, so a new label cannot appear without a definition.
#[test]
fn every_label_in_the_sources_is_defined_in_protocols_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let protocols = std::fs::read_to_string(root.join("docs/protocols.md")).expect("docs/protocols.md");
    let defined: std::collections::BTreeSet<String> = protocols
        .lines()
        .filter_map(|l| l.strip_prefix("#### ").or_else(|| l.strip_prefix("### ")))
        .map(|h| h.trim().to_string())
        .collect();
    let tags: std::collections::BTreeSet<String> = protocols
        .lines()
        .filter_map(|l| l.strip_prefix("| \\["))
        .filter_map(|l| l.split_once("\\]"))
        .map(|(tag, _)| format!("[{tag}]"))
        .collect();
    let mut sources = vec![root.join("README.md"), root.join("docs/barriers.md")];
    for dir in ["src", "src/hal", "tests"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    let mut missing = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for word in
            text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '[' || c == ']'))
        {
            let word = word.trim_end_matches('.');
            let label = word.trim_start_matches('[').trim_end_matches(']');
            if let Some(tag) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                if is_barrier_tag(tag) && !tags.contains(&format!("[{tag}]")) {
                    missing.push(format!("{}: [{tag}]", path.display()));
                }
                continue;
            }
            // `R1-R4h`, `F0-F14`: check each end of a range.
            let parts: Vec<&str> = if label.starts_with("MP-") || label.starts_with("SB-") {
                vec![label]
            } else {
                label.split('-').collect()
            };
            for part in parts {
                // A plural ("their E2s") names the step itself.
                let part = match part.strip_suffix('s') {
                    Some(step) if step.ends_with(|c: char| c.is_ascii_digit()) => step,
                    _ => part,
                };
                if is_step_or_invariant(part) && !defined.contains(part) {
                    missing.push(format!("{}: {part}", path.display()));
                }
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "labels used but not defined in docs/protocols.md: {missing:?}");
}

/// `B1-end-wmb` and the like.
fn is_barrier_tag(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 3 && b[0] == b'B' && b[1].is_ascii_digit() && b[2] == b'-'
}

/// `F7`, `S3c`, `R4g`, `I2.1`, `I2.gpc`, `MP-1`, `SB-walk`.
fn is_step_or_invariant(s: &str) -> bool {
    if (s.starts_with("MP-") || s.starts_with("SB-")) && s.len() > 3 {
        return true;
    }
    let mut chars = s.chars();
    let Some(first) = chars.next() else { return false };
    let rest: String = chars.collect();
    match first {
        // Steps: one letter, a number, an optional lower-case sub-step letter.
        'S' | 'E' | 'G' | 'A' | 'F' | 'R' | 'W' | 'U' | 'C' | 'L' | 'Z' | 'Q' | 'M' | 'D' | 'V' => {
            let digits = rest.trim_end_matches(|c: char| c.is_ascii_lowercase());
            !digits.is_empty()
                && digits.len() <= 2
                && digits.chars().all(|c| c.is_ascii_digit())
                && rest.len() - digits.len() <= 1
                && !(first == 'C' && digits == "11")
        }
        // Invariants: I<protocol>.<n> or I2.gpc.
        'I' => rest.split_once('.').is_some_and(|(p, n)| {
            p.len() == 1
                && p.chars().all(|c| c.is_ascii_digit())
                && !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric())
        }),
        _ => false,
    }
}
