//! Socket receive buffers, for the DNS listeners and the ICMP prober.
//!
//! Why this exists: both need more than the kernel's default (about 200 KiB), and asking
//! takes two tries: SO_RCVBUFFORCE where the process may (CAP_NET_ADMIN, as NSD does), else
//! SO_RCVBUF, which the kernel caps at net.core.rmem_max without saying so. The size granted
//! is read back, so a capped buffer can be reported.

use std::os::fd::RawFd;

/// Asks for a receive buffer of `bytes` on `fd`. Returns the size the kernel now keeps, as
/// `getsockopt(SO_RCVBUF)` reports it: twice the size granted, the other half being its
/// bookkeeping. None if neither option could be set.
pub fn enlarge(fd: RawFd, bytes: usize) -> Option<usize> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let set = |option: libc::c_int| {
        // SAFETY: `fd` is an open socket owned by the caller; the value is a c_int that lives
        // across the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        return None;
    }
    let mut kept: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above; `kept` and `length` live across the call.
    let read = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of_mut!(kept).cast(),
            &mut length,
        )
    };
    (read == 0).then_some(kept.max(0) as usize)
}

/// Whether `kept` (as `enlarge` returns it) is less than `bytes` were asked for.
pub fn capped(kept: usize, bytes: usize) -> bool {
    kept / 2 < bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_buffer_is_granted_and_read_back() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // 64 KiB is below every kernel's cap.
        let kept = enlarge(socket.as_raw_fd(), 64 << 10).expect("SO_RCVBUF");
        assert!(!capped(kept, 64 << 10), "kept {kept}");
        assert!(capped(kept, 1 << 30));
    }
}
