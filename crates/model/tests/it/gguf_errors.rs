//! Malformed GGUF files give clear errors.

use credence_model::gguf::{GgufFile, GgufWriter, MetaValue};
use credence_model::quant::{GgmlType, QMatrix};
use credence_model::testing::{tiny_config, tiny_gguf};

fn open_bytes(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, bytes).unwrap();
    match GgufFile::open(&p) {
        Ok(_) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_file_names_the_path() {
    let e = GgufFile::open(std::path::Path::new("/nonexistent/model.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn wrong_magic_is_reported() {
    let e = open_bytes(b"GGML\x03\0\0\0rest of a file");
    assert!(e.contains("bad magic"), "{e}");
    assert!(open_bytes(b"").contains("unexpected end of file"));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny_gguf(&tiny_config(32), GgmlType::Q4_0, 1).unwrap();
    assert_eq!(open_bytes(&bytes), "ok");
    // Cut at many points, through the header, the metadata and the data.
    for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
        let e = open_bytes(&bytes[..cut]);
        assert_ne!(e, "ok", "file cut at {cut} of {} opened", bytes.len());
    }
}

#[test]
fn unsupported_tensor_type_is_named() {
    let m = QMatrix::quantize(GgmlType::F32, 1, 32, &[0.0; 32]).unwrap();
    let mut bytes = GgufWriter::new()
        .meta("k", MetaValue::U32(1))
        .matrix("t", &m)
        .to_bytes();
    // The tensor's type id follows its name, dims count and dims: patch F32 (0) to Q2_K (10).
    let name_at = bytes.windows(1).rposition(|w| w == b"t").unwrap();
    let ty_at = name_at + 1 + 4 + 16;
    bytes[ty_at..ty_at + 4].copy_from_slice(&10u32.to_le_bytes());
    let e = open_bytes(&bytes);
    assert!(e.contains("Q2_K") && e.contains("`t`"), "{e}");
}

#[test]
fn version_and_counts_are_checked() {
    let mut bytes = GgufWriter::new().to_bytes();
    bytes[4] = 9;
    assert!(open_bytes(&bytes).contains("version 9"));
    let mut bytes = GgufWriter::new().to_bytes();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(open_bytes(&bytes).contains("impossible"));
}

#[test]
fn metadata_round_trips() {
    let mut w = GgufWriter::new();
    w.meta("s", MetaValue::String("héllo".into()))
        .meta(
            "a",
            MetaValue::Array(vec![MetaValue::I32(-1), MetaValue::I32(2)]),
        )
        .meta("f", MetaValue::F64(0.5))
        .meta("b", MetaValue::Bool(true));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    w.write(&p).unwrap();
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.get_str("s").unwrap(), "héllo");
    assert_eq!(
        f.get("a"),
        Some(&MetaValue::Array(vec![
            MetaValue::I32(-1),
            MetaValue::I32(2)
        ]))
    );
    assert_eq!(f.get_f64("f").unwrap(), Some(0.5));
    assert_eq!(f.get("b").and_then(MetaValue::as_bool), Some(true));
}
