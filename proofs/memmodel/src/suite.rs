//! The fidelity suite and the generated tables of `docs/memmodel.md`.
//!
//! `litmus/kernel/` holds the Linux kernel's own litmus tests (from
//! `tools/memory-model/litmus-tests/` and `Documentation/litmus-tests/`), each written anew
//! with the shape and the stated LKMM result (`Result:`) of the original, and the verdicts of
//! the other models where they are known (`Expect:`). `litmus/classic/` holds the classic
//! shapes (SB, MP, LB, IRIW, WRC, 2+2W, R, S, ISA2, with fences, dependencies and C11
//! orderings) with their known verdicts; `litmus/mmusync/` holds shapes of mmusync's own protocols
//! that the two-thread barrier skeletons ([`crate::barriers`]) cannot express, with their
//! verdicts derived by hand in each file's header. Every test is checked exhaustively, so the suite is
//! deterministic; [`fidelity_table`] renders the results and the drift test compares them with
//! the committed document.

use crate::ast::{Model, Test, Verdict};
use crate::exec::{check, Outcome, Unsupported};
use crate::parse::parse;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The suite's directory (`litmus/` in this crate).
pub fn litmus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("litmus")
}

/// A test and every model's outcome.
#[derive(Debug, Clone)]
pub struct Judged {
    /// The parsed test.
    pub test: Test,
    /// Per model (in [`Model::ALL`] order): the outcome, or why the model cannot judge it.
    pub outcomes: Vec<(Model, Result<Outcome, Unsupported>)>,
    /// Candidate executions (after SC-per-location) the enumeration produced.
    pub candidates: usize,
}

impl Judged {
    /// The computed verdict under `m`, if `m` supports the test.
    pub fn verdict(&self, m: Model) -> Option<Verdict> {
        self.outcomes.iter().find(|(x, _)| *x == m).and_then(|(_, o)| o.as_ref().ok()).map(|o| o.verdict)
    }

    /// Every stated expectation that the computed verdict contradicts, as
    /// `(model, expected, computed)`; `computed` is `None` when the model cannot judge it.
    pub fn mismatches(&self) -> Vec<(Model, Verdict, Option<Verdict>)> {
        self.test
            .expect
            .iter()
            .filter_map(|(&m, &e)| {
                let got = self.verdict(m);
                (got != Some(e)).then_some((m, e, got))
            })
            .collect()
    }
}

/// One file of the suite.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to [`litmus_dir`], such as `kernel/sb-mb.litmus`.
    pub file: String,
    /// The judged test, or why it could not be parsed or enumerated.
    pub result: Result<Judged, String>,
}

impl Entry {
    /// Whether the file is one of the kernel's tests.
    pub fn is_kernel(&self) -> bool {
        self.file.starts_with("kernel/")
    }
}

/// Parses and checks one test's source under every model.
pub fn judge(src: &str) -> Result<Judged, String> {
    let test = parse(src).map_err(|e| format!("unsupported: {}", e.msg))?;
    let (outs, stats) = check(&test, &Model::ALL).map_err(|e| format!("unsupported: {e}"))?;
    let outcomes = Model::ALL.into_iter().zip(outs).collect();
    Ok(Judged { test, outcomes, candidates: stats.candidates })
}

/// Runs every `.litmus` file under `dir/kernel`, then `dir/classic`, then `dir/mmusync` (each
/// sorted by name).
pub fn run_dir(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut files = Vec::new();
    for sub in ["kernel", "classic", "mmusync"] {
        let mut here = Vec::new();
        for e in std::fs::read_dir(dir.join(sub))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "litmus") {
                here.push(p);
            }
        }
        here.sort();
        files.extend(here);
    }
    let mut out = Vec::new();
    for p in files {
        let src = std::fs::read_to_string(&p)?;
        let file = p.strip_prefix(dir).unwrap_or(&p).to_string_lossy().replace('\\', "/");
        out.push(Entry { file, result: judge(&src) });
    }
    Ok(out)
}

/// Counts for the summary line of the fidelity table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Kernel tests written.
    pub kernel_written: usize,
    /// Kernel tests the checker supports (parsed, enumerated, LKMM applies).
    pub kernel_supported: usize,
    /// Supported kernel tests whose LKMM verdict is the kernel's stated result.
    pub kernel_agree: usize,
    /// Classic and mmusync tests (everything outside `kernel/`).
    pub classic: usize,
    /// Stated expectations (all models, all tests) checked.
    pub expectations: usize,
    /// Stated expectations met.
    pub expectations_met: usize,
}

/// Tallies the suite.
pub fn summary(entries: &[Entry]) -> Summary {
    let mut s = Summary::default();
    for e in entries {
        if e.is_kernel() {
            s.kernel_written += 1;
        } else {
            s.classic += 1;
        }
        let Ok(j) = &e.result else { continue };
        if e.is_kernel() && j.verdict(Model::Lkmm).is_some() {
            s.kernel_supported += 1;
            if j.test.expect.get(&Model::Lkmm) == j.verdict(Model::Lkmm).as_ref() {
                s.kernel_agree += 1;
            }
        }
        let bad = j.mismatches().len();
        s.expectations += j.test.expect.len();
        s.expectations_met += j.test.expect.len() - bad;
    }
    s
}

fn cell(j: &Judged, m: Model) -> String {
    let got = j.outcomes.iter().find(|(x, _)| *x == m).map(|(_, o)| o);
    let text = match got {
        Some(Ok(o)) => o.verdict.to_string(),
        _ => "n/a".to_string(),
    };
    match j.test.expect.get(&m) {
        Some(e) if e.to_string() != text => format!("**{text}** (expected {e})"),
        Some(_) => format!("{text} ✓"),
        None => text,
    }
}

/// The fidelity table (Markdown), as committed between the markers in `docs/memmodel.md`.
///
/// A `✓` marks a verdict that matches the test's stated expectation; a mismatch is shown in
/// bold with the expectation; `n/a` is a model that cannot express one of the test's
/// primitives.
pub fn fidelity_table(entries: &[Entry]) -> String {
    let mut out = String::new();
    let s = summary(entries);
    let pct =
        if s.kernel_supported == 0 { 0.0 } else { 100.0 * s.kernel_agree as f64 / s.kernel_supported as f64 };
    let _ = writeln!(
        out,
        "Kernel tests: {} written, {} supported, {} of {} agree with the kernel's stated LKMM result ({pct:.0}%). \
         Classic and mmusync tests: {}. Stated expectations met (all models): {} of {}.\n",
        s.kernel_written, s.kernel_supported, s.kernel_agree, s.kernel_supported, s.classic, s.expectations_met,
        s.expectations
    );
    out.push_str(
        "| test | kernel original | LKMM expected | LKMM | SC | x86-TSO | ARMv8 | RC11 | executions |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---:|\n");
    for e in entries {
        match &e.result {
            Ok(j) => {
                // Kernel tests name their original; classic ones describe themselves in the file.
                let src = j.test.source.as_deref().and_then(|s| s.strip_prefix("kernel ")).unwrap_or("");
                let exp = j.test.expect.get(&Model::Lkmm).map_or("—".to_string(), |v| v.to_string());
                let _ = writeln!(
                    out,
                    "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                    e.file,
                    src,
                    exp,
                    cell(j, Model::Lkmm),
                    cell(j, Model::Sc),
                    cell(j, Model::Tso),
                    cell(j, Model::Armv8),
                    cell(j, Model::Rc11),
                    j.candidates
                );
            }
            Err(why) => {
                let _ = writeln!(out, "| `{}` | | | {} | | | | | |", e.file, why.replace('|', "\\|"));
            }
        }
    }
    out
}

/// Replaces the text between `<!-- BEGIN GENERATED: {name} -->` and the next
/// `<!-- END GENERATED -->` in `doc` with `body`; `None` if the markers are missing.
pub fn splice(doc: &str, name: &str, body: &str) -> Option<String> {
    let begin = format!("<!-- BEGIN GENERATED: {name} -->\n");
    let end = "<!-- END GENERATED -->";
    let b = doc.find(&begin)? + begin.len();
    let e = b + doc[b..].find(end)?;
    Some(format!("{}{}{}", &doc[..b], body, &doc[e..]))
}
