//! Metadata in SQLite: WAL mode, migrations, all-or-nothing write transactions.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::{Error, Result};

/// One schema step: SQL run once, in order, inside a transaction.
pub type Migration = &'static str;

/// A SQLite database file shared by the threads of one process.
///
/// One writer connection behind a mutex (SQLite serialises writes anyway) and a
/// pool of reader connections, so reads never wait for a long write: in WAL mode
/// they see the last committed state while it runs. Other processes may open the
/// same file; they wait for each other's write locks for up to ten seconds.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    conn: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// Idle reader connections kept for reuse.
const IDLE_READERS: usize = 8;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Database {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations it has not seen yet. `migrations[i]` brings the schema from
    /// version `i` to `i + 1`; never edit one that has shipped, append instead.
    pub fn open(path: &Path, migrations: &[Migration]) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = connect(path)?;
        // WAL: readers never block the writer, and a commit is one fsync'd append,
        // so a kill at any moment leaves the last committed state.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrate(&mut conn, path, migrations)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read-only connection. Each statement sees a committed
    /// snapshot; use [`Database::write`] when several reads must agree.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        let idle = self.pool().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = connect(&self.path)?;
                conn.pragma_update(None, "query_only", true)
                    .map_err(Error::from)?;
                conn
            }
        };
        let value = f(&conn);
        let mut pool = self.pool();
        if pool.len() < IDLE_READERS {
            pool.push(conn);
        }
        value
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The pool holds no invariant a panic could break.
        self.readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in an immediate write transaction: committed if `f` returns `Ok`,
    /// rolled back otherwise (and by SQLite itself if the process dies first).
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<Error>,
    {
        let mut conn = self.lock();
        // IMMEDIATE takes the write lock up front, so two writers never both read
        // a state and then fail to upgrade.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::from)?;
        let value = f(&tx)?;
        tx.commit().map_err(Error::from)?;
        Ok(value)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half-applied
        // (the Transaction's drop rolls it back), so the connection stays usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opens a connection with the settings every connection shares.
fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 64 MiB of page cache (the default is 2 MiB): index-heavy bulk inserts
    // otherwise re-read the same B-tree pages from the OS over and over.
    conn.pragma_update(None, "cache_size", -65536)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[Migration]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = migrations.len();
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > known {
        return Err(Error::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    for (index, sql) in migrations.iter().enumerate().skip(applied) {
        tracing::debug!(db = %path.display(), version = index + 1, "applying migration");
        tx.execute_batch(sql)?;
    }
    if applied < known {
        // `user_version` is part of the transaction, so a schema step and its
        // version number are committed together.
        tx.pragma_update(None, "user_version", known as i64)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Migration = "CREATE TABLE t (x INTEGER NOT NULL);";
    const V2: Migration = "ALTER TABLE t ADD COLUMN y TEXT;";

    fn version(db: &Database) -> i64 {
        db.read(|c| Ok::<_, Error>(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .expect("version")
    }

    #[test]
    fn migrations_apply_once_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta.sqlite");
        let db = Database::open(&path, &[V1]).expect("open v1");
        assert_eq!(version(&db), 1);
        db.write(|tx| {
            tx.execute("INSERT INTO t (x) VALUES (1)", [])
                .map_err(Error::from)
        })
        .expect("insert");
        drop(db);
        let db = Database::open(&path, &[V1, V2]).expect("open v2");
        assert_eq!(version(&db), 2);
        let y: Option<String> = db
            .read(|c| Ok::<_, Error>(c.query_row("SELECT y FROM t", [], |r| r.get(0))?))
            .expect("row");
        assert_eq!(y, None);
        drop(db);
        let too_new = Database::open(&path, &[V1]);
        assert!(matches!(too_new, Err(Error::SchemaTooNew { found: 2, .. })));
    }

    #[test]
    fn reads_do_not_wait_for_a_running_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(&dir.path().join("m.sqlite"), &[V1]).expect("open");
        db.write(|tx| {
            tx.execute("INSERT INTO t (x) VALUES (1)", [])?;
            // Inside the write: another reader sees the committed state (empty), at once.
            let seen: i64 = db.read(|c| {
                Ok::<_, Error>(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
            })?;
            assert_eq!(seen, 0);
            Ok::<_, Error>(())
        })
        .expect("write");
        let seen: i64 = db
            .read(|c| Ok::<_, Error>(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .expect("read");
        assert_eq!(seen, 1);
        let denied: Result<usize> = db.read(|c| {
            c.execute("INSERT INTO t (x) VALUES (2)", [])
                .map_err(Error::from)
        });
        assert!(denied.is_err(), "readers are read-only");
    }

    #[test]
    fn failed_write_rolls_back_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(&dir.path().join("m.sqlite"), &[V1]).expect("open");
        let result: Result<()> = db.write(|tx| {
            tx.execute("INSERT INTO t (x) VALUES (1)", [])?;
            tx.execute("INSERT INTO t (x) VALUES (NULL)", [])?; // violates NOT NULL
            Ok(())
        });
        assert!(result.is_err());
        let count: i64 = db
            .read(|c| Ok::<_, Error>(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .expect("count");
        assert_eq!(count, 0);
        let mode: String = db
            .read(|c| Ok::<_, Error>(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
            .expect("mode");
        assert_eq!(mode, "wal");
    }
}
