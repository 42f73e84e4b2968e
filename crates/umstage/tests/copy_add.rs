//! End to end, COPY and ADD by the rules BuildKit's Dockerfile reference documents: trailing
//! slashes, directory contents, wildcards, ownership and modes, `--link`, `--parents`,
//! `--exclude`, `--from`, heredocs, times, symlinks, archives and the errors a user can cause.

mod common;

use std::fs;

use common::{Env, TestResult, assert_ok, config, entry, history, layers, stderr, text};
use umstage_testutil::archive::{TarEntry, Unpacked};

fn must(image: &Unpacked, path: &str) -> Result<TarEntry, String> {
    entry(image, path).ok_or_else(|| format!("{path} is not in the image"))
}

#[test]
fn destinations_directories_and_wildcards() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("file.txt", "file\n"),
            ("dir/top.txt", "top\n"),
            ("dir/sub/deep.txt", "deep\n"),
            ("parts/a/one.txt", "one\n"),
            ("parts/b/two.txt", "two\n"),
            ("w1.cfg", "w1\n"),
            ("w2.cfg", "w2\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY file.txt /renamed.txt\n\
                 COPY file.txt /into-dir/\n\
                 COPY file.txt /etc\n\
                 COPY dir /dir-contents\n\
                 COPY dir/ /dir-slash/\n\
                 COPY w?.cfg file.txt /several/\n\
                 COPY parts/* /merged/\n\
                 COPY nomatch* /never/\n\
                 WORKDIR /work\n\
                 COPY file.txt relative/\n\
                 COPY file.txt .\n\
                 ENV TARGET=/from-env\n\
                 COPY file.txt $TARGET/\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/renamed.txt")?, "file\n");
    assert_eq!(image.read_to_string("/into-dir/file.txt")?, "file\n");
    // A destination that is a directory in the image receives the file.
    assert_eq!(image.read_to_string("/etc/file.txt")?, "file\n");
    assert!(image.path("/etc/passwd").is_file());
    // A directory source copies its contents, not itself, with or without slashes.
    for d in ["dir-contents", "dir-slash"] {
        assert_eq!(image.read_to_string(&format!("/{d}/top.txt"))?, "top\n");
        assert_eq!(
            image.read_to_string(&format!("/{d}/sub/deep.txt"))?,
            "deep\n"
        );
        assert!(!image.path(&format!("/{d}/dir")).exists());
    }
    for f in ["w1.cfg", "w2.cfg", "file.txt"] {
        assert!(image.path(&format!("/several/{f}")).is_file(), "{f}");
    }
    // Directories matched by a wildcard are merged by their contents.
    assert_eq!(image.read_to_string("/merged/one.txt")?, "one\n");
    assert_eq!(image.read_to_string("/merged/two.txt")?, "two\n");
    // A wildcard matching nothing copies nothing, and makes no directory.
    assert!(!image.path("/never").exists());
    assert_eq!(image.read_to_string("/work/relative/file.txt")?, "file\n");
    assert_eq!(image.read_to_string("/work/file.txt")?, "file\n");
    assert_eq!(image.read_to_string("/from-env/file.txt")?, "file\n");
    // Created parent directories belong to root, 0755.
    let d = must(&image, "into-dir")?;
    assert_eq!((d.uid, d.gid, d.mode.as_str()), (0, 0, "drwxr-xr-x"));

    // Several sources need a directory destination (a trailing slash).
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY w1.cfg w2.cfg /not-a-dir\n",
    )?;
    let out = env.build(&ctx, "bad.tar", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2") && err.contains("/not-a-dir"),
        "{err}"
    );

    // A named source that does not exist is an error naming it.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY missing.txt /x\n",
    )?;
    let out = env.build(&ctx, "missing.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("missing.txt") && err.contains("not found"),
        "{err}"
    );

    // From another stage, likewise, naming the stage (its content key is computed first).
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS src\nFROM busybox\nCOPY --from=src /missing.txt /x\n",
    )?;
    let out = env.build(&ctx, "missing-from.tar", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/missing.txt") && err.contains("not found in stage src"),
        "{err}"
    );
    Ok(())
}

#[test]
fn owners_modes_times_and_symlinks() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("f.txt", "f\n"),
            ("tree/a.txt", "a\n"),
            ("tree/sub/b.txt", "b\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 ARG OWNER=4321:8765\n\
                 COPY --chown=user f.txt /by-name\n\
                 COPY --chown=user:nogroup f.txt /by-names\n\
                 COPY --chown=1234 f.txt /by-uid\n\
                 COPY --chown=$OWNER f.txt /by-arg\n\
                 COPY --chown=user tree /owned-tree/\n\
                 COPY --chmod=0700 tree /mode-tree/\n\
                 COPY --chmod=u=rwx,g=rx,o= f.txt /symbolic\n\
                 ADD --chmod=640 f.txt /added\n\
                 COPY --link f.txt /linked\n\
                 COPY tree /plain-tree/\n\
                 USER user\n\
                 COPY f.txt /as-user\n",
            ),
        ],
    )?;
    // A file with an old time, and a symlink inside a copied directory.
    let old = ctx.join("tree/a.txt");
    umstage_testutil::run(
        std::process::Command::new("touch")
            .args(["-m", "-d", "2020-01-02T03:04:05Z"])
            .arg(&old),
    )?;
    std::os::unix::fs::symlink("a.txt", ctx.join("tree/link"))?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    let owner = |p: &str| must(&image, p).map(|e| (e.uid, e.gid));
    // Names resolve in the image's own /etc/passwd and /etc/group; a lone user or uid
    // gives the same number as group.
    assert_eq!(owner("by-name")?, (1000, 1000));
    assert_eq!(owner("by-names")?, (1000, 65534));
    assert_eq!(owner("by-uid")?, (1234, 1234));
    assert_eq!(owner("by-arg")?, (4321, 8765));
    assert_eq!(owner("owned-tree/sub/b.txt")?, (1000, 1000));
    assert_eq!(owner("owned-tree/sub")?, (1000, 1000));
    // Without --chown, files belong to root whatever the USER.
    assert_eq!(owner("as-user")?, (0, 0));
    assert_eq!(owner("plain-tree/a.txt")?, (0, 0));
    // --chmod applies to files and directories alike.
    assert_eq!(must(&image, "mode-tree/sub")?.mode, "drwx------");
    assert_eq!(must(&image, "mode-tree/a.txt")?.mode, "-rwx------");
    assert_eq!(must(&image, "symbolic")?.mode, "-rwxr-x---");
    assert_eq!(must(&image, "added")?.mode, "-rw-r-----");
    assert_eq!(image.read_to_string("/linked")?, "f\n");
    // A symlink inside a copied directory stays a symlink.
    let link = must(&image, "plain-tree/link")?;
    assert_eq!(link.link.as_deref(), Some("a.txt"));
    // Files keep their modification time.
    let stamped = std::fs::symlink_metadata(image.path("/plain-tree/a.txt"))?;
    let mtime = std::os::unix::fs::MetadataExt::mtime(&stamped);
    assert_eq!(mtime, 1_577_934_245);
    // The history shows the flags BuildKit shows.
    let h = history(&config(&env, "image.tar")?);
    assert!(
        h.iter()
            .any(|e| e == "COPY --chown=4321:8765 f.txt /by-arg # buildkit"),
        "{h:#?}"
    );
    assert!(
        h.iter()
            .any(|e| e == "ADD --chmod=640 f.txt /added # buildkit"),
        "{h:#?}"
    );
    Ok(())
}

#[test]
fn parents_exclude_from_and_heredocs() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[
            ("src/app/main.go", "main\n"),
            ("src/app/util/util.go", "util\n"),
            ("src/app/README.md", "readme\n"),
            ("src/lib/lib.go", "lib\n"),
            (
                "Dockerfile",
                "FROM busybox AS build\n\
                 RUN mkdir /out && echo artifact > /out/artifact\n\
                 FROM busybox\n\
                 COPY --parents src/app/main.go src/lib/lib.go /keep/\n\
                 COPY --parents src/./app/util/*.go /pivot/\n\
                 COPY --exclude=*.md --exclude=util src/app /no-docs/\n\
                 COPY --from=build /out/artifact /from-name\n\
                 COPY --from=0 /out/artifact /from-index\n\
                 COPY --from=busybox /bin/busybox /from-image\n\
                 ARG WHO=world\n\
                 COPY <<greeting.txt <<literal.txt /docs/\n\
                 hello $WHO\n\
                 greeting.txt\n\
                 plain text\n\
                 literal.txt\n\
                 COPY --chmod=755 <<EOF /usr/local/bin/hello\n\
                 #!/bin/sh\n\
                 echo hello\n\
                 EOF\n",
            ),
        ],
    )?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(image.read_to_string("/keep/src/app/main.go")?, "main\n");
    assert_eq!(image.read_to_string("/keep/src/lib/lib.go")?, "lib\n");
    assert_eq!(image.read_to_string("/pivot/app/util/util.go")?, "util\n");
    assert!(!image.path("/pivot/src").exists());
    assert_eq!(image.read_to_string("/no-docs/main.go")?, "main\n");
    assert!(!image.path("/no-docs/README.md").exists());
    assert!(!image.path("/no-docs/util").exists());
    assert_eq!(image.read_to_string("/from-name")?, "artifact\n");
    assert_eq!(image.read_to_string("/from-index")?, "artifact\n");
    assert!(image.path("/from-image").is_file());
    assert_eq!(image.read_to_string("/docs/greeting.txt")?, "hello world\n");
    assert_eq!(image.read_to_string("/docs/literal.txt")?, "plain text\n");
    assert_eq!(must(&image, "usr/local/bin/hello")?.mode, "-rwxr-xr-x");
    assert_eq!(
        image.read_to_string("/usr/local/bin/hello")?,
        "#!/bin/sh\necho hello\n"
    );
    Ok(())
}

#[test]
fn add_archives_urls_checksums_and_git_are_handled_as_documented() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[("payload/p.txt", "packed\n"), ("notes.txt", "notes\n")],
    )?;
    umstage_testutil::run(
        std::process::Command::new("tar")
            .arg("-cf")
            .arg(ctx.join("plain.tar"))
            .arg("-C")
            .arg(&ctx)
            .arg("payload"),
    )?;
    // A compressed file that is not an archive is copied as it is.
    umstage_testutil::run(
        std::process::Command::new("gzip")
            .arg("-k")
            .arg(ctx.join("notes.txt")),
    )?;
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\n\
         ADD plain.tar /extracted\n\
         ADD --unpack=false plain.tar /kept/\n\
         ADD notes.txt.gz /gz/\n",
    )?;
    env.dir.user().chown_tree(env.dir.path())?;
    assert_ok(&env.build(&ctx, "image.tar", &[]));
    let image = layers(&env, "image.tar")?;
    assert_eq!(
        image.read_to_string("/extracted/payload/p.txt")?,
        "packed\n"
    );
    assert!(image.path("/kept/plain.tar").is_file());
    assert!(image.path("/gz/notes.txt.gz").is_file());

    // --checksum pins one download; anything else is refused before the build runs.
    for (dockerfile, says) in [
        (
            format!(
                "FROM busybox\nADD --checksum=sha256:{} notes.txt /x\n",
                "0".repeat(64)
            ),
            "non-HTTP",
        ),
        (
            "FROM busybox\nADD --checksum=md5:abc http://127.0.0.1:9/x /x\n".to_string(),
            "checksum",
        ),
        (
            "FROM busybox\nADD https://example.invalid/repo.git /src\n".to_string(),
            "git",
        ),
    ] {
        fs::write(ctx.join("Dockerfile"), &dockerfile)?;
        let out = env.build(&ctx, "bad.tar", &[]);
        assert_ne!(out.status.code(), Some(0), "{dockerfile}\n{}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains("Dockerfile:2") && err.contains(says),
            "{dockerfile}\n{err}"
        );
    }
    Ok(())
}
