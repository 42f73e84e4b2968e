//! Whether a stream is a tar archive, by content: ADD extracts such a source and a context
//! on standard input is unpacked when it is one, so both ask the same question here.

use std::io::Read;

/// Whether `stream` holds a tar archive, plain or compressed (gzip, bzip2, xz, zstd): its
/// first 512 bytes, decompressed, are a ustar header. As BuildKit, a compressed stream that
/// is not a tar inside (a plain `.gz`) is not an archive.
pub fn is_tar(stream: impl Read) -> bool {
    let Ok(mut reader) = umstage_oci::compress::decompress(stream) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match reader.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == head.len() && &head[257..262] == b"ustar"
}
