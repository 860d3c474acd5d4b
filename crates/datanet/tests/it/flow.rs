//! The whole life of a datanet: create, contribute, curate, commit, diff, export, prove.

use credence_datanet::Error;
use credence_datanet::merkle::InclusionProof;
use credence_datanet::model::{Decision, Status, Visibility};

use crate::common::*;

#[test]
fn contribute_curate_commit_export_and_prove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "qa", Visibility::Public);

    let a = alice();
    let first = jsonl(&[&sentence(1), &sentence(2), &sentence(3)]);
    let report = contribute(&nets, "qa", &first, &a).expect("contribute");
    assert_eq!((report.pending, report.bad_lines), (3, 0));
    assert_eq!(report.contributor, a.address());

    // Bob uploads an exact copy of record 1, a near copy of record 2, and one new record.
    let near = sentence(2)
        .replace("Record 2", "record 2!")
        .replacen("river", "rivers", 1);
    let second = jsonl(&[&sentence(1), &near, &sentence(4)]);
    let report = contribute(&nets, "qa", &second, &bob()).expect("contribute");
    assert_eq!(
        (
            report.pending,
            report.exact_duplicates,
            report.near_duplicates
        ),
        (1, 1, 1)
    );

    let records = nets.records("qa", None, 0, 100, None).expect("records");
    assert_eq!(records.len(), 6);
    assert_eq!(records[3].status, Status::Duplicate);
    assert_eq!(records[3].duplicate_of, Some(records[0].entry));
    assert_eq!(records[3].line, 1);

    let o = owner();
    let mut decisions: Vec<Decision> = [1, 2, 6].map(|i| accept(records[i - 1].entry)).to_vec();
    decisions.push(Decision {
        entry: records[2].entry,
        accept: false,
        reason: "off topic".into(),
    });
    let outcomes = review(&nets, "qa", decisions, &o).expect("review");
    assert!(
        outcomes
            .iter()
            .take(3)
            .all(|d| d.status == Status::Accepted)
    );

    // Accepting Bob's exact copy is refused: Alice's record owns the cluster.
    let outcome = review(&nets, "qa", vec![accept(records[3].entry)], &o).expect("review");
    assert_eq!(outcome[0].status, Status::Duplicate);
    assert_eq!(outcome[0].duplicate_of, Some(records[0].entry));

    let v1 = commit(&nets, "qa", "first").expect("commit");
    assert_eq!((v1.number, v1.records, v1.parent), (1, 3, None));
    assert!(matches!(
        commit(&nets, "qa", "again"),
        Err(Error::Conflict(_))
    ));

    // Take one record down and commit again: the diff shows it removed.
    let takedown = Decision {
        entry: records[1].entry,
        accept: false,
        reason: "license problem".into(),
    };
    review(&nets, "qa", vec![takedown], &o).expect("review");
    let v2 = commit(&nets, "qa", "takedown").expect("commit");
    assert_eq!((v2.number, v2.records, v2.parent), (2, 2, Some(v1.id)));
    let log = nets.log("qa").expect("log");
    assert_eq!(
        log.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![v2.id, v1.id]
    );
    let diff = nets.diff("qa", Some(&v1.id), &v2.id).expect("diff");
    assert!(diff.added.is_empty());
    assert_eq!(diff.removed.len(), 1);
    assert_eq!(diff.removed[0].id, records[1].id);
    assert_eq!(diff.removed[0].contributor, a.address());
    let from_empty = nets.diff("qa", None, &v1.id).expect("diff");
    assert_eq!(from_empty.added.len(), 3);

    // Export is deterministic and the manifest names every contributor.
    let mut out1 = Vec::new();
    let manifest = nets.export("qa", &v1.id, None, &mut out1).expect("export");
    let mut out2 = Vec::new();
    nets.export("qa", &v1.id, None, &mut out2).expect("export");
    assert_eq!(out1, out2);
    assert_eq!(manifest.records, 3);
    assert_eq!(manifest.root, v1.root);
    assert_eq!(manifest.contributors[&records[5].id], bob().address());
    let text = String::from_utf8(out1).expect("utf8");
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().all(|l| l.starts_with("{\"id\":\"0x")));

    // A proof verifies on its own, after a JSON round trip; a tampered one does not.
    let proof = nets
        .prove("qa", &v1.id, &records[1].id, None)
        .expect("prove");
    let json = serde_json::to_string(&proof).expect("json");
    let mut parsed: InclusionProof = serde_json::from_str(&json).expect("parse");
    assert!(parsed.verify());
    parsed.record = records[2].id;
    assert!(!parsed.verify());
    assert!(matches!(
        nets.prove("qa", &v2.id, &records[1].id, None),
        Err(Error::NotFound { .. })
    ));

    // Reputation counts accepted, rejected (curator and automatic) and flagged records.
    let reputation = nets.reputation("qa").expect("reputation");
    let alice_rep = reputation
        .iter()
        .find(|r| r.address == a.address())
        .expect("alice");
    assert_eq!(
        (alice_rep.accepted, alice_rep.rejected, alice_rep.flagged),
        (1, 2, 0)
    );
    let bob_rep = reputation
        .iter()
        .find(|r| r.address == bob().address())
        .expect("bob");
    assert_eq!((bob_rep.accepted, bob_rep.flagged), (1, 2));
}

#[test]
fn state_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let nets = open(dir.path());
        create(&nets, "persist", Visibility::Public);
        contribute(&nets, "persist", &jsonl(&[&sentence(7)]), &alice()).expect("contribute");
    }
    let nets = open(dir.path());
    assert_eq!(nets.list().expect("list").len(), 1);
    assert_eq!(
        nets.records("persist", None, 0, 10, None)
            .expect("records")
            .len(),
        1
    );
}

#[test]
fn permissioned_datanets_need_a_grant_from_the_owner() {
    use credence_datanet::model::{AccessDecision, AccessRequest, Signed};
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "private", Visibility::Permissioned);
    contribute(&nets, "private", &jsonl(&[&sentence(1)]), &alice()).expect("contribute");
    let entry = nets
        .records("private", None, 0, 1, Some(&owner().address()))
        .expect("records")[0]
        .entry;
    review(&nets, "private", vec![accept(entry)], &owner()).expect("review");
    let v1 = commit(&nets, "private", "v1").expect("commit");

    let b = bob();
    let denied = nets.export("private", &v1.id, Some(&b.address()), &mut Vec::new());
    assert!(matches!(denied, Err(Error::Forbidden { .. })));
    assert!(matches!(
        nets.export("private", &v1.id, None, &mut Vec::new()),
        Err(Error::Forbidden { .. })
    ));

    let ask = AccessRequest {
        datanet: "private".into(),
        message: "research".into(),
        time: 1,
    };
    let access = nets
        .request_access(&Signed::sign(ask.clone(), &b).expect("sign"))
        .expect("request");
    assert_eq!(access.status, "requested");
    // Replaying the same signed request is refused.
    assert!(matches!(
        nets.request_access(&Signed::sign(ask, &b).expect("sign")),
        Err(Error::Conflict(_))
    ));

    let grant = AccessDecision {
        datanet: "private".into(),
        address: b.address(),
        grant: true,
        time: 2,
    };
    // Only the owner may grant.
    let forged = nets.decide_access(&Signed::sign(grant.clone(), &b).expect("sign"));
    assert!(matches!(forged, Err(Error::Forbidden { .. })));
    let access = nets
        .decide_access(&Signed::sign(grant, &owner()).expect("sign"))
        .expect("grant");
    assert_eq!(access.status, "granted");
    nets.export("private", &v1.id, Some(&b.address()), &mut Vec::new())
        .expect("export");
    assert_eq!(nets.access_list("private").expect("list").len(), 1);
}

#[test]
fn csv_text_and_markdown_contributions() {
    use credence_datanet::ingest::{Chunking, CsvMapping, Format};
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "mixed", Visibility::Public);
    let csv = b"question,answer\nWhat is two plus two?,Four\nName a primary colour.,Red\n";
    let mapping = CsvMapping {
        instruction: Some("question".into()),
        output: Some("answer".into()),
        ..CsvMapping::default()
    };
    let h = header("mixed", csv, Format::Csv(mapping), &alice());
    let report = nets.contribute(&h, &csv[..], &mut |_| {}).expect("csv");
    assert_eq!(report.pending, 2);

    let markdown = format!(
        "# Title\n{}\n\n## Section\n{}\n",
        sentence(10),
        sentence(11)
    );
    let h = header(
        "mixed",
        markdown.as_bytes(),
        Format::Markdown(Chunking::default()),
        &bob(),
    );
    let report = nets
        .contribute(&h, markdown.as_bytes(), &mut |_| {})
        .expect("markdown");
    assert_eq!(report.pending, 2);
    let text = sentence(12).repeat(3);
    let h = header(
        "mixed",
        text.as_bytes(),
        Format::Text(Chunking {
            chars: 200,
            overlap: 40,
        }),
        &bob(),
    );
    let mut calls = 0;
    let report = nets
        .contribute(&h, text.as_bytes(), &mut |_| calls += 1)
        .expect("text");
    assert!(report.pending + report.near_duplicates >= 1);
    assert!(calls >= 1);
}

/// The near-duplicate index lives in memory: it is rebuilt from the stored
/// signatures after a restart, and catches up with records another process
/// (another `Datanets` on the same directory) wrote meanwhile.
#[test]
fn near_duplicates_are_found_across_restarts_and_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = sentence(11);
    let near = |n: usize| original.replacen("Record 11", &format!("Recrod 11 (copy {n})"), 1);
    {
        let nets = open(dir.path());
        create(&nets, "near", Visibility::Public);
        contribute(&nets, "near", &jsonl(&[&original]), &alice()).expect("original");
    }
    let first = open(dir.path());
    let report = contribute(&first, "near", &jsonl(&[&near(1)]), &bob()).expect("after restart");
    assert_eq!((report.pending, report.near_duplicates), (0, 1));

    // A second instance adds a new record; the first one's index catches up.
    let second = open(dir.path());
    let other = sentence(12);
    contribute(&second, "near", &jsonl(&[&other]), &alice()).expect("other");
    let copy = other.replacen("Record 12", "Recrod 12", 1);
    let report = contribute(&first, "near", &jsonl(&[&copy]), &bob()).expect("copy");
    assert_eq!((report.pending, report.near_duplicates), (0, 1));

    // A rejected contribution leaves nothing behind, in the index either: its
    // record is not held against the next upload.
    let fresh = sentence(13);
    let rejected = [
        serde_json::json!({ "text": fresh }).to_string(),
        "not json".to_owned(),
    ]
    .join("\n")
        + "\n";
    let strict = credence_datanet::Datanets::open(
        dir.path(),
        credence_datanet::ingest::Limits {
            max_bad_lines: 0,
            ..credence_datanet::ingest::Limits::default()
        },
    )
    .expect("open");
    assert!(contribute(&strict, "near", rejected.as_bytes(), &alice()).is_err());
    let retry = fresh.replacen("Record 13", "Recrod 13", 1);
    let report = contribute(&strict, "near", &jsonl(&[&retry]), &alice()).expect("retry");
    assert_eq!((report.pending, report.near_duplicates), (1, 0));
}
