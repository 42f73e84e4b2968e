//! Differential: Docker 20.10's BuildKit (a private `dockerd`, `DOCKER_BUILDKIT=1 docker build`)
//! and umstage (as the unprivileged test user) build the same Dockerfiles from the same
//! contexts, and the two images are compared field by field (the config fields a user sees) and
//! file by file over the merged tree of their layers (path, type, mode, owner, link target,
//! content, number of hard-linked names; never times or ids), then layer by layer (the same
//! entries in each).
//!
//! The cases follow BuildKit's documented behaviour: COPY and ADD of directories, archives and
//! links, `.dockerignore` exceptions, WORKDIR forms, cache mount options, wildcards, USER, ENV and
//! ARG expansion, multi-stage `COPY --from`. Where 20.10 differs and umstage deliberately follows
//! current BuildKit, the difference is listed once in [`KNOWN`] with its reason and only that
//! path's field is left out.
//!
//! The base image is the test busybox, loaded into the daemon as `busybox:latest` so that
//! `FROM busybox` resolves locally (the machine has no internet; a pull would fail the build).
//! Starting dockerd needs root: run as anyone else the test says so and skips (and fails when
//! `CI` is set, so CI never skips it).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::dockerd::Daemon;
use common::{Env, TestResult, assert_ok};
use serde_json::Value;
use sha2::{Digest, Sha256};
use umstage_testutil::archive::{self, Transport, Unpacked};

/// One Dockerfile and its context.
struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// `--build-arg` values given to both builders.
    build_args: &'static [&'static str],
}

/// Which part of a path's record a known difference leaves out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The permission bits (the type is still compared).
    Mode,
    /// The content (type, mode and owner are still compared).
    Content,
    /// The owner (type, mode, link and content are still compared).
    Owner,
    /// The path itself, where umstage writes it and 20.10 does not.
    OnlyUmstage,
    /// The path itself, where 20.10 writes a directory with nothing below it (in the merged
    /// tree, or in one layer) and umstage does not.
    EmptyDir,
}

/// A deliberate difference between Docker 20.10's BuildKit and umstage.
struct Known {
    case: &'static str,
    paths: &'static [&'static str],
    field: Field,
    why: &'static str,
}

/// The deliberate differences, each once with its reason (see docs/compatibility.md).
///
/// One more, in [`differences`]: 20.10 writes an empty layer for a RUN that changed nothing
/// (or one holding only a touched `/etc`); umstage writes none. History is not compared.
const KNOWN: &[Known] = &[
    Known {
        case: "copy",
        paths: &["modes", "chmod-dir"],
        field: Field::Mode,
        why: "20.10 makes the directories a `COPY --chmod` creates (the destination's parents, \
              the destination of a directory's contents) 0755; current BuildKit gives them the \
              --chmod mode (its testCopyChmod), which umstage follows",
    },
    Known {
        case: "add",
        paths: &["t3/bin", "t3/bin/tool", "t3/hard", "t3/link", "t3/x.txt"],
        field: Field::Owner,
        why: "`ADD --chown` of a local archive: 20.10 keeps the archive's owners; current \
              BuildKit gives the extracted files the --chown owner, and so does umstage",
    },
    Known {
        case: "dockerignore",
        // Deepest first, as the directories are only there for the file.
        paths: &[
            "ctx/volume/data/oneline.txt",
            "ctx/volume/data",
            "ctx/volume",
        ],
        field: Field::OnlyUmstage,
        why: "`volume/` then `!**/oneline.txt`: 20.10 does not look inside an excluded \
              directory for a wildcard exception and drops the file; current fsutil does, and \
              so does umstage",
    },
    Known {
        case: "cache-mounts",
        // Deepest first: a parent is left out only once its child is. `/tmp` and `/var` stay
        // in the merged tree (busybox has them); only the stub's layer lists them again.
        paths: &[
            "cache",
            "c2",
            "c3",
            "c4",
            "ctx",
            "b",
            "tmp/scratch",
            "tmp",
            "var/cache/app",
            "var/cache",
            "var",
        ],
        field: Field::EmptyDir,
        why: "20.10 leaves the mount targets (cache, bind, tmpfs) a RUN had to create, and \
              their parents, in the image as empty directories; current BuildKit removes these \
              mount stubs after the step, and so does umstage",
    },
    Known {
        case: "expansion",
        paths: &["tmp/id"],
        field: Field::Content,
        why: "`id` under `USER 1000:1000`: 20.10 sets no supplementary groups; since \
              CVE-2023-25173 BuildKit, containerd and runc keep the primary group among them \
              (`groups=1000(user)`), and so does umstage (docs/cli.md)",
    },
    Known {
        case: "predefined-args",
        paths: &["stage"],
        field: Field::Content,
        why: "the predefined TARGETSTAGE arg is newer than 20.10, where it is empty; current \
              BuildKit sets it to the target stage's name, and so does umstage",
    },
    Known {
        case: "predefined-args",
        paths: &["hostname"],
        field: Field::Content,
        why: "the BUILDKIT_SANDBOX_HOSTNAME build arg is newer than 20.10, which keeps \
              `buildkitsandbox`; current BuildKit gives RUN that hostname, and so does umstage",
    },
];

const CASES: &[Case] = &[
    Case {
        name: "copy",
        files: &[
            ("dir/a.txt", "a\n"),
            ("dir/sub/b.txt", "b\n"),
            ("dir/sub/deeper/c.txt", "c\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY dir /d1/\n\
                 COPY dir/ /d2\n\
                 COPY dir/sub /d3/sub/\n\
                 COPY link /l1\n\
                 COPY dir/rel /l2\n\
                 COPY dir /d4\n\
                 COPY --chown=1000:1000 dir /owned/\n\
                 COPY --chown=user dir/a.txt /owned-by-name\n\
                 COPY --chmod=0750 dir/a.txt /modes/a\n\
                 COPY dir/a.txt dir/sub/b.txt /two/\n\
                 COPY dir/a.txt /etc/renamed\n\
                 COPY --chmod=0700 dir /chmod-dir/\n\
                 COPY --chown=1000:1000 --chmod=640 link /both\n",
            ),
        ],
        build_args: &[],
    },
    Case {
        name: "add",
        files: &[
            ("payload/x.txt", "x\n"),
            ("payload/bin/tool", "#!/bin/sh\necho tool\n"),
            ("plain/inner.txt", "inner\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 ADD arch.tar /t1/\n\
                 ADD arch.tar.gz /t2\n\
                 ADD plain /p/\n\
                 ADD arch.tar.gz /p2/kept.tar.gz/\n\
                 ADD payload/x.txt /single\n\
                 ADD --chown=42:43 arch.tar /t3/\n\
                 ADD --chown=42:43 plain /p3/\n",
            ),
        ],
        build_args: &[],
    },
    Case {
        name: "dockerignore",
        files: &[
            ("a.log", "a\n"),
            ("important.log", "i\n"),
            ("build/out.o", "o\n"),
            ("temp1", "t\n"),
            ("temp22", "t\n"),
            ("docs/a.md", "a\n"),
            ("docs/sub/b.md", "b\n"),
            ("docs/keep.md", "k\n"),
            ("docs/c.txt", "c\n"),
            ("src/main.rs", "fn main() {}\n"),
            ("src/gen/skip.rs", "s\n"),
            ("src/gen/keep.rs", "k\n"),
            ("volume/data/oneline.txt", "one\n"),
            ("volume/data/other.txt", "other\n"),
            (
                ".dockerignore",
                "# comment\n\
                 *.log\n\
                 !important.log\n\
                 build/\n\
                 temp?\n\
                 docs/**/*.md\n\
                 !docs/keep.md\n\
                 src/gen\n\
                 !src/gen/keep.rs\n\
                 volume/\n\
                 !**/oneline.txt\n\
                 /Dockerfile\n",
            ),
            (
                "Dockerfile",
                "FROM busybox\nCOPY . /ctx/\nCOPY src* /src2/\n",
            ),
        ],
        build_args: &[],
    },
    Case {
        name: "workdir",
        files: &[(
            "Dockerfile",
            "FROM busybox\n\
             WORKDIR /a/b\n\
             WORKDIR c\n\
             WORKDIR ../d/\n\
             ENV DIRPATH=/path\n\
             WORKDIR $DIRPATH/$DIRNAME/x\n\
             COPY Dockerfile ./copied\n\
             COPY Dockerfile rel/\n\
             COPY Dockerfile $DIRPATH/env-dest\n\
             RUN pwd > /pwd1\n\
             RUN true\n\
             USER 1000\n\
             WORKDIR /home/made\n\
             RUN pwd > /tmp/pwd2 && touch mine\n\
             WORKDIR /tmp//twice/./\n",
        )],
        build_args: &[],
    },
    Case {
        name: "cache-mounts",
        files: &[
            ("file.txt", "from the context\n"),
            (
                "Dockerfile",
                "FROM busybox AS seed\n\
             RUN mkdir /seed && echo seeded > /seed/s\n\
             FROM busybox\n\
             RUN --mount=type=cache,target=/cache echo hi > /cache/x && cp /cache/x /out1\n\
             RUN --mount=type=cache,target=/cache cat /cache/x > /out2\n\
             RUN --mount=type=cache,target=/c2,id=two,sharing=locked,mode=0700,uid=1000,gid=1000 \
                 stat -c '%a %u %g' /c2 > /out3\n\
             RUN --mount=type=cache,target=/var/cache/app,sharing=private \
                 stat -c '%a %u %g' /var/cache/app > /out4\n\
             RUN --mount=type=cache,target=/c3,sharing=shared,readonly \
                 (touch /c3/f 2>/dev/null && echo rw || echo ro) > /out5\n\
             RUN --mount=type=cache,target=/c4,from=seed,source=/seed cat /c4/s > /out6\n\
             RUN --mount=type=bind,target=/ctx cat /ctx/file.txt > /out7\n\
             RUN --mount=type=bind,from=seed,source=/seed,target=/b,rw \
                 echo x > /b/new && ls /b > /out8\n\
             RUN --mount=type=tmpfs,target=/tmp/scratch echo t > /tmp/scratch/t && ls /tmp > /out9\n",
            ),
        ],
        build_args: &[],
    },
    Case {
        name: "wildcards",
        files: &[
            ("a1.txt", "1\n"),
            ("a2.txt", "2\n"),
            ("b.txt", "b\n"),
            ("sub/a3.txt", "3\n"),
            ("sub/deep/a4.txt", "4\n"),
            ("sub2/z.txt", "z\n"),
            (
                "Dockerfile",
                "FROM busybox\n\
                 COPY a?.txt /w1/\n\
                 COPY *.txt /w2/\n\
                 COPY sub/*/a4.txt /w3/\n\
                 COPY sub* /w4/\n\
                 COPY **/*.txt /w5/\n\
                 COPY [ab]*.txt /w6/\n",
            ),
        ],
        build_args: &[],
    },
    Case {
        name: "expansion",
        files: &[(
            "Dockerfile",
            "FROM busybox\n\
             ARG NAME=default\n\
             ARG UID=1000\n\
             ARG UNUSED\n\
             ENV A=1 B=\"two words\" C=${NAME:-x} D=${UNSET:-fallback} E=${NAME:+set}\n\
             ENV PATH=$PATH:/extra F='$A literal'\n\
             LABEL l1=$NAME \"l2\"=\"$B\" l3=${A}b\n\
             EXPOSE 8080 9090/udp ${UID}\n\
             VOLUME [\"/data\", \"/logs\"]\n\
             RUN echo \"$NAME $A $B $C $D $E $F $UNUSED\" > /out\n\
             USER ${UID}:${UID}\n\
             WORKDIR /home/$NAME\n\
             RUN id > /tmp/id\n\
             ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
             CMD [\"echo $A\"]\n\
             STOPSIGNAL SIGTERM\n\
             HEALTHCHECK --interval=5m --timeout=3s --retries=2 CMD true\n\
             ONBUILD RUN echo $NAME\n\
             SHELL [\"/bin/sh\", \"-ec\"]\n",
        )],
        build_args: &["NAME=given"],
    },
    Case {
        name: "multistage",
        files: &[(
            "Dockerfile",
            "ARG BASE=busybox\n\
             FROM ${BASE} AS build\n\
             RUN mkdir -p /out/sub && echo a > /out/a && ln -s a /out/link \
                 && chmod 600 /out/a && chown 1000:1000 /out/sub && ln /out/a /out/hard\n\
             FROM build AS second\n\
             RUN echo two > /out/sub/two\n\
             FROM busybox\n\
             ENV FROMENV=kept\n\
             COPY --from=build /out /copied\n\
             COPY --from=second /out/ /copied2/\n\
             COPY --from=build --chown=1000 /out/a /owned\n\
             COPY --from=0 /out/link /link\n\
             COPY --from=second /out/sub/two /out/a /both/\n\
             COPY --from=busybox /etc/passwd /from-image/\n",
        )],
        build_args: &[],
    },
    Case {
        // Issue 17: proxy args in both spellings, TARGETSTAGE, BUILDKIT_SANDBOX_HOSTNAME.
        // (Not `ONBUILD COPY --from` an earlier stage: 20.10 does not build that stage.)
        name: "predefined-args",
        files: &[(
            "Dockerfile",
            "FROM busybox AS final\n\
             ARG TARGETSTAGE\n\
             RUN echo \"$HTTP_PROXY $http_proxy\" > /proxy && echo \"$TARGETSTAGE\" > /stage\n\
             RUN hostname > /hostname\n",
        )],
        build_args: &[
            "http_proxy=http://proxy.invalid:3128",
            "BUILDKIT_SANDBOX_HOSTNAME=differential",
        ],
    },
    Case {
        // Issue 17: with no -f and only a lowercase `dockerfile`, that one is built.
        name: "lowercase",
        files: &[("dockerfile", "FROM busybox\nLABEL found=lowercase\n")],
        build_args: &[],
    },
];

/// A Dockerfile and context both builders must refuse, and what each says about it.
struct Refused {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    docker_says: &'static str,
    umstage_says: &'static str,
}

const REFUSED: &[Refused] = &[
    Refused {
        // Issue 17: a bare `!` in `.dockerignore`.
        name: "bare-exclamation",
        files: &[
            (".dockerignore", "!\n"),
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\n"),
        ],
        docker_says: "illegal exclusion pattern: \"!\"",
        umstage_says: "illegal exclusion pattern: \"!\"",
    },
    Refused {
        name: "missing-source",
        files: &[("Dockerfile", "FROM busybox\nCOPY nothing-here /x\n")],
        docker_says: "not found",
        umstage_says: "\"nothing-here\" not found",
    },
    Refused {
        // Issue 17: a misspelt mount type.
        name: "unknown-mount-type",
        files: &[(
            "Dockerfile",
            "FROM busybox\nRUN --mount=type=tmpfss,target=/t true\n",
        )],
        docker_says: "unsupported mount type \"tmpfss\"",
        umstage_says: "unsupported mount type \"tmpfss\" (did you mean tmpfs?)",
    },
    Refused {
        // Issue 17: a stage-scoped variable does not expand in `COPY --from`.
        name: "from-variable",
        files: &[(
            "Dockerfile",
            "FROM busybox AS build\nFROM busybox\nARG SRC=build\nCOPY --from=$SRC /etc/passwd /p\n",
        )],
        docker_says: "$SRC",
        umstage_says: "variable expansion is not supported for --from=$SRC",
    },
    Refused {
        name: "failing-run",
        files: &[("Dockerfile", "FROM busybox\nRUN exit 3\n")],
        docker_says: "exit code: 3",
        umstage_says: "exit code: 3",
    },
];

/// What the comparison sees of one path: type and mode, owner, link target, content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    mode: String,
    owner: (u32, u32),
    link: Option<String>,
    content: Option<String>,
    /// How many names a regular file has: whether hard links stayed hard links.
    links: u64,
}

type Tree = BTreeMap<String, Record>;

/// A layer entry's record, without content. Which of two hard-linked names a tar lists as the
/// link depends on write order; both are the same file, compared by mode, owner, content and
/// number of names.
fn record(entry: &archive::TarEntry) -> Record {
    let hard = entry.kind() == 'h';
    Record {
        mode: if hard {
            format!("-{}", &entry.mode[1..])
        } else {
            entry.mode.clone()
        },
        owner: (entry.uid, entry.gid),
        link: if hard { None } else { entry.link.clone() },
        content: None,
        links: 0,
    }
}

/// The merged tree of an image's layers: whiteouts remove what lower layers put there.
fn merged_tree(image: &Unpacked) -> Result<Tree, Box<dyn std::error::Error>> {
    let mut tree = Tree::new();
    for layer in &image.layers {
        for entry in layer.entries.iter().filter(|e| e.is_whiteout()) {
            let (dir, name) = match entry.path.rsplit_once('/') {
                Some((dir, name)) => (format!("{dir}/"), name),
                None => (String::new(), entry.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                // Everything below the directory, not the directory itself.
                tree.retain(|path, _| !path.starts_with(&dir));
            } else {
                let gone = format!("{dir}{}", &name[".wh.".len()..]);
                let below = format!("{gone}/");
                tree.retain(|path, _| *path != gone && !path.starts_with(&below));
            }
        }
        for entry in layer.entries.iter().filter(|e| !e.is_whiteout()) {
            tree.insert(entry.path.clone(), record(entry));
        }
    }
    for (path, record) in &mut tree {
        if record.mode.starts_with('-') {
            record.links = std::fs::symlink_metadata(image.path(path))?.nlink();
            let bytes = std::fs::read(image.path(path))?;
            // Short text as it is, so that a difference reads plainly; anything else by digest.
            record.content = Some(match String::from_utf8(bytes) {
                Ok(text) if text.len() <= 200 => text,
                Ok(text) => hex::encode(Sha256::digest(text.as_bytes())),
                Err(e) => hex::encode(Sha256::digest(e.as_bytes())),
            });
        }
    }
    Ok(tree)
}

/// The entries of one layer, whiteouts included, by path.
fn layer_tree(layer: &archive::Layer) -> Tree {
    layer
        .entries
        .iter()
        .map(|e| (e.path.clone(), record(e)))
        .collect()
}

/// Leaves the known differences of `case` out of Docker's and umstage's view of a tree.
fn leave_out_known(case: &str, docker: &mut Tree, umstage: &mut Tree) {
    for known in KNOWN.iter().filter(|k| k.case == case) {
        for path in known.paths {
            match known.field {
                Field::Mode | Field::Content | Field::Owner => {
                    for tree in [&mut *docker, &mut *umstage] {
                        if let Some(record) = tree.get_mut(*path) {
                            match known.field {
                                Field::Mode => record.mode.truncate(1),
                                Field::Content => record.content = None,
                                _ => record.owner = (0, 0),
                            }
                        }
                    }
                }
                Field::OnlyUmstage => {
                    if !docker.contains_key(*path) {
                        umstage.remove(*path);
                    }
                }
                Field::EmptyDir => {
                    let below = format!("{path}/");
                    let empty = !docker.keys().any(|p| p.starts_with(&below));
                    let dir = docker.get(*path).is_some_and(|r| r.mode.starts_with('d'));
                    if empty && dir && !umstage.contains_key(*path) {
                        docker.remove(*path);
                    }
                }
            }
        }
    }
}

/// Pushes a line for each path whose records differ.
fn compare_trees(label: &str, docker: &Tree, umstage: &Tree, diffs: &mut Vec<String>) {
    for path in docker
        .keys()
        .chain(umstage.keys().filter(|p| !docker.contains_key(*p)))
    {
        let (d, u) = (docker.get(path), umstage.get(path));
        if d != u {
            diffs.push(format!("{label}/{path}: docker {d:?}, umstage {u:?}"));
        }
    }
}

/// The config fields a user sees, with an absent field and `null` alike.
fn config_fields(config: &Value) -> BTreeMap<&'static str, Value> {
    [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "Labels",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
        "Healthcheck",
        "OnBuild",
        "Shell",
    ]
    .into_iter()
    .map(|field| (field, config["config"][field].clone()))
    .filter(|(_, value)| !value.is_null())
    .collect()
}

/// Differences between Docker's image and umstage's, minus the known ones for `case`: the
/// config, the merged tree, and layer by layer.
fn differences(
    case: &str,
    docker: &Unpacked,
    umstage: &Unpacked,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    for known in KNOWN.iter().filter(|k| k.case == case) {
        eprintln!(
            "{case}: {:?}: left out as a known difference: {}",
            known.paths, known.why
        );
    }
    let mut diffs = Vec::new();
    let (d_config, u_config) = (
        config_fields(&docker.config),
        config_fields(&umstage.config),
    );
    for field in d_config.keys().chain(u_config.keys()) {
        if d_config.get(field) != u_config.get(field)
            && !diffs
                .iter()
                .any(|d: &String| d.starts_with(&format!("config {field}:")))
        {
            diffs.push(format!(
                "config {field}: docker {:?}, umstage {:?}",
                d_config.get(field),
                u_config.get(field)
            ));
        }
    }
    // The same busybox under both: Docker did not pull another one.
    let base = |image: &Unpacked| image.config["rootfs"]["diff_ids"][0].clone();
    if base(docker) != base(umstage) {
        diffs.push(format!(
            "base layer: docker {}, umstage {}",
            base(docker),
            base(umstage)
        ));
    }
    let (mut d_tree, mut u_tree) = (merged_tree(docker)?, merged_tree(umstage)?);
    leave_out_known(case, &mut d_tree, &mut u_tree);
    compare_trees("", &d_tree, &u_tree, &mut diffs);

    // The known difference in layers: 20.10 writes one for a RUN that changed nothing, empty
    // or holding only the `/etc` it touched (mounting `/etc/hosts` and `/etc/resolv.conf`);
    // umstage writes none, as nothing changed.
    let d_layers: Vec<Tree> = docker
        .layers
        .iter()
        .map(layer_tree)
        .filter(|l| !(l.is_empty() || l.len() == 1 && l.contains_key("etc")))
        .collect();
    let empty = docker.layers.len() - d_layers.len();
    if empty > 0 {
        eprintln!("{case}: {empty} empty layer(s) of 20.10 left out");
    }
    let u_layers: Vec<Tree> = umstage.layers.iter().map(layer_tree).collect();
    if d_layers.len() != u_layers.len() {
        let paths = |layers: &[Tree]| -> Vec<Vec<String>> {
            // The base layer is the same busybox on both sides (checked above).
            layers
                .iter()
                .skip(1)
                .map(|l| l.keys().cloned().collect())
                .collect()
        };
        diffs.push(format!(
            "layers (paths in each): docker {:?}, umstage {:?}",
            paths(&d_layers),
            paths(&u_layers)
        ));
        return Ok(diffs);
    }
    for (i, (mut d, mut u)) in d_layers.into_iter().zip(u_layers).enumerate() {
        leave_out_known(case, &mut d, &mut u);
        compare_trees(&format!("layer {i}: "), &d, &u, &mut diffs);
    }
    Ok(diffs)
}

/// Writes the archives the `add` case adds: one plain, one gzipped, with owners, modes,
/// a symlink and a hard link, made by GNU tar.
fn make_archives(ctx: &Path) -> TestResult {
    let payload = ctx.join("payload");
    std::os::unix::fs::symlink("x.txt", payload.join("link"))?;
    std::fs::hard_link(payload.join("x.txt"), payload.join("hard"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        payload.join("bin/tool"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    std::fs::set_permissions(
        payload.join("x.txt"),
        std::fs::Permissions::from_mode(0o640),
    )?;
    for (name, compress) in [("arch.tar", None), ("arch.tar.gz", Some("--gzip"))] {
        let mut tar = Command::new("tar");
        tar.args([
            "--create",
            "--numeric-owner",
            "--owner=1234",
            "--group=5678",
        ]);
        tar.args(compress);
        tar.arg("--file")
            .arg(ctx.join(name))
            .arg("-C")
            .arg(&payload)
            .arg(".");
        umstage_testutil::run(&mut tar)?;
    }
    std::fs::copy(ctx.join("arch.tar.gz"), ctx.join("plain/nested.tar.gz"))?;
    std::os::unix::fs::symlink("nested.tar.gz", ctx.join("plain/link.tar.gz"))?;
    std::fs::hard_link(ctx.join("plain/inner.txt"), ctx.join("plain/hard.txt"))?;
    Ok(())
}

/// Adds the symlinks the `copy` case copies.
fn make_links(ctx: &Path) -> TestResult {
    std::os::unix::fs::symlink("dir/a.txt", ctx.join("link"))?;
    std::os::unix::fs::symlink("sub/b.txt", ctx.join("dir/rel"))?;
    std::os::unix::fs::symlink("../../elsewhere", ctx.join("dir/sub/dangling"))?;
    std::os::unix::fs::symlink("a.txt", ctx.join("dir/sub/up"))?;
    Ok(())
}

/// `DOCKER_BUILDKIT=1 docker build` of `ctx` as `tag`, with no network (none is needed).
fn docker_build(daemon: &Daemon, tag: &str, ctx: &Path, build_args: &[&str]) -> Command {
    let mut build = daemon.docker();
    build.env("DOCKER_BUILDKIT", "1").args([
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "-t",
        tag,
    ]);
    for arg in build_args {
        build.arg("--build-arg").arg(arg);
    }
    build.arg(ctx);
    build
}

#[test]
fn docker_buildkit_and_umstage_build_the_same_images() -> TestResult {
    if !umstage_testutil::is_root() {
        let why = "differential: SKIPPED: starting a private dockerd needs root";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return Ok(());
    }
    let env = Env::new()?;
    let daemon = Daemon::start()?;
    let busybox = env.path("busybox-docker.tar");
    umstage_testutil::run(
        Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci:{}:latest", env.busybox.display()))
            .arg(format!(
                "docker-archive:{}:busybox:latest",
                busybox.display()
            )),
    )?;
    daemon.load(&busybox)?;

    let mut failures = Vec::new();
    for case in CASES {
        let ctx = env.context(case.name, case.files)?;
        match case.name {
            "add" => make_archives(&ctx)?,
            "copy" => make_links(&ctx)?,
            _ => {}
        }
        env.dir.user().chown_tree(&ctx)?;

        let tag = format!("umstage-differential/{}:1", case.name);
        umstage_testutil::run(&mut docker_build(&daemon, &tag, &ctx, case.build_args))?;
        let docker_tar = env.path(&format!("{}-docker.tar", case.name));
        umstage_testutil::run(
            daemon
                .docker()
                .args(["save", "-o"])
                .arg(&docker_tar)
                .arg(&tag),
        )?;

        let out_name = format!("{}-umstage.tar", case.name);
        let mut extra = Vec::new();
        for arg in case.build_args {
            extra.extend(["--build-arg", arg]);
        }
        let out = env.build(&ctx, &out_name, &extra);
        assert_ok(&out);

        let docker = archive::apply_layers(&docker_tar, Transport::DockerArchive)?;
        let umstage = archive::apply_layers(&env.path(&out_name), Transport::OciArchive)?;
        for diff in differences(case.name, &docker, &umstage)? {
            failures.push(format!("{}: {diff}", case.name));
        }
    }
    for case in REFUSED {
        let ctx = env.context(case.name, case.files)?;
        let tag = format!("umstage-differential/{}:1", case.name);
        let docker = docker_build(&daemon, &tag, &ctx, &[]).output()?;
        let docker_err = String::from_utf8_lossy(&docker.stderr);
        let umstage = env.build(&ctx, &format!("{}-umstage.tar", case.name), &[]);
        if docker.status.success() || !docker_err.contains(case.docker_says) {
            failures.push(format!(
                "{}: docker should refuse, saying {:?}: {docker_err}",
                case.name, case.docker_says
            ));
        }
        if umstage.status.success() || !common::stderr(&umstage).contains(case.umstage_says) {
            failures.push(format!(
                "{}: umstage should refuse, saying {:?}: {}",
                case.name,
                case.umstage_says,
                common::text(&umstage)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "umstage and Docker 20.10's BuildKit disagree:\n{}",
        failures.join("\n")
    );
    Ok(())
}
