//! The floor for `bench/speed.sh`: a bare recvmmsg/sendmmsg loop that sends each DNS query
//! back with the QR bit set and does no other work. Its CPU per packet is the kernel's cost
//! on this machine, the practical limit for any UDP server here.
//!
//! Usage: echo_floor ADDRESS   (loopback only; runs until killed)

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

const BATCH: usize = 64;
const PACKET: usize = 4096;

fn main() {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .expect("ADDRESS")
        .parse()
        .expect("address:port");
    assert!(address.ip().is_loopback(), "loopback only");
    let socket = UdpSocket::bind(address).unwrap();
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; PACKET]; BATCH];
    // SAFETY: zeroed sockaddr storage is valid.
    let mut sources: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        let mut iovecs: Vec<libc::iovec> = buffers
            .iter_mut()
            .map(|buffer| libc::iovec {
                iov_base: buffer.as_mut_ptr().cast(),
                iov_len: PACKET,
            })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(sources.iter_mut())
            .map(|(iovec, source)| {
                // SAFETY: zeroed msghdr is valid; the pointers are set to live buffers.
                let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                header.msg_hdr.msg_iov = iovec;
                header.msg_hdr.msg_iovlen = 1;
                header.msg_hdr.msg_name = (source as *mut libc::sockaddr_storage).cast();
                header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                header
            })
            .collect();
        // SAFETY: the headers point at live buffers for the duration of the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received <= 0 {
            continue;
        }
        for header in headers.iter_mut().take(received as usize) {
            let length = header.msg_len as usize;
            // SAFETY: the iovec points into `buffers`, which outlives this loop body.
            let packet = unsafe {
                std::slice::from_raw_parts_mut(
                    (*header.msg_hdr.msg_iov).iov_base.cast::<u8>(),
                    length,
                )
            };
            if length > 2 {
                packet[2] |= 0x80;
            }
            // SAFETY: as above.
            unsafe { (*header.msg_hdr.msg_iov).iov_len = length };
        }
        // SAFETY: the headers point at live buffers and the sources recvmmsg filled.
        unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), received as u32, 0) };
    }
}
