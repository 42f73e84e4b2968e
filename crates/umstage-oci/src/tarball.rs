//! The tar format as layers use it: a deterministic writer (ustar headers with PAX extensions)
//! and a strict streaming reader with size limits, for hostile input.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// Largest PAX or GNU long-name record accepted; real ones are a few KiB.
const MAX_META_SIZE: u64 = 1 << 20;

/// What kind of file a tar entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with content.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is in `link`.
    Symlink,
    /// A hard link to an earlier entry named in `link`.
    Hardlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    fn flag(self) -> u8 {
        match self {
            Self::File => b'0',
            Self::Hardlink => b'1',
            Self::Symlink => b'2',
            Self::Char => b'3',
            Self::Block => b'4',
            Self::Dir => b'5',
            Self::Fifo => b'6',
        }
    }
}

/// One tar entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Path inside the archive, without a trailing `/`.
    pub path: Vec<u8>,
    /// The entry type.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Content size (regular files only).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Symlink target or hardlink source path.
    pub link: Vec<u8>,
    /// Device major number.
    pub dev_major: u32,
    /// Device minor number.
    pub dev_minor: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Header {
    /// A header of `kind` at `path` with everything else zero or empty.
    pub fn new(path: impl Into<Vec<u8>>, kind: EntryKind) -> Self {
        Self {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

fn fits_octal(value: u64, digits: u32) -> bool {
    value < 8u64.pow(digits)
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while len.to_string().len() + base > len {
        len += 1;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn ustar_block(name: &[u8], header: &Header, flag: u8, size: u64) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    let name_len = name.len().min(100);
    block[..name_len].copy_from_slice(&name[..name_len]);
    put_octal(&mut block[100..108], u64::from(header.mode & 0o7777));
    put_octal(&mut block[108..116], header.uid.min(0o7777777));
    put_octal(&mut block[116..124], header.gid.min(0o7777777));
    put_octal(&mut block[124..136], size);
    put_octal(
        &mut block[136..148],
        u64::try_from(header.mtime).unwrap_or(0).min(0o77777777777),
    );
    block[156] = flag;
    let link_len = header.link.len().min(100);
    block[157..157 + link_len].copy_from_slice(&header.link[..link_len]);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    if matches!(header.kind, EntryKind::Char | EntryKind::Block) {
        put_octal(
            &mut block[329..337],
            u64::from(header.dev_major).min(0o7777777),
        );
        put_octal(
            &mut block[337..345],
            u64::from(header.dev_minor).min(0o7777777),
        );
    }
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut block[148..155], sum);
    block[155] = b' ';
    block
}

/// Writes one entry's header (with a PAX extended header first when needed).
pub fn write_header(out: &mut impl Write, header: &Header) -> io::Result<()> {
    let mut name = header.path.clone();
    if header.kind == EntryKind::Dir {
        name.push(b'/');
    }
    let mut pax = Vec::new();
    if name.len() > 100 {
        pax_record(&mut pax, "path", &name);
    }
    if header.link.len() > 100 {
        pax_record(&mut pax, "linkpath", &header.link);
    }
    if !fits_octal(header.size, 11) {
        pax_record(&mut pax, "size", header.size.to_string().as_bytes());
    }
    if !fits_octal(header.uid, 7) {
        pax_record(&mut pax, "uid", header.uid.to_string().as_bytes());
    }
    if !fits_octal(header.gid, 7) {
        pax_record(&mut pax, "gid", header.gid.to_string().as_bytes());
    }
    if header.mtime < 0 || !fits_octal(header.mtime.unsigned_abs(), 11) {
        pax_record(&mut pax, "mtime", header.mtime.to_string().as_bytes());
    }
    for (key, value) in &header.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{key}"), value);
    }
    if !pax.is_empty() {
        let base = name
            .rsplit(|&b| b == b'/')
            .find(|c| !c.is_empty())
            .unwrap_or(b"entry");
        let mut pax_name = b"PaxHeaders.0/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(87)]);
        let mut pax_header = Header::new(pax_name.clone(), EntryKind::File);
        pax_header.mode = 0o644;
        pax_header.mtime = header.mtime;
        out.write_all(&ustar_block(&pax_name, &pax_header, b'x', pax.len() as u64))?;
        out.write_all(&pax)?;
        write_padding(out, pax.len() as u64)?;
    }
    let size = if header.kind == EntryKind::File {
        header.size
    } else {
        0
    };
    out.write_all(&ustar_block(
        &name,
        header,
        header.kind.flag(),
        if fits_octal(size, 11) { size } else { 0 },
    ))
}

/// Writes the zero padding that follows `size` bytes of entry content.
pub fn write_padding(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// Writes the end-of-archive marker.
pub fn write_end(out: &mut impl Write) -> io::Result<()> {
    out.write_all(&[0u8; BLOCK * 2])
}

/// Why a tar stream was refused.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// Reading the stream failed.
    #[error("reading the archive: {0}")]
    Io(#[from] io::Error),
    /// The stream ended inside an entry or header.
    #[error("the archive is truncated")]
    Truncated,
    /// A header's checksum does not match.
    #[error("corrupt tar header (bad checksum) after entry {after:?}")]
    Checksum {
        /// The last good entry's path.
        after: String,
    },
    /// A header field is malformed or absurd.
    #[error("malformed tar header for {path:?}: {reason}")]
    Malformed {
        /// The entry's path, as far as known.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The entry uses a tar feature umstage does not accept in layers.
    #[error("unsupported tar entry {path:?}: {what}")]
    Unsupported {
        /// The entry's path.
        path: String,
        /// The feature.
        what: String,
    },
}

/// A strict streaming tar reader.
pub struct TarReader<R> {
    inner: R,
    remaining: u64,
    padding: u64,
    last_path: String,
    finished: bool,
}

fn parse_number(field: &[u8], path: &[u8], what: &str) -> Result<u64, TarError> {
    let malformed = |reason: String| TarError::Malformed {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    };
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] != 0x80 {
            return Err(malformed(format!("negative or oversized base-256 {what}")));
        }
        let mut value: u64 = 0;
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| malformed(format!("{what} overflows")))?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let text = std::str::from_utf8(&text).map_err(|_| malformed(format!("non-ASCII {what}")))?;
    u64::from_str_radix(text, 8).map_err(|_| malformed(format!("{what} {text:?} is not octal")))
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

#[derive(Default)]
struct Overrides {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<i64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl<R: Read> TarReader<R> {
    /// Reads a tar stream from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            remaining: 0,
            padding: 0,
            last_path: String::new(),
            finished: false,
        }
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.inner.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(TarError::Truncated),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(block))
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(TarError::Truncated);
            }
            n -= got as u64;
        }
        Ok(())
    }

    fn read_meta(&mut self, size: u64, path: &[u8]) -> Result<Vec<u8>, TarError> {
        if size > MAX_META_SIZE {
            return Err(TarError::Malformed {
                path: String::from_utf8_lossy(path).into_owned(),
                reason: format!("extended header of {size} bytes (limit {MAX_META_SIZE})"),
            });
        }
        let mut data = vec![0u8; size as usize];
        self.inner
            .read_exact(&mut data)
            .map_err(|_| TarError::Truncated)?;
        self.skip((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64)?;
        Ok(data)
    }

    /// The next entry's header, or `None` at the end of the archive. Unread content of the
    /// previous entry is skipped.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut overrides = Overrides::default();
        loop {
            let Some(block) = self.read_block()? else {
                self.finished = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                self.finished = true;
                return Ok(None);
            }
            let stored = parse_number(&block[148..156], b"", "checksum")?;
            let unsigned: u64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(b)
                    }
                })
                .sum();
            let signed: i64 = block
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        i64::from(b as i8)
                    }
                })
                .sum();
            if stored != unsigned && i64::try_from(stored).ok() != Some(signed) {
                return Err(TarError::Checksum {
                    after: self.last_path.clone(),
                });
            }
            let mut path = cstr(&block[..100]).to_vec();
            if &block[257..263] == b"ustar\0" {
                let prefix = cstr(&block[345..500]);
                if !prefix.is_empty() {
                    let mut full = prefix.to_vec();
                    full.push(b'/');
                    full.extend_from_slice(&path);
                    path = full;
                }
            }
            let size = parse_number(&block[124..136], &path, "size")?;
            let flag = block[156];
            match flag {
                b'x' => {
                    let data = self.read_meta(size, &path)?;
                    parse_pax(&data, &path, &mut overrides)?;
                    continue;
                }
                b'g' => {
                    self.read_meta(size, &path)?;
                    continue;
                }
                b'L' => {
                    overrides.path = Some(cstr(&self.read_meta(size, &path)?).to_vec());
                    continue;
                }
                b'K' => {
                    overrides.link = Some(cstr(&self.read_meta(size, &path)?).to_vec());
                    continue;
                }
                _ => {}
            }
            if let Some(p) = overrides.path.take() {
                path = p;
            }
            let lossy = String::from_utf8_lossy(&path).into_owned();
            let kind = match flag {
                b'0' | 0 | b'7' => EntryKind::File,
                b'1' => EntryKind::Hardlink,
                b'2' => EntryKind::Symlink,
                b'3' => EntryKind::Char,
                b'4' => EntryKind::Block,
                b'5' => EntryKind::Dir,
                b'6' => EntryKind::Fifo,
                other => {
                    return Err(TarError::Unsupported {
                        path: lossy,
                        what: format!("type flag {:?}", char::from(other)),
                    });
                }
            };
            let kind = if kind == EntryKind::File && path.ends_with(b"/") {
                EntryKind::Dir
            } else {
                kind
            };
            while path.len() > 1 && path.ends_with(b"/") {
                path.pop();
            }
            let size = overrides.size.unwrap_or(size);
            let mtime_field = parse_number(&block[136..148], &path, "mtime")?;
            let header = Header {
                kind,
                mode: (parse_number(&block[100..108], &path, "mode")? & 0o7777) as u32,
                uid: overrides
                    .uid
                    .map_or_else(|| parse_number(&block[108..116], &path, "uid"), Ok)?,
                gid: overrides
                    .gid
                    .map_or_else(|| parse_number(&block[116..124], &path, "gid"), Ok)?,
                size: if kind == EntryKind::File { size } else { 0 },
                mtime: overrides
                    .mtime
                    .unwrap_or(i64::try_from(mtime_field).unwrap_or(i64::MAX)),
                link: overrides
                    .link
                    .take()
                    .unwrap_or_else(|| cstr(&block[157..257]).to_vec()),
                dev_major: u32::try_from(parse_number(&block[329..337], &path, "device major")?)
                    .unwrap_or(u32::MAX),
                dev_minor: u32::try_from(parse_number(&block[337..345], &path, "device minor")?)
                    .unwrap_or(u32::MAX),
                xattrs: std::mem::take(&mut overrides.xattrs),
                path,
            };
            // Hard links and others carry no content even when a size is set (some writers do).
            let content = if matches!(kind, EntryKind::File) {
                size
            } else {
                0
            };
            self.remaining = content;
            self.padding = (BLOCK as u64 - content % BLOCK as u64) % BLOCK as u64;
            self.last_path = lossy;
            return Ok(Some(header));
        }
    }

    /// Reads content of the current entry; returns 0 at its end.
    pub fn read_content(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(TarError::Truncated);
        }
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The current entry's content as a reader.
    pub fn content(&mut self) -> Content<'_, R> {
        Content { reader: self }
    }

    /// The underlying reader (after the end of the archive: for draining the rest of the stream).
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The content of the current entry of a [`TarReader`].
pub struct Content<'a, R> {
    reader: &'a mut TarReader<R>,
}

impl<R: Read> Read for Content<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read_content(buf).map_err(|e| match e {
            TarError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::UnexpectedEof, other),
        })
    }
}

fn parse_pax(data: &[u8], path: &[u8], overrides: &mut Overrides) -> Result<(), TarError> {
    let malformed = |reason: &str| TarError::Malformed {
        path: String::from_utf8_lossy(path).into_owned(),
        reason: format!("PAX header: {reason}"),
    };
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| malformed("record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("bad record length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(malformed("record length out of range"));
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| malformed("record without '='"))?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| malformed("non-UTF-8 key"))?;
        let value = &record[eq + 1..];
        let number = || -> Result<u64, TarError> {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| malformed(&format!("bad {key}")))
        };
        match key {
            "path" => overrides.path = Some(value.to_vec()),
            "linkpath" => overrides.link = Some(value.to_vec()),
            "size" => overrides.size = Some(number()?),
            "uid" => overrides.uid = Some(number()?),
            "gid" => overrides.gid = Some(number()?),
            "mtime" => {
                let text = std::str::from_utf8(value).map_err(|_| malformed("bad mtime"))?;
                let whole = text.split('.').next().unwrap_or("");
                overrides.mtime = Some(whole.parse().map_err(|_| malformed("bad mtime"))?);
            }
            _ if key.starts_with("GNU.sparse") => {
                return Err(TarError::Unsupported {
                    path: String::from_utf8_lossy(path).into_owned(),
                    what: "sparse file".into(),
                });
            }
            _ => {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    overrides.xattrs.push((name.to_owned(), value.to_vec()));
                }
            }
        }
    }
    overrides.xattrs.sort();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn round_trip(header: &Header, content: &[u8]) -> (Header, Vec<u8>) {
        let mut out = Vec::new();
        write_header(&mut out, header).unwrap();
        out.extend_from_slice(content);
        write_padding(&mut out, content.len() as u64).unwrap();
        write_end(&mut out).unwrap();
        let mut reader = TarReader::new(&out[..]);
        let read = reader.next_header().unwrap().unwrap();
        let mut data = Vec::new();
        reader.content().read_to_end(&mut data).unwrap();
        assert!(reader.next_header().unwrap().is_none());
        (read, data)
    }

    #[test]
    fn long_names_large_ids_and_xattrs_survive_a_round_trip() {
        let mut header = Header::new(vec![b'a'; 300], EntryKind::File);
        header.mode = 0o4755;
        header.uid = 5_000_000;
        header.gid = 7;
        header.size = 5;
        header.mtime = 1_700_000_000;
        header.xattrs = vec![("security.capability".into(), vec![1, 0, 0, 2, 0xff])];
        let (read, data) = round_trip(&header, b"hello");
        assert_eq!(read, header);
        assert_eq!(data, b"hello");
    }

    #[test]
    fn symlink_with_long_target_and_device_round_trip() {
        let mut link = Header::new("usr/lib/x", EntryKind::Symlink);
        link.link = vec![b'b'; 200];
        link.mode = 0o777;
        assert_eq!(round_trip(&link, b"").0, link);
        let mut dev = Header::new("dev/null", EntryKind::Char);
        dev.dev_major = 1;
        dev.dev_minor = 3;
        dev.mode = 0o666;
        assert_eq!(round_trip(&dev, b"").0, dev);
    }

    #[test]
    fn pax_header_larger_than_the_limit_is_refused() {
        let block = ustar_block(
            b"PaxHeaders.0/x",
            &Header::new("x", EntryKind::File),
            b'x',
            1 << 32,
        );
        let mut out = block.to_vec();
        write_end(&mut out).unwrap();
        let err = TarReader::new(&out[..]).next_header().unwrap_err();
        assert!(matches!(err, TarError::Malformed { .. }), "{err}");
    }

    #[test]
    fn corrupted_checksum_is_refused() {
        let mut out = Vec::new();
        write_header(&mut out, &Header::new("a", EntryKind::Dir)).unwrap();
        out[0] = b'b';
        let err = TarReader::new(&out[..]).next_header().unwrap_err();
        assert!(matches!(err, TarError::Checksum { .. }), "{err}");
    }
}
