//! Layer compression: gzip (zlib-rs, optionally in parallel blocks) and zstd, all deterministic.

use std::io::{self, Read, Write};

use oci_spec::image::MediaType;

use crate::pgzip::ParallelGzip;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip at `level` (0–9).
    Gzip {
        /// The deflate level.
        level: u32,
    },
    /// zstd at `level` (1–22).
    Zstd {
        /// The zstd level.
        level: i32,
    },
}

impl Default for Compression {
    fn default() -> Self {
        Self::GZIP
    }
}

impl Compression {
    /// The default gzip level; see `docs/benchmarks.md` for why.
    pub const GZIP: Self = Self::Gzip { level: 1 };
    /// The default zstd level; see `docs/benchmarks.md` for why.
    pub const ZSTD: Self = Self::Zstd { level: 1 };

    /// The OCI media type of a layer compressed this way.
    pub fn oci_media_type(self) -> MediaType {
        match self {
            Self::None => MediaType::ImageLayer,
            Self::Gzip { .. } => MediaType::ImageLayerGzip,
            Self::Zstd { .. } => MediaType::ImageLayerZstd,
        }
    }

    /// The compression a layer media type announces, if it is one umstage reads.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::GZIP),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Self::ZSTD),
            _ => None,
        }
    }
}

/// zstd job size for multi-threaded compression.
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// A writer compressing into `W`.
pub(crate) enum Encoder<W: Write + Send + 'static> {
    Plain(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write + Send + 'static> Encoder<W> {
    /// A compressor for `compression`; gzip and zstd use up to `threads` threads.
    pub(crate) fn new(out: W, compression: Compression, threads: usize) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::Plain(out),
            Compression::Gzip { level } => Self::Gzip(ParallelGzip::new(out, level, threads)),
            Compression::Zstd { level } => {
                let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                // zstd's multi-threaded mode cuts the input into jobs independently of the
                // worker count, so any count >= 1 gives the same bytes (single-threaded mode,
                // 0 workers, would not).
                encoder.multithread(u32::try_from(threads.max(1)).unwrap_or(1))?;
                // Fixed job size: bounds memory (jobs in flight × size) and, being constant,
                // keeps the output independent of the machine.
                encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                Self::Zstd(encoder)
            }
        })
    }

    /// Flushes everything and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Gzip(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}

/// The first bytes of a gzip stream.
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The first bytes of a zstd frame.
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
/// The first bytes of a bzip2 stream.
const BZIP2_MAGIC: &[u8] = b"BZh";
/// The first bytes of an xz stream.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

/// A reader decompressing a layer blob or an archive; the format (gzip, zstd, bzip2, xz or
/// none) is detected from its first bytes.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, reader);
    let head = io::BufRead::fill_buf(&mut reader)?;
    Ok(if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader)?)
    } else if head.starts_with(BZIP2_MAGIC) {
        Box::new(bzip2::bufread::MultiBzDecoder::new(reader))
    } else if head.starts_with(XZ_MAGIC) {
        Box::new(xz2::bufread::XzDecoder::new_multi_decoder(reader))
    } else {
        Box::new(reader)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn compress(data: &[u8], compression: Compression, threads: usize) -> Vec<u8> {
        let mut encoder = Encoder::new(Vec::new(), compression, threads).unwrap();
        for chunk in data.chunks(100_000) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn bzip2_and_xz_streams_are_detected_and_read() {
        let data = b"a tar would be here".repeat(100);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&data).unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        for blob in [bz.finish().unwrap(), xz.finish().unwrap()] {
            let mut back = Vec::new();
            decompress(&blob[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn output_does_not_depend_on_the_thread_count_across_many_jobs() {
        // 12 MB: several zstd jobs and many gzip blocks, half text, half pseudo-random.
        let mut x = 7u64;
        let data: Vec<u8> = (0..12_000_000u32)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 2_000_000 < 1_000_000 {
                    b"layer data "[(i % 11) as usize]
                } else {
                    x as u8
                }
            })
            .collect();
        for compression in [Compression::GZIP, Compression::ZSTD] {
            let one = compress(&data, compression, 1);
            assert_eq!(one, compress(&data, compression, 2), "{compression:?}");
            assert_eq!(one, compress(&data, compression, 4), "{compression:?}");
            let mut back = Vec::new();
            decompress(&one[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data);
        }
    }
}
