//! Hostile layers: each is refused with a clear error and nothing outside the target changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use umstage_oci::tarball::{EntryKind, Header, write_end, write_header, write_padding};
use umstage_oci::unpack::{Deferred, UnpackMode, UnpackOptions, apply_deferred, unpack};

enum Item {
    File(String, &'static [u8]),
    Dir(&'static str),
    Symlink(&'static str, String),
    Hardlink(&'static str, String),
}

fn tar(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        let header = match item {
            Item::File(path, content) => {
                let mut h = Header::new(path.as_str(), EntryKind::File);
                h.size = content.len() as u64;
                h
            }
            Item::Dir(path) => Header::new(*path, EntryKind::Dir),
            Item::Symlink(path, target) => {
                let mut h = Header::new(*path, EntryKind::Symlink);
                h.link = target.clone().into_bytes();
                h
            }
            Item::Hardlink(path, target) => {
                let mut h = Header::new(*path, EntryKind::Hardlink);
                h.link = target.clone().into_bytes();
                h
            }
        };
        let mut header = header;
        header.mode = if header.kind == EntryKind::Dir {
            0o755
        } else {
            0o644
        };
        write_header(&mut out, &header).unwrap();
        if let Item::File(_, content) = item {
            out.extend_from_slice(content);
            write_padding(&mut out, content.len() as u64).unwrap();
        }
    }
    write_end(&mut out).unwrap();
    out
}

/// A scratch area: `outside/secret` must survive every attack on `root/`.
struct Arena {
    tmp: tempfile::TempDir,
}

impl Arena {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/dir")).unwrap();
        std::fs::write(tmp.path().join("outside/secret"), b"keep me").unwrap();
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        Self { tmp }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    fn outside_listing(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.tmp.path().to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path == self.root() {
                    continue;
                }
                if path.is_dir() && !path.is_symlink() {
                    stack.push(path.clone());
                }
                found.push(path);
            }
        }
        found.sort();
        found
    }

    /// Unpacks `layer`, expects an error mentioning `expected`, and checks nothing outside changed.
    fn refuse(&self, layer: &[u8], mode: UnpackMode, expected: &str) {
        let before = self.outside_listing();
        let options = UnpackOptions {
            mode,
            ..Default::default()
        };
        let err =
            unpack(layer, &self.root(), &options).expect_err("the hostile layer was accepted");
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "error {message:?} should mention {expected:?}"
        );
        assert_eq!(
            self.outside_listing(),
            before,
            "something changed outside the root"
        );
        assert_eq!(
            std::fs::read(self.outside().join("secret")).unwrap(),
            b"keep me"
        );
    }
}

fn escape_to_outside() -> String {
    "../outside".to_owned()
}

#[test]
fn absolute_paths_are_refused() {
    let arena = Arena::new();
    let evil = format!("{}/evil", arena.outside().display());
    let layer = tar(&[Item::File(evil, b"x")]);
    arena.refuse(&layer, UnpackMode::Plain, "absolute path");
}

#[test]
fn dotdot_components_are_refused() {
    let arena = Arena::new();
    arena.refuse(
        &tar(&[Item::File("../outside/evil".into(), b"x")]),
        UnpackMode::Plain,
        "'..'",
    );
    arena.refuse(
        &tar(&[Item::File("a/../../outside/evil".into(), b"x")]),
        UnpackMode::Plain,
        "'..'",
    );
}

#[test]
fn writing_through_an_escaping_symlink_is_refused() {
    let arena = Arena::new();
    let layer = tar(&[
        Item::Symlink("link", escape_to_outside()),
        Item::File("link/evil".into(), b"x"),
    ]);
    arena.refuse(&layer, UnpackMode::Plain, "leads outside the root");
    // A directory replaced by an escaping symlink later in the same layer.
    let arena = Arena::new();
    let layer = tar(&[
        Item::Dir("d"),
        Item::Symlink("d", "../../outside".into()),
        Item::File("d/evil".into(), b"x"),
    ]);
    arena.refuse(&layer, UnpackMode::Plain, "leads outside the root");
}

#[test]
fn absolute_symlinks_resolve_inside_the_root() {
    let arena = Arena::new();
    let before = arena.outside_listing();
    let target = arena.outside().display().to_string();
    let layer = tar(&[
        Item::Symlink("link", target.clone()),
        Item::File("link/landed".into(), b"x"),
    ]);
    unpack(&layer[..], &arena.root(), &UnpackOptions::default()).unwrap();
    assert_eq!(arena.outside_listing(), before);
    assert!(
        arena
            .root()
            .join(target.trim_start_matches('/'))
            .join("landed")
            .is_file()
    );
}

#[test]
fn hard_links_to_outside_are_refused() {
    let arena = Arena::new();
    arena.refuse(
        &tar(&[Item::Hardlink("hl", "../outside/secret".into())]),
        UnpackMode::Plain,
        "'..'",
    );
    let absolute = format!("{}/secret", arena.outside().display());
    arena.refuse(
        &tar(&[Item::Hardlink("hl", absolute)]),
        UnpackMode::Plain,
        "absolute path",
    );
    let layer = tar(&[
        Item::Symlink("link", escape_to_outside()),
        Item::Hardlink("hl", "link/secret".into()),
    ]);
    arena.refuse(&layer, UnpackMode::Plain, "leads outside the root");
    assert!(!arena.root().join("hl").exists());
}

#[test]
fn whiteouts_naming_outside_paths_are_refused() {
    for mode in [UnpackMode::Plain, UnpackMode::Overlay { userxattr: true }] {
        let arena = Arena::new();
        let layer = tar(&[
            Item::Symlink("link", escape_to_outside()),
            Item::File("link/.wh.secret".into(), b""),
        ]);
        arena.refuse(&layer, mode, "leads outside the root");
        let layer = tar(&[
            Item::Symlink("link", escape_to_outside()),
            Item::File("link/.wh..wh..opq".into(), b""),
        ]);
        arena.refuse(&layer, mode, "leads outside the root");
        arena.refuse(
            &tar(&[Item::File("dir/.wh...".into(), b"")]),
            mode,
            "whiteout names no file",
        );
        arena.refuse(
            &tar(&[Item::File("../outside/.wh.secret".into(), b"")]),
            mode,
            "'..'",
        );
    }
}

fn raw_header(name: &str, flag: u8, size_field: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 512];
    block[..name.len()].copy_from_slice(name.as_bytes());
    block[100..108].copy_from_slice(b"0000644\0");
    block[108..116].copy_from_slice(b"0000000\0");
    block[116..124].copy_from_slice(b"0000000\0");
    block[124..124 + size_field.len()].copy_from_slice(size_field);
    block[136..148].copy_from_slice(b"00000000000\0");
    block[156] = flag;
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = block.to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn absurd_header_sizes_are_refused_before_allocating() {
    let arena = Arena::new();
    // A PAX header claiming 4 GiB of metadata.
    arena.refuse(
        &raw_header("PaxHeaders.0/x", b'x', b"37777777777\0"),
        UnpackMode::Plain,
        "extended header",
    );
    // A GNU long name claiming 8 GiB.
    arena.refuse(
        &raw_header(
            "././@LongLink",
            b'L',
            &[0x80, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0],
        ),
        UnpackMode::Plain,
        "extended header",
    );
    // A negative base-256 size.
    arena.refuse(
        &raw_header("f", b'0', &[0xff; 12]),
        UnpackMode::Plain,
        "negative",
    );
    // A file larger than the configured limit.
    let options = UnpackOptions {
        max_file_size: 1 << 20,
        ..Default::default()
    };
    let err = unpack(
        &raw_header("big", b'0', b"77777777777\0")[..],
        &arena.root(),
        &options,
    )
    .unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert!(!arena.root().join("big").exists());
}

#[test]
fn overlay_internal_xattrs_in_a_layer_are_not_applied() {
    let arena = Arena::new();
    let mut out = Vec::new();
    let mut dir = Header::new("d", EntryKind::Dir);
    dir.mode = 0o755;
    dir.xattrs = vec![
        ("trusted.overlay.redirect".into(), b"/etc".to_vec()),
        ("user.overlay.opaque".into(), b"y".to_vec()),
    ];
    write_header(&mut out, &dir).unwrap();
    write_end(&mut out).unwrap();
    unpack(
        &out[..],
        &arena.root(),
        &UnpackOptions {
            mode: UnpackMode::Overlay { userxattr: true },
            ..Default::default()
        },
    )
    .unwrap();
    let mut names = vec![0u8; 1024];
    let n = rustix::fs::llistxattr(arena.root().join("d"), &mut names).unwrap();
    assert!(!String::from_utf8_lossy(&names[..n]).contains("overlay"));
}

#[test]
fn truncated_and_corrupt_streams_are_errors() {
    let arena = Arena::new();
    let good = tar(&[Item::File("file".into(), &[7u8; 2000])]);
    arena.refuse(&good[..1024], UnpackMode::Plain, "truncated");
    let mut bad = good.clone();
    bad[10] ^= 0x40;
    arena.refuse(&bad, UnpackMode::Plain, "checksum");
}

#[test]
fn overlay_whiteouts_under_lower_symlinks_are_applied_in_the_merged_view() {
    let arena = Arena::new();
    let layer_dir = arena.root().join("layer");
    let layer = tar(&[
        Item::File("a/.wh.x".into(), b""),
        Item::File("missing/.wh.y".into(), b""),
        Item::File("c/.wh..wh..opq".into(), b""),
        Item::File("d/new".into(), b"new"),
        Item::File("up/.wh.secret".into(), b""),
        Item::File("g/.wh.link".into(), b""),
        Item::File("n/h/.wh.z".into(), b""),
    ]);
    let options = UnpackOptions {
        mode: UnpackMode::Overlay { userxattr: true },
        ..Default::default()
    };
    let report = unpack(layer.as_slice(), &layer_dir, &options).unwrap();
    // Nothing is made up in the layer: a directory `a` or `c` there would hide a lower symlink.
    let mut held: Vec<_> = std::fs::read_dir(&layer_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    held.sort();
    assert_eq!(held, ["d"]);
    let w = |p: &str| Deferred::Whiteout(PathBuf::from(p));
    assert_eq!(
        report.deferred,
        [
            w("a/x"),
            w("missing/y"),
            Deferred::Opaque(PathBuf::from("c")),
            w("up/secret"),
            w("g/link"),
            w("n/h/z"),
        ]
    );

    // The merged view: a lower layer made `/a` a symlink to `/b` and `c` one to `d`.
    let merged = arena.root().join("merged");
    std::fs::create_dir_all(merged.join("b/x")).unwrap();
    std::fs::create_dir_all(merged.join("d")).unwrap();
    std::fs::write(merged.join("b/x/f"), b"f").unwrap();
    std::fs::write(merged.join("b/keep"), b"keep").unwrap();
    std::fs::write(merged.join("d/old"), b"old").unwrap();
    std::fs::write(merged.join("d/new"), b"new").unwrap();
    std::os::unix::fs::symlink("/b", merged.join("a")).unwrap();
    std::os::unix::fs::symlink("d", merged.join("c")).unwrap();
    apply_deferred(&merged, &layer_dir, &report.deferred[..3]).unwrap();
    assert!(!merged.join("b/x").exists());
    assert!(merged.join("b/keep").is_file());
    assert!(merged.join("a").is_symlink());
    // The opaque directory loses what lower layers put there, not what this layer did.
    assert!(!merged.join("d/old").exists());
    assert!(merged.join("d/new").is_file());

    // A whiteout of a symlink removes the link, not what it names; a relative link that climbs
    // with `..` but stays inside the root is followed.
    std::fs::create_dir_all(merged.join("g")).unwrap();
    std::fs::create_dir_all(merged.join("n")).unwrap();
    std::os::unix::fs::symlink("/b/keep", merged.join("g/link")).unwrap();
    std::os::unix::fs::symlink("../b", merged.join("n/h")).unwrap();
    std::fs::write(merged.join("b/z"), b"z").unwrap();
    apply_deferred(&merged, &layer_dir, &report.deferred[4..]).unwrap();
    assert!(!merged.join("g/link").is_symlink());
    assert!(merged.join("b/keep").is_file());
    assert!(!merged.join("b/z").exists());
    assert!(merged.join("n/h").is_symlink());

    // Through a link that climbs out, a whiteout is refused and the host file stays.
    std::os::unix::fs::symlink("../../outside", merged.join("up")).unwrap();
    let err = apply_deferred(&merged, &layer_dir, &report.deferred).unwrap_err();
    assert!(err.to_string().contains("leads outside the root"), "{err}");
    assert_eq!(
        std::fs::read(arena.outside().join("secret")).unwrap(),
        b"keep me"
    );
}
