//! Parallel gzip in the manner of pigz: the input is cut into fixed-size blocks, each deflated on
//! its own (primed with the previous block's last 32 KiB) and ended with a sync flush, and the
//! pieces are joined into one gzip member. Block boundaries depend only on the input, so the
//! output is the same whatever the thread count.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

const BLOCK_SIZE: usize = 1 << 20;
const DICT_SIZE: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    seq: u64,
    dict: Vec<u8>,
    input: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<Vec<u8>>);

/// A deterministic, optionally multi-threaded gzip writer.
pub(crate) struct ParallelGzip<W: Write> {
    out: W,
    level: u32,
    input: Vec<u8>,
    dict: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    next_seq: u64,
    next_write: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pool: Option<Pool>,
    header_written: bool,
}

struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    limit: usize,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Byte entropy (bits per byte) above which a block is stored rather than deflated: such data
/// (already compressed or random) does not shrink, and deflating it is the slowest case.
const STORE_ENTROPY: f64 = 7.95;

/// Shannon entropy of the byte histogram of `data`, in bits per byte.
fn byte_entropy(data: &[u8]) -> f64 {
    let mut counts = [0u64; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let total = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

fn deflate_block(level: u32, dict: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    // Depends only on the block's bytes, so the output stays deterministic.
    let level = if input.len() >= 64 * 1024 && byte_entropy(input) > STORE_ENTROPY {
        0
    } else {
        level.min(9)
    };
    let mut compress = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        compress.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(input.len() + input.len() / 64 + 1024);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
        let status = compress
            .compress_vec(&input[consumed.min(input.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = compress.total_in() as usize == input.len();
        match status {
            Status::StreamEnd => break,
            _ if !last && all_in && out.len() < out.capacity() => break,
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
    Ok(out)
}

impl<W: Write> ParallelGzip<W> {
    /// A gzip writer at `level` using `threads` threads (1: compress on the caller's thread).
    pub(crate) fn new(out: W, level: u32, threads: usize) -> Self {
        let pool = (threads > 1).then(|| {
            let (jobs, job_rx) = sync_channel::<Job>(threads);
            let (done_tx, done) = sync_channel::<Done>(threads * 2);
            let job_rx = Arc::new(Mutex::new(job_rx));
            let workers = (0..threads)
                .map(|_| {
                    let job_rx = Arc::clone(&job_rx);
                    let done_tx = done_tx.clone();
                    std::thread::spawn(move || {
                        loop {
                            let job = match job_rx.lock() {
                                Ok(rx) => rx.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            let result = deflate_block(level, &job.dict, &job.input, job.last);
                            if done_tx.send((job.seq, result)).is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            Pool {
                jobs: Some(jobs),
                done,
                workers,
                in_flight: 0,
                limit: threads * 2,
            }
        });
        Self {
            out,
            level,
            input: Vec::with_capacity(BLOCK_SIZE),
            dict: Vec::new(),
            crc: crc32fast::Hasher::new(),
            total: 0,
            next_seq: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            pool,
            header_written: false,
        }
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(block) = self.pending.remove(&self.next_write) {
            self.out.write_all(&block)?;
            self.next_write += 1;
        }
        Ok(())
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let Some(pool) = self.pool.as_mut() else {
            return Ok(());
        };
        let (seq, result) = pool
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        pool.in_flight -= 1;
        self.pending.insert(seq, result?);
        self.write_ready()
    }

    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&HEADER)?;
            self.header_written = true;
        }
        let input = std::mem::replace(&mut self.input, Vec::with_capacity(BLOCK_SIZE));
        let dict = std::mem::take(&mut self.dict);
        self.dict = input[input.len().saturating_sub(DICT_SIZE)..].to_vec();
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.pool.as_mut() {
            None => {
                let block = deflate_block(self.level, &dict, &input, last)?;
                self.out.write_all(&block)?;
                self.next_write += 1;
            }
            Some(pool) => {
                if pool.in_flight >= pool.limit {
                    self.collect_one()?;
                }
                let Some(pool) = self.pool.as_mut() else {
                    return Ok(());
                };
                let jobs = pool
                    .jobs
                    .as_ref()
                    .ok_or_else(|| io::Error::other("gzip pool closed"))?;
                jobs.send(Job {
                    seq,
                    dict,
                    input,
                    last,
                })
                .map_err(|_| io::Error::other("gzip worker stopped"))?;
                pool.in_flight += 1;
            }
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.pool.as_ref().is_some_and(|p| p.in_flight > 0) {
            self.collect_one()?;
        }
        self.pool = None;
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total as u32).to_le_bytes())?;
        self.out.flush()?;
        let Self { out, .. } = self;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.input.len());
        self.input.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.total += n as u64;
        if self.input.len() == BLOCK_SIZE {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn gzip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut writer = ParallelGzip::new(Vec::new(), 6, threads);
        for chunk in data.chunks(77_777) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn output_is_valid_gzip_and_independent_of_thread_count() {
        let data: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8)
            .collect();
        let one = gzip(&data, 1);
        assert_eq!(one, gzip(&data, 2));
        assert_eq!(one, gzip(&data, 5));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&one[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn random_blocks_are_stored_and_text_is_compressed() {
        let mut x = 1u64;
        let random: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(byte_entropy(&random) > STORE_ENTROPY);
        let out = gzip(&random, 2);
        assert!(out.len() < random.len() + random.len() / 100);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, random);
        let text = b"the quick brown fox jumps over the lazy dog\n".repeat(50_000);
        assert!(gzip(&text, 2).len() < text.len() / 20);
    }

    #[test]
    fn empty_input_gives_valid_gzip() {
        let out = gzip(b"", 3);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert!(back.is_empty());
    }
}
