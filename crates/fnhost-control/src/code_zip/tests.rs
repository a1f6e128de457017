use std::io::Write;

use zip::write::SimpleFileOptions;

use super::*;

fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

fn extract_to(data: &[u8], limits: &ZipLimits) -> (tempfile::TempDir, Result<Extracted, ZipError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = extract(data, &dir.path().join("code"), limits);
    (dir, r)
}

#[test]
fn extracts_files_and_directories() {
    let zip = build(&[
        ("handler.py", b"def handler(e, c):\n  return 1\n"),
        ("pkg/mod.py", b"x = 1\n"),
    ]);
    let (dir, r) = extract_to(&zip, &ZipLimits::default());
    let r = r.expect("extract");
    assert_eq!(r.files, 2);
    let code = dir.path().join("code");
    assert_eq!(
        fs::read_to_string(code.join("pkg/mod.py")).expect("read"),
        "x = 1\n"
    );
    let mode = fs::metadata(code.join("handler.py"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn refuses_what_is_not_a_zip() {
    let (_d, r) = extract_to(b"this is not a zip", &ZipLimits::default());
    assert!(matches!(r, Err(ZipError::NotAZip(_))), "{r:?}");
}

#[test]
fn refuses_escaping_names() {
    for name in ["../evil.py", "a/../../evil.py", "/etc/evil"] {
        let zip = build(&[(name, b"x")]);
        let (dir, r) = extract_to(&zip, &ZipLimits::default());
        assert!(
            matches!(r, Err(ZipError::UnsafeEntry { .. })),
            "{name}: {r:?}"
        );
        assert!(!dir.path().join("evil.py").exists());
    }
}

#[test]
fn refuses_symlinks_pointing_out_and_keeps_inside_ones() {
    let link = |target: &str| {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default();
        w.start_file("lib/real.py", opts).expect("start");
        w.write_all(b"x").expect("write");
        w.add_symlink("lib/link.py", target, opts).expect("symlink");
        w.finish().expect("finish").into_inner()
    };
    let (dir, r) = extract_to(&link("real.py"), &ZipLimits::default());
    r.expect("inside link");
    assert_eq!(
        fs::read_to_string(dir.path().join("code/lib/link.py")).expect("read"),
        "x"
    );
    for target in ["/etc/passwd", "../../outside", "../../../etc"] {
        let (_d, r) = extract_to(&link(target), &ZipLimits::default());
        assert!(
            matches!(r, Err(ZipError::UnsafeEntry { .. })),
            "{target}: {r:?}"
        );
    }
}

#[test]
fn refuses_writing_through_a_symlinked_directory() {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default();
    w.add_symlink("d", ".", opts).expect("symlink");
    w.start_file("d/x.py", opts).expect("start");
    w.write_all(b"x").expect("write");
    let zip = w.finish().expect("finish").into_inner();
    let (_d, r) = extract_to(&zip, &ZipLimits::default());
    assert!(matches!(r, Err(ZipError::UnsafeEntry { .. })), "{r:?}");
}

#[test]
fn enforces_sizes_counts_and_ratio() {
    let zeros = vec![0u8; 4 << 20];
    let zip = build(&[("zeros.bin", &zeros)]);
    let (_d, r) = extract_to(&zip, &ZipLimits::default());
    assert!(matches!(r, Err(ZipError::Bomb { .. })), "{r:?}");
    let small = ZipLimits {
        max_unzipped_bytes: 1000,
        ..ZipLimits::default()
    };
    let zip = build(&[("a", &[1u8; 600]), ("b", &[2u8; 600])]);
    let (_d, r) = extract_to(&zip, &small);
    assert!(
        matches!(r, Err(ZipError::TooLargeUnzipped { limit: 1000 })),
        "{r:?}"
    );
    let few = ZipLimits {
        max_entries: 1,
        ..ZipLimits::default()
    };
    let (_d, r) = extract_to(&zip, &few);
    assert!(
        matches!(r, Err(ZipError::TooManyEntries { count: 2, limit: 1 })),
        "{r:?}"
    );
    let tiny = ZipLimits {
        max_zipped_bytes: 10,
        ..ZipLimits::default()
    };
    let (_d, r) = extract_to(&zip, &tiny);
    assert!(matches!(r, Err(ZipError::TooLargeZipped { .. })), "{r:?}");
}

#[test]
fn refuses_duplicates_and_devices() {
    let zip = build(&[("a.py", b"1"), ("./a.py", b"2")]);
    let (_d, r) = extract_to(&zip, &ZipLimits::default());
    assert!(matches!(r, Err(ZipError::Duplicate { .. })), "{r:?}");
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().unix_permissions(0o020_644);
    w.start_file("dev", opts).expect("start");
    let zip = w.finish().expect("finish").into_inner();
    let (_d, r) = extract_to(&zip, &ZipLimits::default());
    // The writer may drop the type bits; then it is a plain empty file.
    if let Err(e) = r {
        assert!(matches!(e, ZipError::UnsafeEntry { .. }), "{e:?}");
    }
}

#[test]
fn link_judgement() {
    assert!(link_stays_inside(Path::new("a/b"), "c"));
    assert!(link_stays_inside(Path::new("a/b"), "../c"));
    assert!(!link_stays_inside(Path::new("a/b"), "../../c"));
    assert!(!link_stays_inside(Path::new("b"), "/c"));
}
