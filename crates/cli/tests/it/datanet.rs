//! `credence datanet …` end to end, as a new user runs it: the real binary, a
//! fresh `CREDENCE_HOME`, keys made by `keygen`, a signed JSONL file, curation,
//! a version, its export and a record's inclusion proof checked on its own.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::credence;

/// A temporary home and the files the user works with; removed when dropped.
struct Workspace {
    dir: PathBuf,
}

impl Workspace {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("credence-datanet-e2e-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("workspace");
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs `credence datanet <args>` with this home and no ambient key.
    fn run(&self, args: &[&str]) -> Output {
        credence()
            .env("CREDENCE_HOME", self.path("home"))
            .env_remove("CREDENCE_KEY")
            .arg("datanet")
            .args(args)
            .output()
            .expect("runs")
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "credence datanet {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Makes a key with `keygen`, saves it as `<name>.key`; returns the file and address.
    fn key(&self, name: &str) -> (String, String) {
        let out = self.ok(&["keygen"]);
        let field = |label: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(label))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no `{label}` in {out}"))
        };
        let path = self.path(&format!("{name}.key"));
        std::fs::write(&path, field("key:") + "\n").expect("key file");
        (path.display().to_string(), field("address:"))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const DATA: &str = r#"{"text": "Aspirin irreversibly inhibits cyclooxygenase, reducing thromboxane synthesis."}
{"instruction": "Name the first-line drug for anaphylaxis.", "output": "Intramuscular adrenaline (epinephrine)."}
{"messages": [{"role": "user", "content": "What does HbA1c measure?"}, {"role": "assistant", "content": "Average blood glucose over about three months."}]}
{"text": "Aspirin irreversibly inhibits cyclooxygenase, reducing thromboxane synthesis."}
{"text": 42}
"#;

#[test]
fn create_add_curate_commit_export_and_verify_a_proof() {
    let ws = Workspace::new();
    let (owner, _) = ws.key("owner");
    let (alice, alice_address) = ws.key("alice");
    let (_, bob_address) = ws.key("bob");

    let out = ws.ok(&[
        "create",
        "med-qa",
        "--license",
        "CC-BY-4.0",
        "--tags",
        "medicine,qa",
        "--key-file",
        &owner,
    ]);
    assert!(out.contains("created datanet `med-qa`"), "{out}");
    assert!(ws.path("home/datanets/datanets.sqlite").exists());

    // Alice contributes a signed file: 3 new records, 1 exact copy, 1 malformed line.
    let data = ws.path("data.jsonl");
    std::fs::write(&data, DATA).expect("data");
    let out = ws.ok(&[
        "add",
        "med-qa",
        &data.display().to_string(),
        "--key-file",
        &alice,
    ]);
    assert!(out.contains(&format!("by {alice_address}")), "{out}");
    assert!(
        out.contains("3 pending, 1 exact duplicates, 0 near duplicates, 1 bad lines"),
        "{out}"
    );
    assert!(
        out.contains("line 5:"),
        "the bad line is reported by number: {out}"
    );

    // Curation: only the owner (or a curator) decides; the owner adds bob as a curator.
    let listing = ws.ok(&["review", "med-qa"]);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    assert!(listing.contains("duplicate"), "{listing}");
    let refused = ws.run(&[
        "review",
        "med-qa",
        "--accept-all-pending",
        "--key-file",
        &alice,
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("may not review"));
    let refused = ws.run(&[
        "curator",
        "add",
        "med-qa",
        &bob_address,
        "--key-file",
        &alice,
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("may not change curators"));
    let out = ws.ok(&[
        "curator",
        "add",
        "med-qa",
        &bob_address,
        "--key-file",
        &owner,
    ]);
    assert!(out.contains(&bob_address), "{out}");
    let out = ws.ok(&[
        "review",
        "med-qa",
        "--accept-all-pending",
        "--key-file",
        &owner,
    ]);
    assert!(out.starts_with("3 accepted"), "{out}");

    let out = ws.ok(&[
        "commit",
        "med-qa",
        "-m",
        "first version",
        "--key-file",
        &owner,
    ]);
    assert!(out.starts_with("version 1 "), "{out}");
    let log = ws.ok(&["log", "med-qa"]);
    assert!(
        log.contains("version 1") && log.contains("first version"),
        "{log}"
    );
    let root = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("root"))
        .map(|r| r.trim().to_owned())
        .expect("root in the log");

    // Export: one line per record, and a manifest with the same root.
    let export = ws.path("train.jsonl");
    ws.ok(&["export", "med-qa", "--out", &export.display().to_string()]);
    let lines: Vec<serde_json::Value> = text(&export)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    let manifest: serde_json::Value =
        serde_json::from_str(&text(&ws.path("train.jsonl.manifest.json"))).expect("manifest");
    assert_eq!(manifest["root"], root.as_str());
    assert_eq!(manifest["records"], 3);
    let record = lines[1]["id"].as_str().expect("record id").to_owned();
    assert_eq!(manifest["contributors"][&record], alice_address.as_str());

    // A proof of one record, checked with nothing but the file.
    let proof = ws.path("proof.json");
    ws.ok(&[
        "prove",
        "med-qa",
        &record,
        "--out",
        &proof.display().to_string(),
    ]);
    let out = ws.ok(&["verify", &proof.display().to_string()]);
    assert!(out.starts_with(&format!("valid: record {record}")), "{out}");
    assert!(out.contains(&root), "{out}");
    // The same proof for another record id fails.
    let other = lines[0]["id"].as_str().expect("record id");
    std::fs::write(&proof, text(&proof).replace(&record, other)).expect("tamper");
    let tampered = ws.run(&["verify", &proof.display().to_string()]);
    assert!(!tampered.status.success());
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("INVALID"));
}
