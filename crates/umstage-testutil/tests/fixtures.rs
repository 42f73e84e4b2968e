//! The fixtures against the real tools: registry, test user, base images, readers.

use std::process::Command;

use umstage_testutil::archive::{self, Transport};
use umstage_testutil::images;
use umstage_testutil::registry::Registry;
use umstage_testutil::user::{SharedDir, TestUser};
use umstage_testutil::{is_root, run, run_stdout};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn registry_serves_pushed_busybox_and_is_gone_after_drop() -> TestResult {
    let busybox = images::busybox()?;
    let registry = Registry::start()?;
    assert_eq!(registry.http_status("/v2/")?, 200);
    let reference = busybox.push(&registry)?;
    assert_eq!(reference, format!("{}/busybox:latest", registry.host()));
    assert_eq!(registry.tags("busybox")?, vec!["latest".to_owned()]);

    let inspected = run_stdout(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))?;
    assert!(
        inspected.contains("\"Architecture\": \"amd64\""),
        "{inspected}"
    );

    let storage = registry.storage_dir();
    assert!(storage.is_dir());
    let port = registry.port();
    drop(registry);
    assert!(!storage.exists(), "the registry's storage outlives it");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the registry still listens after drop"
    );
    Ok(())
}

#[test]
fn registry_with_basic_auth_refuses_anonymous_and_accepts_the_user() -> TestResult {
    let registry = Registry::start_with_basic_auth("alice", "s3cret pass")?;
    assert_eq!(registry.http_status("/v2/")?, 401);
    let busybox = images::busybox()?;
    busybox.push(&registry)?;
    assert_eq!(registry.tags("busybox")?, vec!["latest".to_owned()]);

    let anonymous = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--no-creds"])
        .arg(format!("docker://{}", registry.reference("busybox:latest")))
        .output()?;
    assert!(!anonymous.status.success(), "anonymous pull was allowed");
    Ok(())
}

#[test]
fn test_user_runs_commands_unprivileged_in_a_clean_environment() -> TestResult {
    let user = TestUser::get()?;
    let out = run_stdout(
        user.command("sh")
            .args(["-c", "id -u; id -g; echo ${CARGO:-unset}"]),
    )?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            user.uid.to_string(),
            user.gid.to_string(),
            "unset".to_owned()
        ]
    );
    if is_root() {
        assert_ne!(user.uid, 0);
        assert!(
            user.subuid_range()?.is_some(),
            "{} has no /etc/subuid range",
            user.name
        );
        assert!(
            user.subgid_range()?.is_some(),
            "{} has no /etc/subgid range",
            user.name
        );
    }
    Ok(())
}

#[test]
fn shared_dir_lets_the_user_run_a_copied_executable_and_write() -> TestResult {
    let user = TestUser::get()?;
    let shared = SharedDir::new(&user)?;
    let exe = shared.install_executable(std::path::Path::new("/bin/busybox"))?;
    let work = shared.mkdir("work")?;
    run(user
        .command(&exe)
        .args([
            "sh",
            "-c",
            "echo hello > out.txt && mkdir -p sub && chmod 500 sub",
        ])
        .current_dir(&work))?;
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt"))
            .ok()
            .as_deref(),
        Some("hello\n")
    );
    let path = shared.path().to_owned();
    drop(shared);
    assert!(!path.exists(), "the shared dir outlives its drop");
    Ok(())
}

#[test]
fn busybox_image_is_one_layer_with_users_and_applets() -> TestResult {
    let busybox = images::busybox()?;
    let work = tempfile::tempdir()?;
    let tar = work.path().join("busybox.tar");
    busybox.save_oci_archive(&tar)?;

    let image = archive::apply_layers(&tar, Transport::OciArchive)?;
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.config["architecture"], "amd64");
    assert_eq!(archive::strings(&image.config["config"]["Cmd"]), ["sh"]);
    assert!(image.env_var("PATH").is_some_and(|p| p.contains("/bin")));
    let passwd = image.read_to_string("/etc/passwd")?;
    assert!(passwd.contains("root:x:0:0:") && passwd.contains("nobody:x:65534:"));
    let entries = &image.layers[0].entries;
    let sh = entries.iter().find(|e| e.path == "bin/sh");
    assert_eq!(sh.and_then(|e| e.link.as_deref()), Some("/bin/busybox"));
    let home = entries.iter().find(|e| e.path == "home/user");
    assert_eq!(home.map(|e| (e.uid, e.gid)), Some((1000, 1000)));
    let tmp = entries.iter().find(|e| e.path == "tmp");
    assert_eq!(tmp.map(|e| e.mode.as_str()), Some("drwxrwxrwt"));

    // The same image through skopeo and umoci.
    let config = archive::skopeo_config(&tar, Transport::OciArchive)?;
    assert_eq!(config["rootfs"], image.config["rootfs"]);
    let unpacked = archive::umoci_unpack(&tar, Transport::OciArchive)?;
    let out = run_stdout(
        Command::new(unpacked.path("/bin/busybox"))
            .arg("echo")
            .arg("runs"),
    )?;
    assert_eq!(out, "runs\n");
    Ok(())
}

/// A second layer with a whiteout and an opaque dir, made with `tar` and
/// `umoci raw add-layer`, read back by `apply_layers` and by `umoci unpack`.
#[test]
fn readers_apply_whiteouts_and_opaque_dirs() -> TestResult {
    let busybox = images::busybox()?;
    let work = tempfile::tempdir()?;
    let layout = busybox.copy_to(&work.path().join("layout"))?;
    let upper = work.path().join("upper");
    for dir in ["etc", "usr/sbin", "new"] {
        std::fs::create_dir_all(upper.join(dir))?;
    }
    for (file, text) in [
        ("etc/.wh.group", ""),
        ("usr/sbin/.wh..wh..opq", ""),
        ("new/file.txt", "new\n"),
    ] {
        std::fs::write(upper.join(file), text)?;
    }
    let layer = work.path().join("layer.tar");
    run(Command::new("tar")
        .args(["--create", "--sort=name", "--file"])
        .arg(&layer)
        .arg("--directory")
        .arg(&upper)
        .args(["etc", "new", "usr"]))?;
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(format!("{}:{}", layout.dir.display(), layout.tag))
        .arg(&layer))?;
    let tar = work.path().join("two-layers.tar");
    layout.save_oci_archive(&tar)?;

    let applied = archive::apply_layers(&tar, Transport::OciArchive)?;
    let unpacked = archive::umoci_unpack(&tar, Transport::OciArchive)?;
    for image in [&applied, &unpacked] {
        assert!(!image.path("/etc/group").exists(), "whiteout not applied");
        assert!(image.path("/etc/passwd").exists());
        assert!(image.path("/usr/sbin").is_dir());
        let left = std::fs::read_dir(image.path("/usr/sbin"))?.count();
        assert_eq!(left, 0, "opaque dir kept lower entries");
        assert_eq!(image.read_to_string("/new/file.txt")?, "new\n");
    }
    assert_eq!(applied.layers.len(), 2);
    assert!(applied.layers[1].entries.iter().any(|e| e.is_whiteout()));
    Ok(())
}
