//! Gratuitous ARP: when a floating IP appears on a node (new, or moved from
//! another node), the node announces it on the external network at once so
//! upstream ARP caches stop pointing at the old node.
//!
//! The only unsafe code in kube-dvr: an `AF_PACKET` socket needs a
//! `sockaddr_ll`, which neither std nor nix builds safely.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;

use crate::plan::model::MacAddr;

/// An ARP request announcing `ip` at `mac` (sender = target = `ip`),
/// broadcast, as Linux' `arping -U` sends it.
pub fn frame(ip: Ipv4Addr, mac: MacAddr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]); // destination: broadcast
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()); // ARP
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac.0);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Send `count` gratuitous ARPs for each of `ips` out of `ifname` in the
/// calling thread's network namespace, on one socket (closing a packet
/// socket waits for an RCU grace period: milliseconds, so never one per
/// address).
pub fn announce(ifname: &str, ips: &[Ipv4Addr], mac: MacAddr, count: usize) -> io::Result<()> {
    let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut result = Ok(());
    for f in ips
        .iter()
        .flat_map(|ip| std::iter::repeat_n(frame(*ip, mac), count))
    {
        // SAFETY: `f` and `addr` outlive the call; lengths match the buffers.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            result = Err(io::Error::last_os_error());
            break;
        }
    }
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_a_gratuitous_arp_request() {
        let f = frame(
            "203.0.113.100".parse().unwrap(),
            MacAddr([2, 0, 0, 0, 0, 1]),
        );
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[203, 0, 113, 100]);
        assert_eq!(
            &f[38..42],
            &[203, 0, 113, 100],
            "target = sender: gratuitous"
        );
    }
}
