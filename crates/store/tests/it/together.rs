//! The crash-safety recipe: blobs first, then one transaction that refers to them.

use credence_store::rusqlite::params;
use credence_store::{BlobId, Blobs, Database, Error, Migration};

const SCHEMA: &[Migration] = &["CREATE TABLE files (name TEXT PRIMARY KEY, blob TEXT NOT NULL);"];

fn add(
    db: &Database,
    blobs: &Blobs,
    name: &str,
    bytes: &[u8],
    fail: bool,
) -> Result<BlobId, Error> {
    let id = blobs.put(bytes.to_vec())?;
    db.write(|tx| {
        tx.execute(
            "INSERT INTO files VALUES (?1, ?2)",
            params![name, id.to_string()],
        )?;
        if fail {
            // Stands in for any later step failing: the insert above must vanish.
            return Err(Error::BlobNotFound("simulated".into()));
        }
        Ok(id)
    })
}

#[test]
fn metadata_refers_only_to_stored_blobs_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("meta.sqlite");
    {
        let db = Database::open(&db_path, SCHEMA).expect("open");
        let blobs = Blobs::local(&dir.path().join("blobs")).expect("blobs");
        add(&db, &blobs, "a", b"alpha", false).expect("add a");
        assert!(add(&db, &blobs, "b", b"beta", true).is_err());
        // A second handle (as another process would) sees only committed rows.
        let other = Database::open(&db_path, SCHEMA).expect("second handle");
        let names: Vec<String> = other
            .read(|c| {
                let mut stmt = c.prepare("SELECT name FROM files ORDER BY name")?;
                Ok::<_, Error>(
                    stmt.query_map([], |r| r.get(0))?
                        .collect::<Result<_, _>>()?,
                )
            })
            .expect("names");
        assert_eq!(names, vec!["a".to_owned()]);
    }
    let db = Database::open(&db_path, SCHEMA).expect("reopen");
    let blobs = Blobs::local(&dir.path().join("blobs")).expect("blobs");
    let blob: String = db
        .read(|c| {
            Ok::<_, Error>(
                c.query_row("SELECT blob FROM files WHERE name = 'a'", [], |r| r.get(0))?,
            )
        })
        .expect("row");
    let id = BlobId::parse(&blob).expect("id");
    assert_eq!(blobs.get(&id).expect("blob"), b"alpha");
}

#[test]
fn blobs_work_from_tokio_blocking_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = Blobs::local(dir.path()).expect("blobs");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let id = runtime
        .block_on(async move {
            tokio::task::spawn_blocking(move || {
                let mut writer = blobs.writer()?;
                writer.write(b"from a blocking thread")?;
                let id = writer.finish()?;
                assert_eq!(blobs.get(&id)?, b"from a blocking thread");
                Ok::<_, Error>(id)
            })
            .await
        })
        .expect("join")
        .expect("blob");
    assert_eq!(id, BlobId::of(b"from a blocking thread"));
}
