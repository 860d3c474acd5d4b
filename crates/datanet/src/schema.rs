//! The SQLite schema, as append-only migrations (see `credence_store::Database::open`).
//!
//! Ids and addresses are stored as the same `0x…` text the API shows, so the
//! database is readable with the `sqlite3` shell when auditing.

use credence_store::Migration;

/// Every migration, oldest first. Never edit a shipped one; append.
pub(crate) const MIGRATIONS: &[Migration] = &[V1, V2];

const V1: Migration = r#"
CREATE TABLE datanets (
    id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    license TEXT NOT NULL,
    owner TEXT NOT NULL,
    visibility TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    head TEXT,
    signature TEXT NOT NULL
);
CREATE TABLE curators (
    datanet_id TEXT NOT NULL REFERENCES datanets (id),
    address TEXT NOT NULL,
    PRIMARY KEY (datanet_id, address)
);
CREATE TABLE contributions (
    id TEXT PRIMARY KEY,
    datanet_id TEXT NOT NULL REFERENCES datanets (id),
    contributor TEXT NOT NULL,
    signature TEXT NOT NULL,
    header TEXT NOT NULL,
    source TEXT NOT NULL,
    blob TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    bad_lines INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);
CREATE INDEX contributions_by_contributor ON contributions (datanet_id, contributor);
CREATE TABLE records (
    entry INTEGER PRIMARY KEY,
    datanet_id TEXT NOT NULL REFERENCES datanets (id),
    content_id TEXT NOT NULL,
    contribution_id TEXT NOT NULL REFERENCES contributions (id),
    contributor TEXT NOT NULL,
    line INTEGER NOT NULL,
    body TEXT NOT NULL,
    minhash BLOB,
    status TEXT NOT NULL,
    duplicate_of INTEGER,
    reason TEXT,
    reviewed_by TEXT
);
CREATE INDEX records_by_content ON records (datanet_id, content_id, status);
CREATE INDEX records_by_status ON records (datanet_id, status);
CREATE INDEX records_by_contributor ON records (datanet_id, contributor, status);
CREATE TABLE lsh (
    datanet_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    entry INTEGER NOT NULL,
    PRIMARY KEY (datanet_id, bucket, entry)
) WITHOUT ROWID;
CREATE TABLE versions (
    id TEXT PRIMARY KEY,
    datanet_id TEXT NOT NULL REFERENCES datanets (id),
    number INTEGER NOT NULL,
    parent TEXT,
    message TEXT NOT NULL,
    author TEXT NOT NULL,
    time INTEGER NOT NULL,
    root TEXT NOT NULL,
    records INTEGER NOT NULL,
    signature TEXT NOT NULL,
    UNIQUE (datanet_id, number)
);
CREATE TABLE version_records (
    version_id TEXT NOT NULL REFERENCES versions (id),
    content_id TEXT NOT NULL,
    entry INTEGER NOT NULL,
    PRIMARY KEY (version_id, content_id)
) WITHOUT ROWID;
CREATE TABLE access (
    datanet_id TEXT NOT NULL REFERENCES datanets (id),
    address TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    signature TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (datanet_id, address)
);
CREATE TABLE actions (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    signer TEXT NOT NULL,
    at INTEGER NOT NULL
);
"#;

/// The LSH band index moved to memory (`service::lsh`), rebuilt from
/// `records.minhash`: writing 32 band rows per record bounded ingest throughput.
const V2: Migration = "DROP TABLE lsh;";
