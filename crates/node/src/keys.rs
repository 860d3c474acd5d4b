//! The node's API keys for write endpoints.
//!
//! Keys given in the configuration are used as they are. Without any, the
//! node keeps one in `<home>/api-key` (created on first start from the
//! operating system's random source, readable by the owner only), so a fresh
//! node is never open for writes, and local tools (`credence adapter …`)
//! read the same file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// File holding the generated key under the data directory.
pub const KEY_FILE: &str = "api-key";

/// Whether `key` is acceptable: 16–256 printable ASCII characters, no spaces.
pub fn is_valid_key(key: &str) -> bool {
    (16..=256).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The keys a node under `home` accepts: `configured`, or the key file's.
pub fn node_keys(home: &Path, configured: &[String]) -> Result<Vec<String>> {
    if configured.is_empty() {
        Ok(vec![load_or_create(home)?])
    } else {
        Ok(configured.to_vec())
    }
}

/// Path of the generated key file.
pub fn key_path(home: &Path) -> PathBuf {
    home.join(KEY_FILE)
}

/// Reads the key file, if there is one.
pub fn read_key(home: &Path) -> Result<Option<String>> {
    let path = key_path(home);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            if is_valid_key(&key) {
                Ok(Some(key))
            } else {
                Err(Error::config(
                    "api_keys",
                    format!(
                        "{} does not hold a valid key; delete it to make a new one",
                        path.display()
                    ),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", &path, e)),
    }
}

/// The key in `<home>/api-key`, creating the file if it does not exist.
pub fn load_or_create(home: &Path) -> Result<String> {
    if let Some(key) = read_key(home)? {
        return Ok(key);
    }
    let key = random_key()?;
    std::fs::create_dir_all(home).map_err(|e| Error::io("cannot create", home, e))?;
    let path = key_path(home);
    let tmp = home.join(format!("{KEY_FILE}.tmp"));
    write_private(&tmp, &key).map_err(|e| Error::io("cannot write", &tmp, e))?;
    // A concurrent first start may have won; keep whichever key landed.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create", &path, e)),
    }
    let _ = std::fs::remove_file(&tmp);
    tracing::info!(path = %path.display(), "created an API key for write endpoints");
    read_key(home)?.ok_or_else(|| Error::config("api_keys", "the key file vanished"))
}

fn write_private(path: &Path, key: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(key.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// 32 random bytes from the OS, hex-encoded with a `cr-` prefix.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; 32];
    let source = Path::new("/dev/urandom");
    std::fs::File::open(source)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("cannot read", source, e))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("cr-{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_and_kept() {
        let home = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(home.path()).expect("created");
        assert!(is_valid_key(&first) && first.starts_with("cr-"));
        assert_eq!(load_or_create(home.path()).expect("read"), first);
        assert_eq!(node_keys(home.path(), &[]).expect("keys"), vec![first]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key_path(home.path()))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn configured_keys_win_and_bad_files_are_reported() {
        let home = tempfile::tempdir().expect("tempdir");
        let configured = vec!["k".repeat(20)];
        assert_eq!(
            node_keys(home.path(), &configured).expect("keys"),
            configured
        );
        assert!(!key_path(home.path()).exists());
        std::fs::write(key_path(home.path()), "short").expect("write");
        assert!(load_or_create(home.path()).is_err());
        assert!(!is_valid_key("has space in it ok"));
    }
}
