//! Bad input: clear errors, and nothing partially written.

use credence_datanet::ingest::{Format, Limits};
use credence_datanet::model::{Decision, Signed, Visibility};
use credence_datanet::sign::LocalSigner;
use credence_datanet::{Datanets, Error};

use crate::common::*;

fn record_count(nets: &Datanets, datanet: &str) -> usize {
    nets.records(datanet, None, 0, 1000, Some(&owner().address()))
        .expect("records")
        .len()
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "d", Visibility::Public);
    let bytes = jsonl(&["hello world"]);
    let mut signed = header("d", &bytes, Format::Jsonl, &alice());
    // Claim Bob's address with Alice's signature.
    signed.signer = bob().address();
    let result = nets.contribute(&signed, &bytes[..], &mut |_| {});
    assert!(
        matches!(result, Err(Error::WrongSigner { .. })),
        "{result:?}"
    );
    // Tamper with the payload after signing.
    let mut tampered = header("d", &bytes, Format::Jsonl, &alice());
    tampered.payload.source = "other.jsonl".into();
    assert!(nets.contribute(&tampered, &bytes[..], &mut |_| {}).is_err());
    assert_eq!(record_count(&nets, "d"), 0);
}

#[test]
fn bytes_that_differ_from_the_signed_hash_are_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "d", Visibility::Public);
    let signed_bytes = jsonl(&["one", "two"]);
    let sent = jsonl(&["one", "two", "three"]);
    let h = header("d", &signed_bytes, Format::Jsonl, &alice());
    let result = nets.contribute(&h, &sent[..], &mut |_| {});
    assert!(matches!(&result, Err(Error::Invalid { field, .. }) if field == "file_sha256"));
    assert_eq!(record_count(&nets, "d"), 0);
    // The same contribution sent correctly then goes through, once.
    nets.contribute(&h, &signed_bytes[..], &mut |_| {})
        .expect("contribute");
    let again = nets.contribute(&h, &signed_bytes[..], &mut |_| {});
    assert!(matches!(again, Err(Error::Conflict(_))));
    assert_eq!(record_count(&nets, "d"), 2);
}

#[test]
fn malformed_lines_are_reported_and_skipped_up_to_a_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_bad_lines: 2,
        ..Limits::default()
    };
    let nets = Datanets::open(dir.path(), limits).expect("open");
    create(&nets, "d", Visibility::Public);
    let ok = b"{\"text\": \"good one\"}\n{\"oops\nnot json\n{\"text\": \"good two\"}\n".to_vec();
    let report = contribute(&nets, "d", &ok, &alice()).expect("contribute");
    assert_eq!((report.pending, report.bad_lines), (2, 2));
    let lines: Vec<u64> = report.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![2, 3]);

    let bad = b"{\"text\": \"good three\"}\nx\ny\nz\n".to_vec();
    let result = contribute(&nets, "d", &bad, &bob());
    match result {
        Err(Error::Rejected { lines, .. }) => {
            assert_eq!(
                lines.iter().map(|l| l.line).collect::<Vec<_>>(),
                vec![2, 3, 4]
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let nothing = contribute(&nets, "d", b"\n\n", &bob());
    assert!(matches!(nothing, Err(Error::Rejected { .. })));
    assert_eq!(record_count(&nets, "d"), 2);
}

#[test]
fn oversize_input_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits {
        max_file_bytes: 100,
        max_records: 3,
        ..Limits::default()
    };
    let nets = Datanets::open(dir.path(), limits).expect("open");
    create(&nets, "d", Visibility::Public);
    let big = jsonl(&[&"x".repeat(200)]);
    let result = contribute(&nets, "d", &big, &alice());
    assert!(matches!(result, Err(Error::TooLarge { .. })), "{result:?}");
    let many = jsonl(&["a1", "b2", "c3", "d4"]);
    let result = contribute(&nets, "d", &many, &alice());
    assert!(
        matches!(result, Err(Error::TooLarge { limit: 3, .. })),
        "{result:?}"
    );
    assert_eq!(record_count(&nets, "d"), 0);
}

#[test]
fn unknown_datanets_and_unauthorised_curators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    let result = contribute(&nets, "missing", &jsonl(&["x"]), &alice());
    assert!(matches!(
        result,
        Err(Error::NotFound {
            what: "datanet",
            ..
        })
    ));
    create(&nets, "d", Visibility::Public);
    contribute(&nets, "d", &jsonl(&["some text here"]), &alice()).expect("contribute");
    let entry = nets.records("d", None, 0, 1, None).expect("records")[0].entry;
    let stranger = LocalSigner::from_seed("stranger");
    let result = review(&nets, "d", vec![accept(entry)], &stranger);
    assert!(matches!(result, Err(Error::Forbidden { .. })));
    let no_reason = Decision {
        entry,
        accept: false,
        reason: " ".into(),
    };
    assert!(matches!(
        review(&nets, "d", vec![no_reason], &owner()),
        Err(Error::Invalid { .. })
    ));
    let unknown = review(&nets, "d", vec![accept(entry), accept(9999)], &owner());
    assert!(matches!(
        unknown,
        Err(Error::NotFound { what: "record", .. })
    ));
    // The whole review rolled back: the first decision was not applied either.
    let status = nets.records("d", None, 0, 1, None).expect("records")[0].status;
    assert_eq!(status, credence_datanet::model::Status::Pending);
    assert!(matches!(nets.log("nope"), Err(Error::NotFound { .. })));
}

#[test]
fn duplicate_names_and_bad_specs_are_refused() {
    use credence_datanet::model::CreateDatanet;
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "d", Visibility::Public);
    let spec = CreateDatanet {
        name: "d".into(),
        description: String::new(),
        tags: vec![],
        license: "MIT".into(),
        visibility: Visibility::Public,
        curators: vec![],
    };
    let again = nets.create(&Signed::sign(spec.clone(), &alice()).expect("sign"));
    assert!(matches!(again, Err(Error::Conflict(_))));
    let bad_name = CreateDatanet {
        name: "Bad Name".into(),
        ..spec
    };
    assert!(matches!(
        nets.create(&Signed::sign(bad_name, &alice()).expect("sign")),
        Err(Error::Invalid { .. })
    ));
}
