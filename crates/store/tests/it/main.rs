//! Integration tests for the store: blobs and SQLite used together, on disk.

mod together;
