//! End to end, the `ptrace` tier against the steps users run and against hostile ones, as the
//! test user runs it (`--sandbox ptrace`): a path must not leave the step's root, and no file
//! outside the snapshot (a canary in the test user's directory) is read, made or changed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Env, TestResult, assert_ok, layers, lines_with, stderr};
use umstage_testutil::images;

/// A canary directory outside the step's root, holding one file; the step must not see it.
struct Canary {
    dir: std::path::PathBuf,
}

impl Canary {
    const SECRET: &str = "canary-secret";

    fn new(env: &Env) -> Result<Self, Box<dyn std::error::Error>> {
        let dir = env.path("canary");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("secret"), Self::SECRET)?;
        env.dir.user().chown_tree(&dir)?;
        Ok(Canary { dir })
    }

    /// The canary directory's path, as the step would name it on the host.
    fn path(&self) -> String {
        self.dir.display().to_string()
    }

    /// Fails unless the directory still holds only the untouched secret.
    fn check(&self, log: &str) -> TestResult {
        let names: Vec<_> = fs::read_dir(&self.dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert_eq!(
            names,
            ["secret"],
            "a file was made outside the root:\n{log}"
        );
        assert_eq!(fs::read_to_string(self.dir.join("secret"))?, Self::SECRET);
        assert!(
            !log.contains(Self::SECRET),
            "the step read the canary:\n{log}"
        );
        Ok(())
    }
}

#[test]
fn process_links_in_proc_and_dev_lead_into_the_root_not_onto_the_host() -> TestResult {
    let env = Env::new()?;
    let canary = Canary::new(&env)?;
    let c = canary.path();
    let dockerfile = format!(
        "FROM busybox\n\
         RUN ln -s / /esc && mkdir -p {c} && echo inside > {c}/secret && cd / \\\n\
          && echo \"root $(cat /proc/self/root{c}/secret 2>&1)\" \\\n\
          && echo \"cwd $(cat /proc/self/cwd/esc{c}/secret 2>&1)\" \\\n\
          && echo \"parent $(cat /proc/$PPID/root{c}/secret 2>&1)\" \\\n\
          && echo \"task $(cat /proc/thread-self/root{c}/secret 2>&1)\" \\\n\
          && echo \"rel $(cd /proc && cat self/root{c}/secret 2>&1)\" \\\n\
          && echo \"fd $(exec 3< / && cat /dev/fd/3/esc{c}/secret 2>&1)\" \\\n\
          && echo \"cd $(cd /proc/self/root{c} && cat secret 2>&1)\" \\\n\
          && echo \"ls $(ls /proc/self/root/ | grep -c '^esc$')\" \\\n\
          && echo made > /proc/self/root{c}/made \\\n\
          && echo \"stdin $(echo piped | cat /dev/stdin)\"\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)])?;
    let out = env.build(&ctx, "img.tar", &["--sandbox", "ptrace"]);
    let log = stderr(&out);
    assert_ok(&out);
    for case in ["root", "cwd", "parent", "task", "rel", "fd", "cd"] {
        assert_eq!(
            lines_with(&log, &format!("{case} ")),
            [format!("{case} inside")],
            "{log}"
        );
    }
    assert_eq!(lines_with(&log, "ls "), ["ls 1"], "{log}");
    assert_eq!(lines_with(&log, "stdin "), ["stdin piped"], "{log}");
    canary.check(&log)
}

/// The Debian base (with gcc, make and perl) as a named context `debian` in `env`.
fn with_debian(env: &Env) -> Result<String, Box<dyn std::error::Error>> {
    let dir = env.path("debian-layout");
    images::debian_build()?.copy_to(&dir)?;
    env.dir.user().chown_tree(&dir)?;
    Ok(format!("debian=oci-layout://{}", dir.display()))
}

#[test]
fn unix_sockets_are_bound_and_connected_in_the_root() -> TestResult {
    let env = Env::new()?;
    let canary = Canary::new(&env)?;
    let c = canary.path();
    let debian = with_debian(&env)?;
    // A host path longer than `sun_path` fails (ENAMETOOLONG) rather than binding elsewhere;
    // the test's state root is deep, so the absolute one may.
    let dockerfile = format!(
        "FROM debian\n\
         RUN mkdir -p {c} /srv && cd /srv && perl -MSocket -e 'for my $p (@ARGV) {{ \\\n\
           socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die; socket(my $c, PF_UNIX, SOCK_STREAM, 0) or die; \\\n\
           my $ok = bind($s, pack_sockaddr_un($p)) && listen($s, 1) && connect($c, pack_sockaddr_un($p)); \\\n\
           print \"socket $p \", ($ok && -S $p ? \"ok\" : \"$!\"), \"\\n\" }}' {c}/sock rel.sock\n"
    );
    let ctx = env.context("ctx", &[("Dockerfile", &dockerfile)])?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    let said = lines_with(&log, "socket ");
    assert!(
        [
            format!("socket {c}/sock ok"),
            format!("socket {c}/sock File name too long")
        ]
        .contains(&said[0].to_string()),
        "{log}"
    );
    assert_eq!(said[1..], ["socket rel.sock ok"], "{log}");
    canary.check(&log)
}

/// A datagram server at each path given, and three clients sending to it: `sendto`, `sendmsg`
/// with the address in its header, and `connect` then `send`.
const DATAGRAMS: &str = r#"#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
int main(int argc, char **argv) {
  for (int p = 1; p < argc; p++) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[p], sizeof a.sun_path - 1);
    int s = socket(AF_UNIX, SOCK_DGRAM, 0), c = socket(AF_UNIX, SOCK_DGRAM, 0);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (bind(s, (void *)&a, sizeof a)) perror("bind");
    if (sendto(c, "to", 2, 0, (void *)&a, sizeof a) != 2) perror("sendto");
    struct iovec v = {"msg", 3};
    struct msghdr m = {.msg_name = &a, .msg_namelen = sizeof a, .msg_iov = &v, .msg_iovlen = 1};
    if (sendmsg(c, &m, 0) != 3) perror("sendmsg");
    if (connect(d, (void *)&a, sizeof a) || send(d, "conn", 4, 0) != 4) perror("connect");
    char buf[8];
    int n;
    while ((n = recv(s, buf, sizeof buf, MSG_DONTWAIT)) > 0) printf("dgram %s %.*s\n", argv[p], n, buf);
  }
  return 0;
}
"#;

#[test]
fn unix_datagrams_are_sent_to_addresses_in_the_root() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    let dockerfile = "FROM debian\nCOPY dgram.c /src/\n\
         RUN mkdir -p /srv && cd /srv && gcc -o /usr/local/bin/dgram /src/dgram.c \\\n\
          && dgram /srv/d.sock r.sock\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("dgram.c", DATAGRAMS)])?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert_eq!(
        lines_with(&log, "dgram "),
        [
            "dgram /srv/d.sock to",
            "dgram /srv/d.sock msg",
            "dgram /srv/d.sock conn",
            "dgram r.sock to",
            "dgram r.sock msg",
            "dgram r.sock conn"
        ],
        "{log}"
    );
    Ok(())
}

/// Every file of a root filesystem: type and mode, owner, content or symlink target.
fn tree(root: &Path) -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir)? {
            let path = e?.path();
            let meta = fs::symlink_metadata(&path)?;
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path)?.display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                String::new()
            } else if meta.is_file() {
                format!(
                    "{:x}",
                    fs::read(&path)?.iter().fold(0u64, |h, b| {
                        h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(*b))
                    })
                )
            } else {
                format!("rdev {}", meta.rdev())
            };
            let rel = path.strip_prefix(root)?.display().to_string();
            out.insert(
                rel,
                format!("{:o} {}:{} {what}", meta.mode(), meta.uid(), meta.gid()),
            );
        }
    }
    Ok(out)
}

/// What users run, on Debian: the ptrace tier's image is the userns tier's, file by file.
const REAL_STEPS: &str = "FROM debian\n\
RUN useradd -m -u 1500 alice && groupadd -g 1600 team \\\n\
 && adduser --quiet --uid 1501 --disabled-password --gecos '' bob \\\n\
 && mkdir -p /data/sub && touch /data/a /data/sub/b && chown -R 1500:1600 /data \\\n\
 && mkdir /t && cd /t && mkdir -p src/d && echo x > src/d/f && chown -R 77:88 src && chmod 2750 src/d \\\n\
 && tar --numeric-owner -cf a.tar -C src . && mkdir out && tar --same-owner -xpf a.tar -C out && rm a.tar \\\n\
 && ln -s /usr/share /sharelink && cd /sharelink \\\n\
 && echo \"pwd $(pwd) $(pwd -P) $(cat /sharelink/../../etc/debian_version | tr -d 0-9)\" \\\n\
 && echo \"find $(find / -xdev -name debian_version 2>/dev/null | tr '\\n' ' ')\" \\\n\
 && printf '#!/bin/sh\\necho \"script $0 $*\"\\n' > /s1 && printf '#!/usr/bin/env sh\\necho \"script $0 $*\"\\n' > /s2 \\\n\
 && chmod +x /s1 /s2 && /s1 a && /s2 b \\\n\
 && sh -c 'sh -c \"exec echo nested \\$0\" deep' && (sleep 0.1 & wait; echo bg done) \\\n\
 && seq 1 1000 | sort -n | tail -1 | sed 's/^/pipe /' \\\n\
 && mkdir /m && cd /m && printf 'p: a.o b.o\\n\\tgcc -o p a.o b.o\\n%%.o: %%.c\\n\\tgcc -c $<\\n' > Makefile \\\n\
 && echo 'int f(void){return 41;}' > b.c \\\n\
 && printf '#include <stdio.h>\\nint f(void);\\nint main(void){printf(\"make %%d\\\\n\", f()+1);return 0;}\\n' > a.c \\\n\
 && make -j4 -s && ./p && rm -f *.o p \\\n\
 && apt-get update -qq && apt-get install -y -qq --no-install-recommends hello > /dev/null && hello \\\n\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/log/alternatives.log \\\n\
 && rm -f /var/cache/debconf/*-old /var/lib/dpkg/*-old\n\
USER alice\n\
RUN echo \"id $(id -u):$(id -g)\" && touch /home/alice/mine\n";

/// What an image holds, for comparing two tiers' images: its files (see [`tree`]) and each
/// layer entry's mode, owners, size and link as the layers hold them (whatever the reader's
/// extraction keeps), leaving out overlay whiteout markers (no file to compare) and `skip`.
fn image_files(
    env: &Env,
    archive: &str,
    skip: &[&str],
) -> Result<BTreeMap<String, String>, Box<dyn std::error::Error>> {
    let image = layers(env, archive)?;
    let mut files = tree(&image.rootfs)?;
    for path in skip {
        files.remove(*path);
    }
    for e in image.layers.iter().flat_map(|l| l.entries.iter()) {
        if !e.path.contains(".wh.") && !skip.contains(&e.path.as_str()) {
            let link = e.link.as_deref().unwrap_or_default();
            let entry = format!("{} {}:{} {} {link}", e.mode, e.uid, e.gid, e.size);
            files.insert(format!("layer {}", e.path), entry);
        }
    }
    Ok(files)
}

/// Asserts that the `userns` and `ptrace` tiers' images hold the same, naming what differs.
fn assert_same_files(userns: &BTreeMap<String, String>, ptrace: &BTreeMap<String, String>) {
    let differ: Vec<_> = userns
        .keys()
        .chain(ptrace.keys())
        .filter(|k| userns.get(*k) != ptrace.get(*k))
        .map(|k| format!("{k}: {:?} | {:?}", userns.get(k), ptrace.get(k)))
        .collect();
    assert!(differ.is_empty(), "{differ:#?}");
}

#[test]
fn real_steps_on_debian_give_the_userns_tiers_image() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    let ctx = env.context("ctx", &[("Dockerfile", REAL_STEPS)])?;
    let mut logs = Vec::new();
    let mut trees = Vec::new();
    for tier in ["userns", "ptrace"] {
        let out_name = format!("{tier}.tar");
        let out = env.build_in(
            &env.path(&format!("state-{tier}")),
            &ctx,
            &out_name,
            &["--sandbox", tier, "--build-context", &debian],
            &[],
        );
        let log = stderr(&out);
        assert_ok(&out);
        // The snapshots are whole Debian trees in the ptrace tier: not kept past the build.
        fs::remove_dir_all(env.path(&format!("state-{tier}")))?;
        trees.push(image_files(&env, &out_name, &[])?);
        let said: Vec<String> = [
            "pwd ", "find ", "script ", "nested ", "bg ", "pipe ", "make ", "Hello", "id ",
        ]
        .iter()
        .flat_map(|p| lines_with(&log, p))
        .map(str::to_string)
        .collect();
        logs.push(said);
    }
    assert_eq!(
        logs[1],
        [
            "pwd /sharelink /usr/share .",
            "find /etc/debian_version ",
            "script /s1 a",
            "script /s2 b",
            "nested deep",
            "bg done",
            "pipe 1000",
            "make 42",
            "Hello, world!",
            "id 1500:1500",
        ]
    );
    assert_eq!(logs[0], logs[1]);
    assert_same_files(&trees[0], &trees[1]);
    Ok(())
}

/// `fexecve`: `execveat(fd, "", AT_EMPTY_PATH)` of a dynamic program.
const FEXECVE_C: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
extern char **environ;
int main(void) {
  char *av[] = {"awk", "/ld-linux/ { print \"loader \" $5; exit }", "/proc/self/maps", 0};
  int fd = open("/usr/bin/mawk", O_RDONLY);
  syscall(SYS_execveat, fd, "", av, environ, AT_EMPTY_PATH);
  perror("execveat");
  return 1;
}
"#;

#[test]
fn fexecve_of_a_dynamic_program_loads_the_images_loader() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    let dockerfile = "FROM debian\n\
        COPY fexecve.c /src/\n\
        RUN gcc -o /usr/local/bin/fexecve /src/fexecve.c && fexecve \\\n\
         && echo \"guest $(stat -L -c %i /lib64/ld-linux-x86-64.so.2)\"\n";
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", dockerfile), ("fexecve.c", FEXECVE_C)],
    )?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    let loader = lines_with(&log, "loader ");
    let image = lines_with(&log, "guest ");
    assert_eq!((loader.len(), image.len()), (1, 1), "{log}");
    // The loader the program runs with is the image's (the same inode), not the host's.
    assert_eq!(
        loader[0]["loader ".len()..],
        image[0]["guest ".len()..],
        "{log}"
    );
    Ok(())
}

/// A hostile step's first race: another thread swaps the directory `/race/d` for a symlink
/// to a host directory (`renameat2` with `RENAME_EXCHANGE`) between the supervisor's
/// resolution of `/race/d/...` and the kernel's walk of the host path it gave (or the
/// supervisor's own, for a device's placeholder). It reads `/race/d/secret`, creates
/// `/race/d/made` and makes the device `/race/d/node` until the first two escaped or the
/// rounds are done.
const SWAP_C: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static atomic_int done;
static void *swapper(void *arg) {
  (void)arg;
  while (!atomic_load(&done))
    syscall(SYS_renameat2, AT_FDCWD, "/race/d", AT_FDCWD, "/race/l", 2);
  return 0;
}
int main(int argc, char **argv) {
  if (argc != 3) return 2;
  long rounds = atol(argv[2]), read_out = 0, made = 0, i;
  mkdir("/race", 0755);
  mkdir("/race/d", 0755);
  int fd = open("/race/d/secret", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || write(fd, "inside\n", 7) != 7) return 3;
  close(fd);
  if (symlink(argv[1], "/race/l")) return 4;
  pthread_t t;
  pthread_create(&t, 0, swapper, 0);
  char buf[64];
  /* The guest has one `made`: a second exclusive creation made one on the host. */
  for (i = 0; i < rounds && !(read_out && made > 1); i++) {
    fd = open("/race/d/secret", O_RDONLY);
    if (fd >= 0) {
      ssize_t n = read(fd, buf, sizeof buf - 1);
      close(fd);
      if (n > 0 && strncmp(buf, "inside", 6)) {
        buf[n] = 0;
        read_out++;
        printf("swap read %s\n", buf);
      }
    }
    fd = open("/race/d/made", O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      close(fd);
      made++;
    }
    /* The supervisor makes a device's placeholder itself, outside Landlock. */
    if (mknod("/race/d/node", S_IFCHR | 0644, makedev(1, 3)) == 0)
      unlink("/race/d/node");
  }
  atomic_store(&done, 1);
  pthread_join(t, 0);
  printf("swap rounds %ld read %ld made %ld\n", i, read_out, made > 1 ? made - 1 : 0);
  return 0;
}
"#;

/// A hostile step's second race: one thread reads `GUEST` in a loop on a stack of its own,
/// and another overwrites the host path the supervisor wrote into that thread's scratch
/// mapping with `TARGET` between the supervisor's write and the kernel's read.
const REWRITE_C: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define STACK (1 << 20)
static char *volatile sp;
static atomic_int done;
static const char *guest, *target;
static long rounds, got, tries;
static void *opener(void *arg) {
  (void)arg;
  char here;
  sp = &here;
  char buf[64];
  for (tries = 0; tries < rounds && !got; tries++) {
    int fd = open(guest, O_RDONLY);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0 && strncmp(buf, "inside", 6)) {
      buf[n] = 0;
      got++;
      printf("rewrite read %s\n", buf);
    }
  }
  atomic_store(&done, 1);
  return 0;
}
/* The translated path: a string that ends in the guest path (the snapshot's directory before
   it) in an anonymous mapping, where the supervisor writes it. */
static char *translated(void) {
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512], *found = 0;
  size_t glen = strlen(guest);
  while (maps && !found && fgets(line, sizeof line, maps)) {
    unsigned long lo, hi;
    char perms[5];
    if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3 || strncmp(perms, "rw", 2)
        || strchr(line, '/') || strchr(line, '['))
      continue;
    char *p = (char *)lo, *end = (char *)hi;
    while (!found && (p = memmem(p, end - p, guest, glen))) {
      if (p > (char *)lo && p[-1] && p + glen < end && !p[glen]) {
        while (p > (char *)lo && p[-1]) p--;
        found = p;
      }
      p++;
    }
  }
  if (maps) fclose(maps);
  return found;
}
static void *rewriter(void *arg) {
  (void)arg;
  while (!sp) ;
  char *at = 0;
  size_t len = strlen(target) + 1;
  while (!atomic_load(&done)) {
    if (!at) {
      at = translated();
      continue;
    }
    memcpy(at, target, len);
  }
  return 0;
}
int main(int argc, char **argv) {
  if (argc != 4) return 2;
  guest = argv[1];
  target = argv[2];
  rounds = atol(argv[3]);
  FILE *f = fopen(guest, "w");
  if (!f) return 3;
  fputs("inside\n", f);
  fclose(f);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstack(&attr, calloc(1, STACK), STACK);
  pthread_t a, b;
  pthread_create(&b, 0, rewriter, 0);
  pthread_create(&a, &attr, opener, 0);
  pthread_join(a, 0);
  pthread_join(b, 0);
  printf("rewrite %s rounds %ld escaped %ld\n", target, tries, got);
  return 0;
}
"#;

/// The races a hostile step runs against the supervisor, as the ptrace tier's documentation
/// described them before Landlock: a symlink swapped in after the supervisor resolved a path,
/// and the translated path rewritten from another thread, towards the canary directly and
/// through `/proc/PID/root` of init, of the supervisor and of umstage itself. Landlock refuses
/// every file outside the step's own, whatever path the kernel walks. Without it (measured on
/// 2026-12-07) the swap read the canary and made a file beside it within 5 rounds, and the
/// rewrite read it within 1 to 937, directly and through umstage's `root` (init's and the
/// supervisor's are refused by their owner and dumpability anyway).
#[test]
fn racing_the_supervisor_reaches_no_host_file() -> TestResult {
    let env = Env::new()?;
    let canary = Canary::new(&env)?;
    let c = canary.path();
    let debian = with_debian(&env)?;
    let dockerfile = format!(
        "FROM debian\n\
         COPY swap.c rewrite.c /src/\n\
         RUN gcc -O2 -pthread -o /usr/local/bin/swap /src/swap.c \\\n\
          && gcc -O2 -pthread -o /usr/local/bin/rewrite /src/rewrite.c\n\
         RUN swap {c} 20000 && mkdir -p /race \\\n\
          && sup=$PPID && umstage=$(cut -d' ' -f4 /proc/$sup/stat) \\\n\
          && rewrite /race/victim {c}/secret 20000 \\\n\
          && rewrite /race/victim /proc/1/root{c}/secret 20000 \\\n\
          && rewrite /race/victim /proc/$sup/root{c}/secret 20000 \\\n\
          && rewrite /race/victim /proc/$umstage/root{c}/secret 20000\n"
    );
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", &dockerfile),
            ("swap.c", SWAP_C),
            ("rewrite.c", REWRITE_C),
        ],
    )?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    // Each race ran all its rounds: none ended early by escaping.
    assert_eq!(
        lines_with(&log, "swap rounds "),
        ["swap rounds 20000 read 0 made 0"],
        "{log}"
    );
    let rewrites = lines_with(&log, "rewrite ");
    assert_eq!(rewrites.len(), 4, "{log}");
    for line in rewrites {
        assert!(line.ends_with(" rounds 20000 escaped 0"), "{log}");
    }
    canary.check(&log)
}

/// Makes `cmd`'s process answer `landlock_create_ruleset` with `EPERM`, as a runtime's
/// seccomp profile that does not list it does (the filter outlives `setpriv`'s exec).
fn refuse_landlock(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes system calls on memory
    // of its own stack.
    unsafe {
        cmd.pre_exec(|| {
            let jump = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
            let ret = (libc::BPF_RET | libc::BPF_K) as u16;
            let mut filter = [
                libc::sock_filter {
                    code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: jump,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_landlock_create_ruleset as u32,
                },
                libc::sock_filter {
                    code: ret,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                },
                libc::sock_filter {
                    code: ret,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Where a seccomp profile refuses Landlock, a ptrace step runs as before, unconfined (it can
/// signal its parent), and the build's tier line and `umstage doctor` say so, once, and why.
#[test]
fn without_landlock_steps_run_unconfined_and_the_build_says_why_once() -> TestResult {
    let env = Env::new()?;
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN kill -0 $PPID && echo 'signal allowed'\n",
        )],
    )?;
    let bb = format!("busybox=oci-layout://{}", env.busybox.display());
    let (root, out) = (env.path("state"), env.path("img.tar"));
    let run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = env.dir.user().command(&env.bin);
        cmd.args(args).env("XDG_DATA_HOME", env.path("xdg"));
        refuse_landlock(&mut cmd);
        cmd.output()
    };
    let built = run(&[
        "build".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        "--progress".as_ref(),
        "plain".as_ref(),
        "--sandbox".as_ref(),
        "ptrace".as_ref(),
        "--build-context".as_ref(),
        bb.as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        ctx.as_os_str(),
    ])?;
    let log = stderr(&built);
    assert_ok(&built);
    let why = "not confined by Landlock: landlock_create_ruleset fails: Operation not permitted (os error 1) (a seccomp filter refuses it)";
    let tier_line = log.lines().find(|l| l.starts_with("#0 sandbox ptrace: "));
    assert!(tier_line.is_some_and(|l| l.ends_with(why)), "{log}");
    assert_eq!(log.matches("not confined by Landlock").count(), 1, "{log}");
    assert_eq!(lines_with(&log, "signal "), ["signal allowed"], "{log}");
    let doctor = run(&["doctor".as_ref(), "--root".as_ref(), root.as_os_str()])?;
    let said = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert!(
        said.lines()
            .any(|l| l.starts_with("note landlock") && l.ends_with(why)),
        "{said}"
    );
    Ok(())
}

/// Every way a step changes a file, for the copy-up test: `cow OP PATH`, and `cow show DIR`
/// printing each entry of `DIR` (name, mode, owner, size, xattrs, inode flags, content; the
/// mtime where the step set it, since the base's differs between builds, or always with a
/// third argument).
const COW_C: &str = r#"#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
static int ro(const char *p) { int fd = open(p, O_RDONLY); if (fd < 0) { perror(p); exit(1); } return fd; }
static void ok(int rc, const char *what) { if (rc < 0) { perror(what); exit(1); } }
static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
int main(int argc, char **argv) {
  const char *op = argv[1], *p = argv[2];
  struct timespec t[2] = {{1000000, 0}, {1000000, 0}};
  if (!strcmp(op, "fchmod")) ok(fchmod(ro(p), 0604), op);
  else if (!strcmp(op, "fchown")) ok(fchown(ro(p), 1234, 5678), op);
  else if (!strcmp(op, "setbase")) ok(setxattr(p, "user.base", "b", 1, 0), op);
  else if (!strcmp(op, "setxattr")) ok(setxattr(p, "user.cow", "path", 4, 0), op);
  else if (!strcmp(op, "fsetxattr")) ok(fsetxattr(ro(p), "user.cow", "fd", 2, 0), op);
  else if (!strcmp(op, "fremovexattr")) ok(fremovexattr(ro(p), "user.base"), op);
  else if (!strcmp(op, "futimens")) ok(futimens(ro(p), t), op);
  else if (!strcmp(op, "emptypath")) {
    /* glibc refuses a NULL path itself. */
    ok(syscall(SYS_utimensat, ro(p), NULL, t, 0), "utimensat NULL");
    ok(fchownat(open(p, O_PATH), "", 42, 43, AT_EMPTY_PATH), "fchownat AT_EMPTY_PATH");
  } else if (!strcmp(op, "procfd")) {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", ro(p));
    int w = open(link, O_WRONLY | O_APPEND);
    ok(w, link);
    ok(write(w, "procfd\n", 7), "write");
  } else if (!strcmp(op, "ioctl")) {
    int fd = ro(p), flags = 0;
    ok(ioctl(fd, FS_IOC_GETFLAGS, &flags), "FS_IOC_GETFLAGS");
    flags |= FS_NOATIME_FL;
    printf("ioctl %s\n", ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0 ? "set" : "refused");
  } else if (!strcmp(op, "show")) {
    struct dirent **names;
    int n = scandir(p, &names, NULL, by_name);
    ok(n, p);
    for (int i = 0; i < n; i++) {
      const char *name = names[i]->d_name;
      if (name[0] == '.') continue;
      char path[4096], value[256] = "", content[256] = "";
      snprintf(path, sizeof path, "%s/%s", p, name);
      struct stat st;
      ok(lstat(path, &st), path);
      ssize_t v = lgetxattr(path, "user.cow", value, sizeof value - 1);
      ssize_t b = lgetxattr(path, "user.base", value + (v > 0 ? v : 0), 100);
      int flags = -1, fd = S_ISREG(st.st_mode) ? open(path, O_RDONLY) : -1;
      if (fd >= 0) {
        ioctl(fd, FS_IOC_GETFLAGS, &flags);
        ssize_t c = read(fd, content, sizeof content - 1);
        content[c > 0 ? c : 0] = 0;
        for (char *q = content; *q; q++) if (*q == '\n') *q = '|';
        close(fd);
      }
      int full = argc > 3 || st.st_mtime < 1000000000;
      printf("show %s %o %u:%u %lld x=%s%s f=%d t=%ld.%ld c=%s\n", name, st.st_mode, st.st_uid,
             st.st_gid, (long long)st.st_size, v > 0 ? "cow," : "", b > 0 ? "base" : "",
             flags & FS_NOATIME_FL, full ? (long)st.st_mtim.tv_sec : 0,
             full ? st.st_mtim.tv_nsec : 0, content);
    }
  } else { fprintf(stderr, "unknown %s\n", op); return 2; }
  return 0;
}
"#;

/// The copy-up test's build: a base with files, a step that changes each of them in every way
/// a step can (`mod`), and a sibling stage from the same base run after it (`check`, through
/// its `COPY --from`), which finds the base as it was.
const COW_STEPS: &str = "FROM debian AS base\n\
COPY cow.c /src/\n\
RUN gcc -o /usr/local/bin/cow /src/cow.c && mkdir /p && cd /p \\\n\
 && for f in write append trunc otrunc chmod fchmod chown fchown lchown setxattr fsetxattr \\\n\
    fremovexattr touch futimens emptypath sed mv rm hl procfd ioctl keep; do echo \"original $f\" > $f; done \\\n\
 && ln -s keep link && cow setbase fremovexattr && cow show /p full > /pristine\n\
FROM base AS mod\n\
RUN cd /p \\\n\
 && printf W | dd of=write conv=notrunc status=none \\\n\
 && echo more >> append && truncate -s 3 trunc && : > otrunc \\\n\
 && chmod 600 chmod && cow fchmod fchmod \\\n\
 && chown 1234:5678 chown && cow fchown fchown && chown -h 4321:8765 lchown \\\n\
 && cow setxattr setxattr && cow fsetxattr fsetxattr && cow fremovexattr fremovexattr \\\n\
 && touch -d '1990-02-03 04:05:06' touch && touch -h -d '1991-01-01' link \\\n\
 && cow futimens futimens && cow emptypath emptypath \\\n\
 && sed -i s/original/edited/ sed && echo new > /tmp/new && mv /tmp/new mv && rm rm \\\n\
 && ln hl hl2 && echo via-link >> hl2 && cow procfd procfd && cow ioctl ioctl \\\n\
 && cow show /p\n\
FROM base AS check\n\
ARG AGAIN\n\
COPY --from=mod /p/hl /after-mod\n\
RUN cow show /p full > /now && diff /pristine /now && echo \"pristine $AGAIN\" && echo ok > /ok\n\
FROM mod\n\
COPY --from=check /ok /ok\n";

/// Copy-up in the ptrace tier's linked snapshots: every kind of change a step makes to a file
/// it got from its parent leaves the parent as it was (a later sibling stage, and a rebuild's
/// sibling on the cached parent, see it unchanged), and the layer is the userns tier's.
#[test]
fn changes_to_the_parents_files_copy_them_up_and_leave_the_parent_pristine() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    let ctx = env.context("ctx", &[("Dockerfile", COW_STEPS), ("cow.c", COW_C)])?;
    let mut trees = Vec::new();
    let mut shown = Vec::new();
    for tier in ["userns", "ptrace"] {
        let state = env.path(&format!("state-{tier}"));
        let out_name = format!("{tier}.tar");
        let args = ["--sandbox", tier, "--build-context", &debian];
        let out = env.build_in(&state, &ctx, &out_name, &args, &[]);
        let log = stderr(&out);
        assert_ok(&out);
        assert_eq!(tier == "ptrace", log.contains("linked snapshots"), "{log}");
        assert_eq!(lines_with(&log, "pristine"), ["pristine "], "{tier}: {log}");
        // The parents again, from the cache: the sibling runs anew on them.
        let again = [&args[..], &["--build-arg", "AGAIN=again"]].concat();
        let out2 = env.build_in(&state, &ctx, "again.tar", &again, &[]);
        let log2 = stderr(&out2);
        assert_ok(&out2);
        assert_eq!(
            lines_with(&log2, "pristine"),
            ["pristine again"],
            "{tier}: {log2}"
        );
        fs::remove_dir_all(&state)?;

        // The base's listing holds the times of its build.
        trees.push(image_files(&env, &out_name, &["pristine"])?);
        let mut said: Vec<String> = lines_with(&log, "show ")
            .into_iter()
            .chain(lines_with(&log, "ioctl "))
            .map(str::to_string)
            .collect();
        said.sort();
        shown.push(said);
    }
    // What the step saw after its changes, the same in both tiers.
    assert!(
        shown[1]
            .iter()
            .any(|l| l.starts_with("show hl ") && l.ends_with("c=original hl|via-link|")),
        "{:#?}",
        shown[1]
    );
    assert_eq!(shown[0], shown[1]);
    assert_same_files(&trees[0], &trees[1]);
    Ok(())
}

/// Opens a file with a long path (its host path longer still) with its stack pointer about
/// 200 bytes above the bottom of a small stack, on a `ucontext` and on a thread of its own,
/// and counts the bytes changed in the 4 KiB below each stack (its own memory, set to 0xa5).
/// Bound at load (`-z now`): the loader's lazy binding would itself use more stack than that.
const LOW_STACK_C: &str = r#"#define _GNU_SOURCE
#include <alloca.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define GUARD 4096
#define STACK (64 * 1024)
static unsigned char ctx_area[GUARD + STACK] __attribute__((aligned(4096)));
static unsigned char thread_area[GUARD + STACK] __attribute__((aligned(4096)));
static char path[256];
static ucontext_t main_ctx, low_ctx;
static long opened;

static void __attribute__((noinline)) low(unsigned char *bottom) {
    unsigned char here;
    volatile unsigned char *pad = alloca((size_t)(&here - bottom) - 256);
    pad[0] = 0;
    opened = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CREAT, 0644);
}

static void on_context(void) { low(ctx_area + GUARD); }
static void *on_thread(void *arg) { (void)arg; low(thread_area + GUARD); return NULL; }

static int changed(const unsigned char *area) {
    int n = 0;
    for (int i = 0; i < GUARD; i++) n += area[i] != 0xa5;
    return n;
}

int main(void) {
    strcpy(path, "/tmp/");
    memset(path + 5, 'a', 150);
    mkdir(path, 0755);
    strcat(path, "/file");
    memset(ctx_area, 0xa5, GUARD);
    memset(thread_area, 0xa5, GUARD);

    getcontext(&low_ctx);
    low_ctx.uc_stack.ss_sp = ctx_area + GUARD;
    low_ctx.uc_stack.ss_size = STACK;
    low_ctx.uc_link = &main_ctx;
    makecontext(&low_ctx, on_context, 0);
    swapcontext(&main_ctx, &low_ctx);
    printf("low context opened %d changed %d\n", opened >= 0, changed(ctx_area));

    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init(&attr);
    pthread_attr_setstack(&attr, thread_area + GUARD, STACK);
    opened = -1;
    if (pthread_create(&thread, &attr, on_thread, NULL) != 0) return 1;
    pthread_join(thread, NULL);
    printf("low thread opened %d changed %d\n", opened >= 0, changed(thread_area));
    return 0;
}
"#;

#[test]
fn a_translated_path_never_overwrites_the_memory_below_a_nearly_full_stack() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    let dockerfile = "FROM debian\n\
        COPY low.c /src/\n\
        RUN gcc -O1 -Wl,-z,now -o /usr/local/bin/low /src/low.c && low\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("low.c", LOW_STACK_C)])?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert_eq!(
        lines_with(&log, "low "),
        [
            "low context opened 1 changed 0",
            "low thread opened 1 changed 0"
        ],
        "{log}"
    );
    Ok(())
}

/// Starts 300 threads, 4 at a time, each opening a file; how many opened it, and whether the
/// process's address space stayed the size it had after the first 4 (adjacent mappings
/// merge: their count says nothing).
const THREADS_C: &str = r#"#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static long vm_kib(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "VmSize: %ld", &kib) == 1) break;
    fclose(status);
    return kib;
}

static void *opener(void *arg) {
    (void)arg;
    int fd = open("/etc/debian_version", O_RDONLY);
    if (fd < 0) return NULL;
    close(fd);
    return (void *)1;
}

int main(void) {
    int opened = 0;
    long before = 0;
    for (int round = 0; round < 75; round++) {
        if (round == 1) before = vm_kib();
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, opener, NULL);
        for (int i = 0; i < 4; i++) {
            void *ok;
            pthread_join(t[i], &ok);
            opened += ok != NULL;
        }
    }
    printf("threads opened %d\n", opened);
    long grown = vm_kib() - before;
    printf("threads space %s\n", grown < 4096 ? "kept" : "grew");
    return 0;
}
"#;

#[test]
fn a_long_command_line_and_many_short_lived_threads_run_as_given() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    // 20,000 arguments need more than a thread's first slot (their pointers alone take
    // 160 KiB): the shell's child maps a larger one, `env` (whose loader has a slot from
    // opening its libraries) grows its own; a finished thread's slot goes to the next, so slots do not pile up.
    let dockerfile = "FROM debian\n\
        COPY threads.c /src/\n\
        RUN echo \"words $(/bin/echo $(seq 1 20000) | wc -w)\" \\\n\
         && echo \"sum $(env /bin/echo $(seq 1 20000) | tr ' ' '\\n' | awk '{s+=$1} END {print s}')\" \\\n\
         && gcc -o /usr/local/bin/threads /src/threads.c && threads\n";
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", dockerfile), ("threads.c", THREADS_C)],
    )?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert_eq!(lines_with(&log, "words "), ["words 20000"], "{log}");
    assert_eq!(lines_with(&log, "sum "), ["sum 200010000"], "{log}");
    assert_eq!(
        lines_with(&log, "threads "),
        ["threads opened 300", "threads space kept"],
        "{log}"
    );
    Ok(())
}

/// Four processes each start `/bin/true` 100 times with `posix_spawn` (a vfork) and say how
/// many of the 400 starts failed.
const SPAWN_C: &str = r#"#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int spawn_all(void) {
    int failed = 0;
    char *argv[] = {"true", NULL};
    for (int i = 0; i < 100; i++) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0
            || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    return failed;
}

int main(void) {
    pid_t workers[4];
    for (int w = 0; w < 4; w++) {
        workers[w] = fork();
        if (workers[w] == 0) _exit(spawn_all());
    }
    int failed = 0;
    for (int w = 0; w < 4; w++) {
        int status;
        waitpid(workers[w], &status, 0);
        failed += WIFEXITED(status) ? WEXITSTATUS(status) : 100;
    }
    printf("spawn failed %d of 400\n", failed);
    return 0;
}
"#;

#[test]
fn a_vfork_child_met_before_its_parents_fork_event_runs_as_given() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    // The kernel often reports a spawned child's first stop before its parent's vfork event;
    // a child let run then could exec and only afterwards be given its parent's scratch slot,
    // unmapped in its new program: its loader's `openat` failed (EIO), 20 to 30 of the 400
    // starts.
    let dockerfile = "FROM debian\n\
        COPY spawn.c /src/\n\
        RUN gcc -o /usr/local/bin/spawn /src/spawn.c && spawn\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("spawn.c", SPAWN_C)])?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert_eq!(
        lines_with(&log, "spawn "),
        ["spawn failed 0 of 400"],
        "{log}"
    );
    Ok(())
}

/// A new thread, which has made no call yet, starts `/bin/true` 200 times with
/// `posix_spawn`; whether the process's address space stayed the size it had after the first.
const SPAWN_THREAD_C: &str = r#"#include <pthread.h>
#include <semaphore.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>

extern char **environ;

static long vm_kib(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, status))
        if (sscanf(line, "VmSize: %ld", &kib) == 1) break;
    fclose(status);
    return kib;
}

/* The spawner makes no call but its spawns: the main thread measures while it waits. */
static sem_t first_done, measured;

static void *spawner(void *arg) {
    (void)arg;
    char *argv[] = {"true", NULL};
    long ok = 0;
    for (int i = 0; i < 200; i++) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) == 0
            && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0)
            ok++;
        if (i == 0) {
            sem_post(&first_done);
            sem_wait(&measured);
        }
    }
    return (void *)ok;
}

int main(void) {
    pthread_t t;
    void *ok;
    sem_init(&first_done, 0, 0);
    sem_init(&measured, 0, 0);
    pthread_create(&t, NULL, spawner, NULL);
    sem_wait(&first_done);
    long before = vm_kib();
    sem_post(&measured);
    pthread_join(t, &ok);
    printf("spawned %ld space %s\n", (long)ok, vm_kib() - before < 4096 ? "kept" : "grew");
    return 0;
}
"#;

#[test]
fn a_thread_without_a_slot_that_spawns_keeps_its_address_space() -> TestResult {
    let env = Env::new()?;
    let debian = with_debian(&env)?;
    // The thread has no slot when it spawns: its first vfork's child maps one in the memory
    // they share, which becomes the thread's when the child execs, so later children borrow
    // it; left with the child, each of the 200 would stay mapped (12.5 MiB).
    let dockerfile = "FROM debian\n\
        COPY spawner.c /src/\n\
        RUN gcc -pthread -o /usr/local/bin/spawner /src/spawner.c && spawner\n";
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", dockerfile), ("spawner.c", SPAWN_THREAD_C)],
    )?;
    let out = env.build(
        &ctx,
        "img.tar",
        &["--sandbox", "ptrace", "--build-context", &debian],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert_eq!(
        lines_with(&log, "spawned "),
        ["spawned 200 space kept"],
        "{log}"
    );
    Ok(())
}

/// Across a `RUN --mount` and the root a rename copies (`mv` falls back when the kernel says
/// `EXDEV`) and a hard link fails, as across real mounts: in the `ptrace` tier nothing is
/// mounted, and a snapshot's file linked into a cache directory (or a cache file into the
/// snapshot) would be changed in place later. A second change through a descriptor of a
/// file copied up by the first reaches the copy (Perl's `chmod` on a handle is `fchmod`), and
/// a read-only file with a recorded owner can be copied up (its record before its mode).
#[test]
fn renames_and_links_stay_in_their_tree_and_changes_through_a_descriptor_reach_the_copy()
-> TestResult {
    let dockerfile = "FROM debian AS change\n\
         RUN echo base > /f && echo other > /g && echo third > /h && chmod 644 /f /g /h \
         && echo r > /r && chown 5:5 /r && chmod 444 /r\n\
         RUN --mount=type=cache,target=/c,sharing=private \
         mv /f /c/f && echo \"moved $(cat /c/f)\" \
         && if ln /g /c/g 2>/dev/null; then echo linked; else echo \"ln refused\"; fi \
         && if ln /c/f /f2 2>/dev/null; then echo linked back; else echo \"back refused\"; fi \
         && perl -e 'open(my $h, \"<\", \"/h\") or die; chmod(0600, $h) or die; chmod(0640, $h) or die' \
         && stat -c 'mode %a' /h && chmod 640 /r && stat -c 'owned %a %u' /r\n\
         FROM debian AS check\n\
         RUN echo base > /f && echo other > /g && echo third > /h && chmod 644 /f /g /h\n\
         RUN stat -c 'parent %a %n' /f /g /h\n";
    for tier in ["userns", "ptrace"] {
        let env = Env::new()?;
        let debian = with_debian(&env)?;
        let ctx = env.context("ctx", &[("Dockerfile", dockerfile)])?;
        let out = env.build(
            &ctx,
            "img.tar",
            &[
                "--sandbox",
                tier,
                "--progress",
                "plain",
                "--target",
                "change",
                "--build-context",
                &debian,
            ],
        );
        assert_ok(&out);
        let log = stderr(&out);
        let lines: Vec<String> = ["moved ", "ln ", "back ", "linked", "mode ", "owned "]
            .iter()
            .flat_map(|p| lines_with(&log, p))
            .map(str::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "moved base",
                "ln refused",
                "back refused",
                "mode 640",
                "owned 640 5"
            ],
            "{tier}: {log}"
        );
        let checked = env.build(
            &ctx,
            "check.tar",
            &[
                "--sandbox",
                tier,
                "--progress",
                "plain",
                "--target",
                "check",
                "--build-context",
                &debian,
            ],
        );
        assert_ok(&checked);
        let log = stderr(&checked);
        assert_eq!(
            lines_with(&log, "parent "),
            ["parent 644 /f", "parent 644 /g", "parent 644 /h"],
            "{tier}: {log}"
        );
    }
    Ok(())
}
