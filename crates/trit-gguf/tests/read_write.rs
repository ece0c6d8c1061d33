//! Writer → reader round trips, atomic output, and corrupt-file errors.

use std::fs;
use std::path::Path;

use trit_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, ModelSummary, Value, ValueType};

fn sample_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "bitnet").unwrap();
    w.add_kv("general.name", "tiny").unwrap();
    w.add_kv("general.file_type", 37u32).unwrap();
    w.add_kv("bitnet.block_count", 2u32).unwrap();
    w.add_kv("bitnet.rope.freq_base", 500000.0f32).unwrap();
    w.add_kv("t.u8", Value::U8(200)).unwrap();
    w.add_kv("t.i8", Value::I8(-5)).unwrap();
    w.add_kv("t.u16", Value::U16(65000)).unwrap();
    w.add_kv("t.i16", Value::I16(-300)).unwrap();
    w.add_kv("t.i32", -7i32).unwrap();
    w.add_kv("t.u64", 1u64 << 40).unwrap();
    w.add_kv("t.i64", Value::I64(-(1 << 40))).unwrap();
    w.add_kv("t.f64", Value::F64(0.125)).unwrap();
    w.add_kv("t.bool", true).unwrap();
    w.add_kv("t.strs", Value::string_array(["a", "bc", ""])).unwrap();
    w.add_kv("t.i32s", Value::i32_array([1, -2, 3])).unwrap();
    w.add_kv("t.empty", Value::Array(ValueType::F32, vec![])).unwrap();
    w.add_kv("t.nested", Value::Array(ValueType::Array, vec![Value::i32_array([4, 5]), Value::i32_array([])])).unwrap();
    w.add_tensor("a", GgmlType::F32, &[3]).unwrap();
    w.add_tensor("b", GgmlType::TQ2_0, &[256, 2]).unwrap();
    w.add_tensor("c", GgmlType::F16, &[5, 1]).unwrap();
    w
}

fn write_sample(path: &Path) {
    let mut s = sample_writer().create(path).unwrap();
    let a: Vec<u8> = [1.0f32, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    s.write_tensor("a", &a).unwrap();
    s.begin_tensor("b").unwrap();
    s.write_chunk(&[7u8; 66]).unwrap();
    s.write_chunk(&[9u8; 66]).unwrap();
    s.end_tensor().unwrap();
    s.write_tensor("c", &[1u8; 10]).unwrap();
    s.finish().unwrap();
}

#[test]
fn round_trip_metadata_and_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_sample(&path);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.get_str("general.architecture").unwrap(), "bitnet");
    assert_eq!(f.get_u64("bitnet.block_count").unwrap(), 2);
    assert_eq!(f.get_f64("bitnet.rope.freq_base").unwrap(), 500000.0);
    assert_eq!(f.get("t.u8"), Some(&Value::U8(200)));
    assert_eq!(f.get("t.i8"), Some(&Value::I8(-5)));
    assert_eq!(f.get("t.u16"), Some(&Value::U16(65000)));
    assert_eq!(f.get("t.i16"), Some(&Value::I16(-300)));
    assert_eq!(f.get("t.i32"), Some(&Value::I32(-7)));
    assert_eq!(f.get("t.u64"), Some(&Value::U64(1 << 40)));
    assert_eq!(f.get("t.i64"), Some(&Value::I64(-(1 << 40))));
    assert_eq!(f.get("t.f64"), Some(&Value::F64(0.125)));
    assert_eq!(f.get("t.bool"), Some(&Value::Bool(true)));
    assert_eq!(f.get("t.strs"), Some(&Value::string_array(["a", "bc", ""])));
    assert_eq!(f.get("t.i32s"), Some(&Value::i32_array([1, -2, 3])));
    assert_eq!(f.get("t.empty"), Some(&Value::Array(ValueType::F32, vec![])));
    assert_eq!(f.get("t.nested").and_then(|v| v.as_array()).map(|(t, i)| (t, i.len())), Some((ValueType::Array, 2)));
    // metadata order is preserved
    assert_eq!(f.metadata()[0].0, "general.architecture");

    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let b = f.tensor_info("b").unwrap();
    assert_eq!((b.ty, b.ne.clone(), b.n_bytes, b.offset), (GgmlType::TQ2_0, vec![256, 2], 132, 32));
    assert_eq!(f.tensor_info("c").unwrap().offset, 32 + 160);
    let data = f.tensor_data("b").unwrap();
    assert_eq!(&data[..66], &[7u8; 66]);
    assert_eq!(&data[66..], &[9u8; 66]);
    assert_eq!(f.tensor_data("a").unwrap()[4..8], 2.0f32.to_le_bytes());
    assert_eq!(f.tensor_data("c").unwrap(), &[1u8; 10]);
    assert_eq!(f.file_size(), f.data_offset() + 32 + 160 + 32);
    assert!(matches!(f.tensor_data("zz"), Err(GgufError::MissingTensor { .. })));

    let summary = ModelSummary::from_file(&f).to_string();
    assert!(summary.contains("architecture:  bitnet"), "{summary}");
    assert!(summary.contains("block_count"), "{summary}");
    assert!(summary.contains("TQ2_0"), "{summary}");
    assert!(summary.contains("mostly TQ2_0"), "{summary}");
}

#[test]
fn custom_alignment_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = GgufWriter::new();
    w.add_kv("general.alignment", 64u32).unwrap();
    w.add_tensor("x", GgmlType::F32, &[3]).unwrap();
    w.add_tensor("y", GgmlType::F32, &[1]).unwrap();
    let mut s = w.create(&path).unwrap();
    s.write_tensor("x", &[0u8; 12]).unwrap();
    s.write_tensor("y", &[0u8; 4]).unwrap();
    s.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_offset() % 64, 0);
    assert_eq!(f.tensor_info("y").unwrap().offset, 64);
}

fn only_file(dir: &Path) -> Vec<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn dropped_or_failed_writers_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    {
        let mut s = sample_writer().create(&path).unwrap();
        s.write_tensor("a", &[0u8; 12]).unwrap();
        // a partial file exists under a hidden temp name, never under the target name
        assert!(!path.exists());
        assert_eq!(only_file(dir.path()).len(), 1);
    }
    assert!(only_file(dir.path()).is_empty());

    let mut s = sample_writer().create(&path).unwrap();
    let err = s.write_tensor("b", &[0u8; 132]).unwrap_err().to_string();
    assert!(err.contains("out of order") && err.contains("'a' is next"), "{err}");
    let err = s.write_tensor("a", &[0u8; 11]).unwrap_err().to_string();
    assert!(err.contains("11 bytes written, expected 12"), "{err}");
    drop(s);
    assert!(only_file(dir.path()).is_empty());

    let mut s = sample_writer().create(&path).unwrap();
    s.write_tensor("a", &[0u8; 12]).unwrap();
    let err = s.finish().unwrap_err().to_string();
    assert!(err.contains("2 tensor(s) not written (first: b, c)"), "{err}");
    assert!(only_file(dir.path()).is_empty());
}

#[test]
fn declaration_errors() {
    let mut w = GgufWriter::new();
    w.add_kv("k", 1u32).unwrap();
    assert!(w.add_kv("k", 2u32).is_err());
    assert!(w.add_kv("general.alignment", 48u32).is_err());
    assert!(w.add_kv("bad", Value::Array(ValueType::I32, vec![Value::U8(1)])).is_err());
    let err = w.add_tensor("t", GgmlType::TQ2_0, &[100, 2]).unwrap_err().to_string();
    assert!(err.contains("tensor 't': row length 100 is not a multiple of the TQ2_0 block size 256"), "{err}");
    w.add_tensor("t", GgmlType::F32, &[4]).unwrap();
    assert!(w.add_tensor("t", GgmlType::F32, &[4]).is_err());
}

#[test]
fn truncated_file_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    write_sample(&path);
    let full = fs::read(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let b = f.tensor_info("b").unwrap();
    let b_start = f.data_offset() + b.offset;
    drop(f);
    fs::write(&path, &full[..(b_start + 100) as usize]).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(
        err.ends_with(&format!(
            "model.gguf: truncated: tensor 'b' needs bytes {}..{} but file is {} bytes",
            b_start,
            b_start + 132,
            b_start + 100
        )),
        "{err}"
    );

    // cut inside the header
    fs::write(&path, &full[..40]).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("truncated: metadata"), "{err}");
}

#[test]
fn corrupt_headers_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    fs::write(&path, b"GGML\x03\0\0\0").unwrap();
    let err = GgufFile::open(&path).err().unwrap();
    assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");

    fs::write(&path, b"GGUF\x09\0\0\0").unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("unsupported GGUF version 9"), "{err}");

    let mut bytes = b"GGUF\x03\0\0\0".to_vec();
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = GgufFile::open(&path).err().unwrap().to_string();
    assert!(err.contains("corrupt"), "{err}");

    let err = GgufFile::open(dir.path().join("missing.gguf")).err().unwrap().to_string();
    assert!(err.contains("missing.gguf: cannot open"), "{err}");
}
