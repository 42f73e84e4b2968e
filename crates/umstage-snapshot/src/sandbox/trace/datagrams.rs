//! Unix socket addresses given with the data (`sendto`, `sendmsg`: a datagram to a socket
//! named by its path) translated as `bind`'s and `connect`'s are (see `sockets`). A
//! `sendmsg`'s address is in its message header, in the caller's memory: the call is given a
//! copy of the header naming the translated address instead, and its own is left untouched.

use std::os::unix::ffi::OsStrExt;

use libc::user_regs_struct;
use nix::unistd::Pid;

use super::context::Context;
use super::errno::errno;
use super::memory::{self, Scratch};
use super::paths::Follow;
use super::regs::{arg, set_arg};
use super::sockets;

/// `struct msghdr`: `msg_name` at 0 (8 bytes), `msg_namelen` at 8 (4 bytes).
const MSGHDR: usize = std::mem::size_of::<libc::msghdr>();

impl Context {
    /// The `sockaddr_un` for the host path of the one in `bytes` (the guest's), or `None`
    /// where `bytes` names no path (another family, an abstract or unnamed address, or a
    /// path relative to something outside the guest's view).
    pub(super) fn unix_address(
        &self,
        pid: Pid,
        bytes: &[u8],
        follow: Follow,
    ) -> Result<Option<Vec<u8>>, i32> {
        let Some(path) = sockets::path_of(bytes) else {
            return Ok(None);
        };
        let Some(guest) = self.root.absolute(pid, libc::AT_FDCWD, &path) else {
            return Ok(None);
        };
        let host = self.root.to_host(pid, &guest, follow)?;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).map_err(errno)?;
        sockets::address(&host, cwd.as_os_str().as_bytes()).map(Some)
    }

    /// `sendmsg`'s header (at argument `msg`) replaced by a copy naming the translated
    /// address; whether it named one.
    pub(super) fn sendmsg(
        &self,
        pid: Pid,
        regs: &mut user_regs_struct,
        scratch: &mut Scratch,
        msg: usize,
    ) -> Result<bool, i32> {
        let at = arg(regs, msg);
        if at == 0 {
            return Ok(false);
        }
        let mut header = memory::read(pid, at, MSGHDR).map_err(errno)?;
        if header.len() < MSGHDR {
            return Err(libc::EFAULT);
        }
        let name = u64::from_ne_bytes(header[0..8].try_into().map_err(|_| libc::EFAULT)?);
        let len = u32::from_ne_bytes(header[8..12].try_into().map_err(|_| libc::EFAULT)?);
        if name == 0 {
            return Ok(false);
        }
        let bytes = memory::read(pid, name, (len as usize).min(sockets::SIZE)).map_err(errno)?;
        let Some(new) = self.unix_address(pid, &bytes, Follow::Yes)? else {
            return Ok(false);
        };
        let new_at = scratch.put(&new).map_err(errno)?;
        header[0..8].copy_from_slice(&new_at.to_ne_bytes());
        header[8..12].copy_from_slice(&(new.len() as u32).to_ne_bytes());
        let header_at = scratch.put(&header).map_err(errno)?;
        set_arg(regs, msg, header_at);
        Ok(true)
    }
}
