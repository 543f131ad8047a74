//! `docs/barriers.md` holds the pairing table generated from `Barrier`; this test fails when the
//! two drift. Regenerate with `MMUSYNC_BLESS=1 cargo test -p mmusync --test barrier_table`.

use std::path::Path;

const BEGIN: &str = "<!-- BEGIN GENERATED: mmusync::barrier::pairing_table -->\n";
const END: &str = "<!-- END GENERATED -->\n";

#[test]
fn docs_pairing_table_matches_the_enum() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/barriers.md");
    let doc = std::fs::read_to_string(&path).expect("docs/barriers.md exists");
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
