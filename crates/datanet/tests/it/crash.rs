//! Kill tests: a child process ingests or commits and is killed with SIGKILL
//! mid-way; the store must then hold the old state or the new one, never half.
//!
//! The child is this test binary re-invoked to run only [`child_process`], with
//! the work to do in an environment variable. It prints a line at each progress
//! step, so the parent can kill it inside a transaction rather than by luck.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use credence_datanet::Hash32;
use credence_datanet::ingest::Format;
use credence_datanet::merkle::MerkleTree;
use credence_datanet::model::{CommitRequest, Signed, Visibility};
use credence_store::rusqlite::Connection;

use crate::common::*;

const ENV: &str = "CREDENCE_DATANET_CRASH_CHILD";
const RECORDS_PER_FILE: usize = 6000;
/// Starts the child's progress lines (the test harness may print before them on the same line).
const MARK: &str = "@@ ";

fn file(round: usize) -> Vec<u8> {
    let texts: Vec<String> = (0..RECORDS_PER_FILE)
        .map(|i| sentence(round * RECORDS_PER_FILE + i))
        .collect();
    jsonl(&texts.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Runs in the child only: the work named by `ENV`, printing progress lines.
#[test]
fn child_process() {
    let Ok(spec) = std::env::var(ENV) else {
        return; // a normal test run: nothing to do
    };
    let (mode, dir) = spec.split_once(':').expect("mode:dir");
    let nets = open(Path::new(dir));
    match mode {
        "ingest" => {
            for round in 0.. {
                let bytes = file(round);
                let h = header("crash", &bytes, Format::Jsonl, &alice());
                nets.contribute(&h, &bytes[..], &mut |p| {
                    println!("{MARK}progress {round} {}", p.records);
                })
                .expect("contribute");
                println!("{MARK}done {round}");
            }
        }
        "commit" => {
            for round in 0.. {
                let pending = nets
                    .records(
                        "crash",
                        Some(credence_datanet::model::Status::Pending),
                        0,
                        1500,
                        None,
                    )
                    .expect("records");
                if pending.is_empty() {
                    break;
                }
                let decisions = pending.iter().map(|r| accept(r.entry)).collect();
                review(&nets, "crash", decisions, &owner()).expect("review");
                println!("{MARK}reviewed {round}");
                let payload = CommitRequest {
                    datanet: "crash".into(),
                    parent: nets.get("crash").expect("datanet").head,
                    message: format!("round {round}"),
                    time: 1_700_000_000 + round,
                };
                let signed = Signed::sign(payload, &owner()).expect("sign");
                nets.commit_with_progress(&signed, &mut |written| {
                    println!("{MARK}writing {round} {written}");
                })
                .expect("commit");
                println!("{MARK}committed {round}");
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Starts the child and kills it when `kill_at` says so about a line of its output.
fn run_and_kill(mode: &str, dir: &Path, kill_at: impl Fn(&str) -> bool) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "crash::child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV, format!("{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        let Some((_, line)) = line.split_once(MARK) else {
            continue;
        };
        let line = line.to_owned();
        let stop = kill_at(&line);
        seen.push(line);
        if stop {
            // `Child::kill` sends SIGKILL on Unix: no destructor, no rollback code runs.
            child.kill().expect("kill");
            break;
        }
    }
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the child should have been killed: {seen:?}"
    );
    seen
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("datanets.sqlite")).expect("open sqlite")
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).expect(sql)
}

/// Every contribution is complete: its records, their signatures and its blob are all there.
fn check_contributions(dir: &Path) -> i64 {
    let conn = db(dir);
    let mut stmt = conn
        .prepare("SELECT id, records, blob FROM contributions")
        .expect("prepare");
    let rows: Vec<(String, i64, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let nets = open(dir);
    for (id, records, blob) in &rows {
        assert_eq!(*records, RECORDS_PER_FILE as i64, "contribution {id}");
        let stored: i64 = conn
            .query_row(
                "SELECT count(*) FROM records WHERE contribution_id = ?1",
                [id],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(stored, *records, "records of {id}");
        let blob = credence_store::BlobId::parse(blob.as_deref().expect("blob set")).expect("id");
        assert!(nets.blobs().contains(&blob).expect("head"), "blob of {id}");
    }
    let total = count(&conn, "SELECT count(*) FROM records");
    assert_eq!(total, rows.len() as i64 * RECORDS_PER_FILE as i64);
    // Every record carries its MinHash signature, from which the band index is rebuilt.
    let with_minhash = count(
        &conn,
        "SELECT count(*) FROM records WHERE length(minhash) = 4 * 128",
    );
    assert_eq!(with_minhash, total);
    rows.len() as i64
}

#[test]
fn killed_mid_ingest_leaves_whole_contributions_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    create(&open(dir.path()), "crash", Visibility::Public);
    // Kill in the middle of the second file, after 3000 of its records were inserted.
    let seen = run_and_kill("ingest", dir.path(), |line| line == "progress 1 3072");
    assert!(seen.iter().any(|l| l == "done 0"), "{seen:?}");
    assert_eq!(check_contributions(dir.path()), 1);
    // The interrupted contribution is simply absent and can be sent again.
    let nets = open(dir.path());
    let bytes = file(1);
    let h = header("crash", &bytes, Format::Jsonl, &alice());
    nets.contribute(&h, &bytes[..], &mut |_| {})
        .expect("retry after the crash");
    drop(nets);
    assert_eq!(check_contributions(dir.path()), 2);
}

#[test]
fn killed_mid_commit_leaves_whole_versions_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nets = open(dir.path());
    create(&nets, "crash", Visibility::Public);
    for round in 0..3 {
        let bytes = file(round);
        let h = header("crash", &bytes, Format::Jsonl, &alice());
        nets.contribute(&h, &bytes[..], &mut |_| {})
            .expect("contribute");
    }
    drop(nets);
    // Each run commits one version, then is killed while writing the record ids of
    // its second one, after a different number of them each time.
    for (run, written) in [256, 768, 1280, 2560].into_iter().enumerate() {
        let target = format!("writing 1 {written}");
        let seen = run_and_kill("commit", dir.path(), |line| line == target);
        assert!(seen.iter().any(|l| l == "committed 0"), "{seen:?}");
        check_versions(dir.path());
        let versions = count(&db(dir.path()), "SELECT count(*) FROM versions");
        assert_eq!(
            versions,
            run as i64 + 1,
            "the interrupted version must be absent"
        );
    }
}

/// Every version lists exactly its records, they hash to its root, and the head
/// is the newest version.
fn check_versions(dir: &Path) {
    let conn = db(dir);
    let mut stmt = conn
        .prepare("SELECT id, records, root, number FROM versions ORDER BY number")
        .expect("prepare");
    let versions: Vec<(String, i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (id, records, root, _) in &versions {
        let mut stmt = conn
            .prepare(
                "SELECT content_id FROM version_records WHERE version_id = ?1 ORDER BY content_id",
            )
            .expect("prepare");
        let ids: Vec<Hash32> = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|t| t.expect("row").parse().expect("hash"))
            .collect();
        assert_eq!(ids.len() as i64, *records, "version {id}");
        assert_eq!(
            MerkleTree::new(&ids).root().to_string(),
            *root,
            "root of {id}"
        );
    }
    let head: Option<String> = conn
        .query_row("SELECT head FROM datanets WHERE id = 'crash'", [], |r| {
            r.get(0)
        })
        .expect("head");
    assert_eq!(head, versions.last().map(|v| v.0.clone()));
    // Reviews are whole too: accepted records come in batches of the review size.
    let accepted = count(
        &conn,
        "SELECT count(*) FROM records WHERE status = 'accepted'",
    );
    assert_eq!(accepted % 1500, 0, "a review was applied in part");
}
