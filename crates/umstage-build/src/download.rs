//! ADD's URLs as BuildKit's HTTP source has them: each URL's last download is kept under the
//! state root (`downloads/<sha256 of the URL>/`: the content named by its digest, and what the
//! server said about it), revalidated on every build (`ETag`, `Last-Modified`), and the step is
//! keyed by the content downloaded, so a changed remote file is fetched again and an unchanged
//! one is not. The URL recorded there never carries its `user:password@`: credentials are not
//! written to disk.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use umstage_oci::registry::{DownloadError, Downloaded, RegistryClient, Validators};

/// A URL's content, ready to copy.
#[derive(Debug)]
pub(crate) struct Download {
    /// A link to the content private to this build: a later build replacing the kept content
    /// leaves it whole.
    pub(crate) file: tempfile::TempPath,
    /// `sha256:…` of the content.
    pub(crate) digest: String,
    /// Bytes.
    pub(crate) size: u64,
    /// Modification time the file gets: the server's `Last-Modified`, else 0.
    pub(crate) mtime: i64,
}

/// Why a URL could not be made available.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The download failed.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// The kept download could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What is recorded beside a kept download.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    url: String,
    digest: String,
    size: u64,
    validators: Validators,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The content of `url`: the kept download when the server says it is current, else a new
/// one (which is kept for the next build).
pub(crate) fn fetch(
    client: &RegistryClient,
    state_root: &Path,
    url: &str,
) -> Result<Download, FetchError> {
    match fetch_once(client, state_root, url) {
        // Another build replaced the kept content between our reading its record and linking
        // it: the record now names the new content.
        Err(FetchError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            fetch_once(client, state_root, url)
        }
        done => done,
    }
}

fn fetch_once(
    client: &RegistryClient,
    state_root: &Path,
    url: &str,
) -> Result<Download, FetchError> {
    let dir = state_root
        .join("downloads")
        .join(hex::encode(Sha256::digest(url.as_bytes())));
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    // Copies open sources with no symlink in their path: the state root may be reached
    // through one.
    let dir = fs::canonicalize(&dir).map_err(io(&dir))?;
    let record_path = dir.join("record.json");
    let kept: Option<Record> = umstage_oci::regular::read(&record_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|r: &Record| {
            r.url == without_userinfo(url) && content_path(&dir, &r.digest).is_file()
        });
    let incoming = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&dir)
        .map_err(io(&dir))?
        .into_temp_path();
    let record = match client.download(url, kept.as_ref().map(|r| &r.validators), &incoming)? {
        Downloaded::NotModified => match kept {
            Some(record) => record,
            None => not_modified_without_download(url)?,
        },
        Downloaded::Body {
            digest,
            size,
            validators,
        } => {
            let content = content_path(&dir, &digest);
            fs::rename(&incoming, &content).map_err(io(&content))?;
            let record = Record {
                url: without_userinfo(url),
                digest,
                size,
                validators,
            };
            write_record(&dir, &record_path, &record)?;
            // The content this replaces: a build still using it holds its own link.
            if let Some(old) = kept.filter(|k| k.digest != record.digest) {
                let _ = fs::remove_file(content_path(&dir, &old.digest));
            }
            record
        }
    };
    let content = content_path(&dir, &record.digest);
    let link = tempfile::Builder::new()
        .prefix(".in-use-")
        .make_in(&dir, |path| fs::hard_link(&content, path))
        .map_err(io(&content))?
        .into_temp_path();
    let mtime = record
        .validators
        .last_modified
        .as_deref()
        .and_then(|h| httpdate::parse_http_date(h).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok(Download {
        file: link,
        digest: record.digest,
        size: record.size,
        mtime,
    })
}

/// A 304 answers only a conditional request, and one is sent only with a kept download.
fn not_modified_without_download(url: &str) -> Result<Record, FetchError> {
    Err(FetchError::Download(DownloadError::Http {
        url: url.to_string(),
        status: 304,
    }))
}

/// `url` without the `user:password@` of its authority.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn content_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(digest.replace(':', "-"))
}

fn write_record(dir: &Path, path: &Path, record: &Record) -> Result<(), FetchError> {
    let bytes = serde_json::to_vec(record).map_err(|e| FetchError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(io(path))?;
    tmp.persist(path).map_err(|e| FetchError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// The name BuildKit's Dockerfile frontend saves a URL's content under: the last segment of
/// its decoded path (so an encoded `/` separates segments there too, and never reaches the
/// destination path), or `__unnamed__` when the path has none.
pub(crate) fn file_name(url: &str) -> String {
    let without = url.split(['?', '#']).next().unwrap_or(url);
    let path = without
        .split_once("://")
        .map_or(without, |x| x.1)
        .split_once('/')
        .map_or("", |x| x.1);
    let path = percent_decode(path);
    match path.trim_end_matches('/').rsplit('/').next().unwrap_or("") {
        "" | "." | ".." => "__unnamed__".to_string(),
        name => name.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| {
            bytes
                .get(j)
                .and_then(|b| char::from(*b).to_digit(16))
                .map(|d| d as u8)
        };
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_recorded() {
        assert_eq!(
            without_userinfo("https://u:p%40ss@h:8/x@y?q=a@b"),
            "https://h:8/x@y?q=a@b"
        );
        assert_eq!(without_userinfo("http://token@h"), "http://h");
        assert_eq!(without_userinfo("http://h/a@b"), "http://h/a@b");
        assert_eq!(without_userinfo("http://h#@x"), "http://h#@x");
    }

    #[test]
    fn names_as_buildkit() {
        assert_eq!(file_name("https://h/x/y/file.tgz?a=1"), "file.tgz");
        assert_eq!(file_name("https://h/"), "__unnamed__");
        assert_eq!(file_name("http://h"), "__unnamed__");
        assert_eq!(file_name("http://h/dir/"), "dir");
        assert_eq!(file_name("http://h/a%20b"), "a b");
        // As Go's url.Parse then path.Base: decoded first, so an encoded slash never puts
        // the file outside the destination.
        assert_eq!(file_name("http://h/x/a%2F..%2F..%2Fetc%2Fpasswd"), "passwd");
        assert_eq!(file_name("http://h/x/%2E%2E"), "__unnamed__");
    }
}
