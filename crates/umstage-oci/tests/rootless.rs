//! Unpacking as an unprivileged user: what cannot be done (device nodes, foreign owners) is
//! skipped with a warning, everything else is applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use umstage_oci::tarball::{EntryKind, Header, write_end, write_header, write_padding};
use umstage_oci::unpack::{UnpackOptions, unpack};
use umstage_testutil::user::{SharedDir, TestUser};

/// Set in the copy of this test that runs as the unprivileged user: the shared directory.
const CHILD_ENV: &str = "UMSTAGE_OCI_ROOTLESS_CHILD";
const TEST_NAME: &str =
    "device_nodes_and_foreign_owners_are_skipped_with_warnings_when_unprivileged";

fn layer() -> Vec<u8> {
    let mut out = Vec::new();
    let mut dev = Header::new("dev", EntryKind::Dir);
    dev.mode = 0o755;
    write_header(&mut out, &dev).unwrap();
    let mut null = Header::new("dev/null", EntryKind::Char);
    null.mode = 0o666;
    (null.dev_major, null.dev_minor) = (1, 3);
    write_header(&mut out, &null).unwrap();
    let mut read_only = Header::new("ro", EntryKind::Dir);
    read_only.mode = 0o555;
    write_header(&mut out, &read_only).unwrap();
    let mut inside = Header::new("ro/inside", EntryKind::File);
    inside.mode = 0o444;
    write_header(&mut out, &inside).unwrap();
    let mut file = Header::new("etc-file", EntryKind::File);
    file.mode = 0o640;
    file.size = 5;
    file.uid = 0;
    write_header(&mut out, &file).unwrap();
    out.extend_from_slice(b"hello");
    write_padding(&mut out, 5).unwrap();
    write_end(&mut out).unwrap();
    out
}

fn as_unprivileged_user(dir: &Path) {
    let options = UnpackOptions {
        ignore_chown_errors: true,
        ..Default::default()
    };
    let target = dir.join("target");
    let report = unpack(
        std::fs::File::open(dir.join("layer.tar")).unwrap(),
        &target,
        &options,
    )
    .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("skipped device node dev/null")),
        "{:?}",
        report.warnings
    );
    assert!(!target.join("dev/null").exists());
    assert_eq!(std::fs::read(target.join("etc-file")).unwrap(), b"hello");
    // A read-only directory still received its child (its mode is applied last).
    assert!(target.join("ro/inside").is_file());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(target.join("etc-file"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o640
    );
    // Without leniency the foreign owner is an error, naming the file.
    let err = unpack(
        std::fs::File::open(dir.join("layer.tar")).unwrap(),
        &dir.join("strict"),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("dev"), "{err}");
}

#[test]
fn device_nodes_and_foreign_owners_are_skipped_with_warnings_when_unprivileged() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        as_unprivileged_user(Path::new(&dir));
        return;
    }
    let user = TestUser::get()
        .expect("the unprivileged test user is required (cargo xtask test creates it)");
    let shared = SharedDir::new(&user).unwrap();
    std::fs::write(shared.path().join("layer.tar"), layer()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let output = user
        .command(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, shared.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the unprivileged run failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the unprivileged run ran no test"
    );
}
