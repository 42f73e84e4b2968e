//! Unix socket addresses: `bind` makes a socket file at the path of a `sockaddr_un`, and
//! `connect` opens the one there, so that path is the guest's like any other. The kernel
//! takes at most 108 bytes in `sun_path`, which a host path in a snapshot can outgrow: it is
//! then given relative to the caller's working directory where that is shorter, and the call
//! fails with `ENAMETOOLONG` where nothing fits (a socket is never made on the host instead).

/// `sun_path`'s size, with its NUL.
const SUN_PATH: usize = 108;

/// `sun_family`'s size, before `sun_path`.
const FAMILY: usize = std::mem::size_of::<libc::sa_family_t>();

/// The path a `sockaddr_un` of `len` bytes names, if it names one (an abstract or unnamed
/// address, or another family, names none).
pub(super) fn path_of(addr: &[u8]) -> Option<Vec<u8>> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]);
    if i32::from(family) != libc::AF_UNIX {
        return None;
    }
    let path = addr.get(FAMILY..)?;
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    (end > 0).then(|| path[..end].to_vec())
}

/// A `sockaddr_un` for the host path `host` (or, if shorter, for its path relative to the
/// caller's working directory `cwd`); `ENAMETOOLONG` where neither fits.
pub(super) fn address(host: &[u8], cwd: &[u8]) -> Result<Vec<u8>, i32> {
    let relative = host
        .strip_prefix(cwd)
        .and_then(|rest| rest.strip_prefix(b"/"))
        .filter(|rest| !rest.is_empty());
    let path = match relative {
        Some(rest) if host.len() >= SUN_PATH => rest,
        _ => host,
    };
    if path.len() >= SUN_PATH {
        return Err(libc::ENAMETOOLONG);
    }
    let mut addr = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    addr.extend_from_slice(path);
    addr.push(0);
    Ok(addr)
}

/// The size of a `sockaddr_un`, the most a call's address is read as.
pub(super) const SIZE: usize = FAMILY + SUN_PATH;

#[cfg(test)]
mod tests {
    use super::*;

    fn sockaddr(path: &[u8]) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        a
    }

    #[test]
    fn named_unix_addresses_are_paths_and_long_ones_go_relative_or_fail() {
        assert_eq!(
            path_of(&sockaddr(b"/run/x.sock\0")),
            Some(b"/run/x.sock".to_vec())
        );
        assert_eq!(path_of(&sockaddr(b"rel")), Some(b"rel".to_vec()));
        assert_eq!(path_of(&sockaddr(b"\0abstract")), None);
        assert_eq!(path_of(&sockaddr(b"")), None);
        assert_eq!(path_of(&(libc::AF_INET as u16).to_ne_bytes()), None);
        assert_eq!(address(b"/s/run/x", b"/"), Ok(sockaddr(b"/s/run/x\0")));
        let long = [b"/s/".as_slice(), &[b'd'; 120], b"/x.sock"].concat();
        let dir = &long[..long.len() - 7];
        assert_eq!(address(&long, dir), Ok(sockaddr(b"x.sock\0")));
        assert_eq!(address(&long, b"/s"), Err(libc::ENAMETOOLONG));
    }
}
