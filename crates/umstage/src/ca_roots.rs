//! A machine with no CA certificate at all (a minimal image in a build pod) must still reach
//! plain-HTTP registries. The TLS stack under the registry client (rustls' platform verifier,
//! which oci-client sets up for every client it makes, plain-HTTP ones included) refuses to
//! start with an empty root store, and `reqwest::Client::default()` panics on that. On such a
//! machine umstage gives it one trust anchor that can never verify anything
//! (`unusable-anchor.pem`): its key is DSA, an algorithm no TLS verifier (rustls' included)
//! accepts a signature from, so no certificate can ever chain to it, whoever holds its key. An
//! HTTPS registry then fails its handshake with an unknown issuer, as it must with no roots.

use std::path::{Path, PathBuf};

const UNUSABLE_ANCHOR: &[u8] = include_bytes!("unusable-anchor.pem");
const PEM_CERTIFICATE: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// Whether `path` is a file holding at least one PEM certificate.
fn holds_certificate(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        bytes
            .windows(PEM_CERTIFICATE.len())
            .any(|w| w == PEM_CERTIFICATE)
    })
}

/// Whether the places rustls-native-certs reads (`SSL_CERT_FILE` and `SSL_CERT_DIR`, else what
/// openssl-probe finds) hold any certificate; stops at the first one found.
fn has_some_root() -> bool {
    let mut file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = std::env::var_os("SSL_CERT_DIR")
        .map(|d| std::env::split_paths(&d).collect())
        .unwrap_or_default();
    if file.is_none() && dirs.is_empty() {
        let probe = openssl_probe::probe();
        file = probe.cert_file;
        dirs = probe.cert_dir;
    }
    file.is_some_and(|f| holds_certificate(&f))
        || dirs.iter().any(|dir| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| holds_certificate(&entry.path()))
        })
}

/// Points `SSL_CERT_FILE` at the unusable anchor when the machine has no CA certificate.
/// Must run before any thread starts (it sets the environment). The anchor lives in a memfd
/// this process and its children (the namespace re-exec, credential helpers) inherit; it is
/// never written to disk.
pub fn ensure_root_store_not_empty() {
    if has_some_root() {
        return;
    }
    let Ok(fd) =
        rustix::fs::memfd_create("umstage-unusable-anchor", rustix::fs::MemfdFlags::empty())
    else {
        return;
    };
    if rustix::io::write(&fd, UNUSABLE_ANCHOR).ok() != Some(UNUSABLE_ANCHOR.len()) {
        return;
    }
    let path = format!("/proc/self/fd/{}", std::os::fd::IntoRawFd::into_raw_fd(fd));
    tracing::debug!("no CA certificates on this machine: HTTPS registries cannot be verified");
    // SAFETY: called at the top of main, before any other thread exists.
    unsafe { std::env::set_var("SSL_CERT_FILE", path) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DER inside a one-certificate PEM.
    fn der(pem: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(pem);
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>();
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                _ => 63,
            }
        };
        let mut out = Vec::new();
        for chunk in body.trim_end_matches('=').as_bytes().chunks(4) {
            let bits =
                chunk.iter().fold(0u32, |acc, &c| (acc << 6) | value(c)) << (6 * (4 - chunk.len()));
            out.extend(&bits.to_be_bytes()[1..chunk.len()]);
        }
        out
    }

    fn holds(der: &[u8], oid: &[u8]) -> bool {
        der.windows(oid.len()).any(|w| w == oid)
    }

    #[test]
    fn the_anchor_is_one_certificate_with_a_key_no_tls_verifier_accepts() {
        let text = String::from_utf8_lossy(UNUSABLE_ANCHOR);
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 1);
        assert!(!text.contains("PRIVATE KEY"));
        let der = der(UNUSABLE_ANCHOR);
        // id-dsa (1.2.840.10040.4.1) is the key's algorithm ...
        assert!(holds(
            &der,
            &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01]
        ));
        // ... and no algorithm a TLS verifier takes appears: ecPublicKey, rsaEncryption,
        // Ed25519, Ed448.
        for oid in [
            &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..],
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            &[0x06, 0x03, 0x2b, 0x65, 0x70],
            &[0x06, 0x03, 0x2b, 0x65, 0x71],
        ] {
            assert!(!holds(&der, oid), "{oid:02x?}");
        }
    }
}
