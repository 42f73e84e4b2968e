//! End to end, COPY, ADD and `.dockerignore` where umstage's image differed from current
//! BuildKit's (issues 15 and 17): each test builds what BuildKit's own integration tests or
//! documented behaviour describe and asserts the tree a user would find in the image.

mod common;

use std::fs;
use std::process::Command;

use common::{Env, TestResult, assert_ok, entry, layers, stderr, text};
use umstage_testutil::archive::{TarEntry, Unpacked};

fn must(image: &Unpacked, path: &str) -> Result<TarEntry, String> {
    entry(image, path).ok_or_else(|| format!("{path} is not in the image"))
}

fn tar(args: &[&str], cwd: &std::path::Path) -> TestResult {
    umstage_testutil::run(Command::new("tar").args(args).current_dir(cwd))?;
    Ok(())
}

/// BuildKit extracts a source that is itself an archive; an archive inside an added directory
/// is copied as it is.
#[test]
fn add_of_a_directory_copies_the_archives_inside_it() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("payload/p.txt", "packed\n"),
            ("sub/plain.txt", "plain\n"),
            (
                "Dockerfile",
                "FROM busybox\nADD sub /dst\nADD sub/x.tar.gz /ex/\n",
            ),
        ],
    )?;
    tar(&["-czf", "sub/x.tar.gz", "payload"], &ctx)?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/dst/plain.txt")?, "plain\n");
    assert_eq!(
        fs::read(image.path("/dst/x.tar.gz"))?,
        fs::read(ctx.join("sub/x.tar.gz"))?
    );
    assert!(!image.path("/dst/payload").exists());
    assert!(!image.path("/payload").exists());
    assert_eq!(image.read_to_string("/ex/payload/p.txt")?, "packed\n");
    Ok(())
}

/// BuildKit's context transfer sends a socket as an empty regular file.
#[test]
fn a_socket_in_the_context_becomes_an_empty_file() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("keep.txt", "kept\n"),
            ("Dockerfile", "FROM busybox\nCOPY . /all/\n"),
        ],
    )?;
    let _listener = std::os::unix::net::UnixListener::bind(ctx.join("sock"))?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/all/keep.txt")?, "kept\n");
    let sock = must(&image, "all/sock")?;
    assert!(sock.mode.starts_with('-'), "{sock:?}");
    assert_eq!((sock.uid, sock.gid, sock.size), (0, 0, 0), "{sock:?}");
    Ok(())
}

/// A bare `!` is an error in BuildKit's pattern matcher; the message names the file and line.
#[test]
fn a_bare_exclamation_mark_in_dockerignore_is_an_error() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("a.md", "a\n"),
            (".dockerignore", "*.md\n!\n"),
            ("Dockerfile", "FROM busybox\nCOPY . /all/\n"),
        ],
    )?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(".dockerignore: line 2") && err.contains("illegal exclusion pattern"),
        "{err}"
    );
    // Not the one beside the Dockerfile: that is the file named when it applies.
    fs::write(ctx.join("Dockerfile.dockerignore"), "!\n")?;
    env.dir.user().chown_tree(env.dir.path())?;
    let out = env.build(&ctx, "image.tar", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("Dockerfile.dockerignore: line 1"),
        "{}",
        text(&out)
    );
    Ok(())
}

/// A path a `!` pattern brings back brings its parent directories with it, so a COPY can name
/// them; an excluded directory is searched for what an exception brings back, as current
/// BuildKit's context transfer does (docker 20.10's did not look inside `volume/` for
/// `!**/oneline.txt`; see docs/compatibility.md).
#[test]
fn dockerignore_exceptions_bring_their_parents_and_are_found_in_excluded_dirs() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("folder1/file1", "one\n"),
            ("folder1/file2", "two\n"),
            ("folder2/file3", "three\n"),
            (".dockerignore", "**\n!folder1/file1\n"),
            (
                "Dockerfile",
                "FROM busybox\nADD folder1 /f1\nCOPY folder* /star/\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/f1/file1")?, "one\n");
    assert!(!image.path("/f1/file2").exists());
    assert_eq!(image.read_to_string("/star/file1")?, "one\n");
    assert!(!image.path("/star/file3").exists());

    let ctx = env.context(
        "ctx2",
        &[
            ("volume/data/oneline.txt", "kept\n"),
            ("volume/data/other.txt", "dropped\n"),
            ("volume/top.txt", "dropped\n"),
            ("vendor/keep/a.txt", "kept\n"),
            ("vendor/b.txt", "dropped\n"),
            ("build/oneline.txt", "dropped\n"),
            (
                ".dockerignore",
                "volume/\n!**/oneline.txt\nvendor\n!vendor/keep\nbuild\n",
            ),
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image2.tar", &[]));
    let image = layers(&env, "image2.tar")?;
    assert_eq!(
        image.read_to_string("/ctx/volume/data/oneline.txt")?,
        "kept\n"
    );
    assert_eq!(image.read_to_string("/ctx/vendor/keep/a.txt")?, "kept\n");
    for gone in [
        "volume/data/other.txt",
        "volume/top.txt",
        "vendor/b.txt",
        "build",
    ] {
        assert!(!image.path(&format!("/ctx/{gone}")).exists(), "{gone}");
    }
    Ok(())
}

/// Without `--parents` BuildKit matches a COPY source with Go's `filepath.Match`: `**` is `*`,
/// within one path component. With `--parents` the source is an include pattern, `**` crosses
/// directories, and the part before a `/./` pivot is dropped (BuildKit's testCopyParents).
#[test]
fn double_stars_and_parents_match_as_buildkit() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("top.txt", "top\n"),
            ("a/one.txt", "one\n"),
            ("a/b/two.txt", "two\n"),
            (
                "Dockerfile",
                "FROM busybox AS base\n\
                 RUN mkdir -p /test/a/b/c/d/e /test/a/b2/c/d/e /test/a/b/c2/d/e /test/a/b/c2/d/e2 \
                  && touch /test/a/b/c/d/foo /test/a/b/c/d/e/bay /test/a/b2/c/d/e/bar \
                  /test/a/b/c2/d/e/baz /test/a/b/c2/d/e2/baz\n\
                 FROM busybox\n\
                 COPY **/*.txt /stars/\n\
                 COPY a/** /a-all/\n\
                 COPY --from=base --parents /test/a/b*/./c/**/e /dw/\n\
                 COPY --from=base --parents /test/a/b/c*/./d/**/baz /test/a/b*/./c/**/bar /di/\n\
                 COPY --parents nothing*/x /empty-parents/\n\
                 COPY nothing* /empty/\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/stars/one.txt")?, "one\n");
    assert!(!image.path("/stars/top.txt").exists());
    assert!(!image.path("/stars/two.txt").exists());
    assert_eq!(image.read_to_string("/a-all/one.txt")?, "one\n");
    assert_eq!(image.read_to_string("/a-all/two.txt")?, "two\n");
    for there in [
        "dw/c/d/e/bay",
        "dw/c/d/e/bar",
        "di/d/e/baz",
        "di/d/e2/baz",
        "di/c/d/e/bar",
    ] {
        assert!(image.path(&format!("/{there}")).is_file(), "{there}");
    }
    for absent in ["dw/c/d/foo", "dw/test", "di/d/e/bay"] {
        assert!(!image.path(&format!("/{absent}")).exists(), "{absent}");
    }
    assert!(image.path("/empty-parents").is_dir());
    assert!(!image.path("/empty").exists());
    Ok(())
}

/// BuildKit's testCopyChmod: the directories a `COPY --chmod` creates take its mode. And a
/// directory's contents copied to a missing destination make that destination as a missing
/// parent is made (root's, 0755), not with the source directory's owner or mode.
#[test]
fn created_directories_take_chmod_and_belong_to_root() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("foo", "foo\n"),
            (
                "Dockerfile",
                "FROM busybox AS source\n\
                 RUN mkdir -p /dir/sub && echo x > /dir/sub/x && chown -R 1000:1000 /dir \
                  && chmod 0700 /dir\n\
                 FROM busybox\n\
                 COPY --chmod=777 foo /parent/foo\n\
                 COPY --chmod=770 foo /parent/sub/foo\n\
                 COPY --chmod=750 foo /a/b/c/\n\
                 COPY --from=source /dir /dir\n\
                 COPY --from=source --chown=1234:1234 /dir /owned\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    let mode = |p: &str| must(&image, p).map(|e| e.mode);
    assert_eq!(mode("parent")?, "drwxrwxrwx");
    assert_eq!(mode("parent/sub")?, "drwxrwx---");
    assert_eq!(mode("parent/foo")?, "-rwxrwxrwx");
    assert_eq!(mode("a")?, "drwxr-x---");
    assert_eq!(mode("a/b/c")?, "drwxr-x---");
    assert_eq!(mode("a/b/c/foo")?, "-rwxr-x---");
    let dir = must(&image, "dir")?;
    assert_eq!((dir.uid, dir.gid, dir.mode.as_str()), (0, 0, "drwxr-xr-x"));
    let sub = must(&image, "dir/sub")?;
    assert_eq!((sub.uid, sub.gid), (1000, 1000));
    let owned = must(&image, "owned")?;
    assert_eq!((owned.uid, owned.gid), (1234, 1234));
    Ok(())
}

/// A loopback HTTP server as a file server behaves for BuildKit's HTTP source: `ETag` and
/// `Last-Modified` on every answer, `304 Not Modified` to a matching `If-None-Match`. `/data`
/// serves whatever the test last put there; every request's path and `If-None-Match` is logged.
/// One request the file server answered: path, `If-None-Match`, status.
type Served = (String, Option<String>, u16);

struct FileServer {
    port: u16,
    data: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    log: std::sync::Arc<std::sync::Mutex<Vec<Served>>>,
}

impl FileServer {
    fn start(archive: Vec<u8>) -> Result<Self, Box<dyn std::error::Error>> {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let data = Arc::new(Mutex::new(b"first\n".to_vec()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (served, logged) = (Arc::clone(&data), Arc::clone(&log));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let if_none_match = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("if-none-match: ")
                            .or(l.strip_prefix("If-None-Match: "))
                    })
                    .map(str::to_string);
                let body = match path.as_str() {
                    "/files/data.txt" => served.lock().map(|d| d.clone()).unwrap_or_default(),
                    "/t.tar.gz" => archive.clone(),
                    _ => b"the root page\n".to_vec(),
                };
                let etag = format!(
                    "\"{}-{}\"",
                    body.len(),
                    body.iter().map(|&b| u64::from(b)).sum::<u64>()
                );
                let status = if if_none_match.as_deref() == Some(etag.as_str()) {
                    304
                } else {
                    200
                };
                if let Ok(mut l) = logged.lock() {
                    l.push((path, if_none_match, status));
                }
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nETag: {etag}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    if status == 200 { "OK" } else { "Not Modified" },
                    if status == 200 { body.len() } else { 0 },
                );
                let _ = stream.write_all(head.as_bytes());
                if status == 200 {
                    let _ = stream.write_all(&body);
                }
            }
        });
        Ok(FileServer { port, data, log })
    }

    fn requests(&self, path: &str) -> Vec<(Option<String>, u16)> {
        self.log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|(p, _, _)| p == path)
                    .map(|(_, inm, status)| (inm.clone(), *status))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// BuildKit's HTTP source: a URL without `--checksum` is revalidated on every build and the
/// step keyed by what was downloaded; `--unpack=true` extracts a downloaded archive; a URL
/// whose path has no name is saved as `__unnamed__`.
#[test]
fn add_of_a_url_revalidates_unpacks_and_names_as_buildkit() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context("ctx", &[("payload/p.txt", "packed\n")])?;
    tar(&["-czf", "t.tar.gz", "payload"], &ctx)?;
    let server = FileServer::start(fs::read(ctx.join("t.tar.gz"))?)?;
    let port = server.port;
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM busybox\n\
             ADD --unpack=true http://127.0.0.1:{port}/t.tar.gz /unpacked/\n\
             ADD http://127.0.0.1:{port}/t.tar.gz /packed/\n\
             ADD http://127.0.0.1:{port}/ /root-url/\n\
             ADD http://127.0.0.1:{port}/files/data.txt /web/\n"
        ),
    )?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "one.tar", &[]));
    let image = layers(&env, "one.tar")?;
    assert_eq!(image.read_to_string("/unpacked/payload/p.txt")?, "packed\n");
    assert!(image.path("/packed/t.tar.gz").is_file());
    assert_eq!(
        image.read_to_string("/root-url/__unnamed__")?,
        "the root page\n"
    );
    assert_eq!(image.read_to_string("/web/data.txt")?, "first\n");
    assert_eq!(must(&image, "web/data.txt")?.mode, "-rw-------");

    // Unchanged: asked again, answered 304, and the step is a cache hit.
    let out = env.build(&ctx, "two.tar", &[]);
    assert_ok(&out);
    let asked = server.requests("/files/data.txt");
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(asked[1].1, 304, "{asked:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .matches("CACHED")
            .count()
            >= 4,
        "{}",
        text(&out)
    );

    // Changed on the server: fetched again, and the image has the new content.
    if let Ok(mut d) = server.data.lock() {
        *d = b"second\n".to_vec();
    }
    assert_ok(&env.build(&ctx, "three.tar", &[]));
    assert_eq!(server.requests("/files/data.txt")[2].1, 200);
    let image = layers(&env, "three.tar")?;
    assert_eq!(image.read_to_string("/web/data.txt")?, "second\n");
    Ok(())
}

/// An archive holding `d -> ..` and then `d/etc/myfile`: BuildKit extracts it with the
/// destination as the archive's root, so the file lands at `/dest/etc/myfile`.
#[test]
fn add_of_an_archive_with_a_link_to_its_parent_resolves_in_the_destination() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("myfile", "mine\n"),
            ("Dockerfile", "FROM busybox\nADD x.tar /dest/\n"),
        ],
    )?;
    std::os::unix::fs::symlink("..", ctx.join("d"))?;
    tar(
        &[
            "--owner=0",
            "--group=0",
            "-cf",
            "x.tar",
            "d",
            "--transform=s|^myfile$|d/etc/myfile|",
            "myfile",
        ],
        &ctx,
    )?;
    fs::remove_file(ctx.join("d"))?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/dest/etc/myfile")?, "mine\n");
    assert_eq!(must(&image, "dest/d")?.link.as_deref(), Some(".."));
    assert!(!image.path("/etc/myfile").exists());
    Ok(())
}

/// Hard links stay linked: in a `type=local` output as in `type=tar` and in the image, and in
/// a COPY of a directory holding them (BuildKit's copier links what its source links).
#[test]
fn hard_links_stay_linked_in_local_outputs_and_copies() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("tree/a", "shared\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN mkdir /made && echo made > /made/one && ln /made/one /made/two\n\
                 COPY tree /copied/\n",
            ),
        ],
    )?;
    fs::hard_link(ctx.join("tree/a"), ctx.join("tree/b"))?;
    env.dir.user().chown_tree(env.dir.path())?;
    let local = env.path("rootfs");
    let out = env.build(
        &ctx,
        "image.tar",
        &["-o", &format!("type=local,dest={}", local.display())],
    );
    assert_ok(&out);
    for (a, b) in [("made/one", "made/two"), ("copied/a", "copied/b")] {
        let (ma, mb) = (
            fs::symlink_metadata(local.join(a))?,
            fs::symlink_metadata(local.join(b))?,
        );
        assert_eq!((ma.dev(), ma.ino()), (mb.dev(), mb.ino()), "{a} and {b}");
        assert_eq!(ma.nlink(), 2, "{a}");
    }
    let image = layers(&env, "image.tar")?;
    let links: Vec<&TarEntry> = image
        .layers
        .iter()
        .flat_map(|l| l.entries.iter())
        .filter(|e| e.kind() == 'h')
        .collect();
    assert!(
        links.iter().any(|e| e.path.starts_with("copied/")),
        "{links:?}"
    );
    Ok(())
}
