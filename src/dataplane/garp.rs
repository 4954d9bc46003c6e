//! ARP on the external network, over `AF_PACKET` sockets.
//!
//! - Gratuitous ARP: when a floating IP or a SNAT gateway appears on a node
//!   (new, or moved from another node), the node announces it on the
//!   external network at once so upstream ARP caches stop pointing at the
//!   old node.
//! - [`ArpProbe`]: whether the external network's gateway answers ARP from
//!   this node's attachment, for SNAT gateway readiness
//!   (`agent::probe`).
//!
//! Unsafe code (one of two places in kube-dvr, with `nft::exec`'s
//! libnftables calls): an `AF_PACKET` socket needs a `sockaddr_ll`, which
//! neither std nor nix builds safely.
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

/// An ARP probe in the sense of RFC 5227 (sender address 0.0.0.0, so no
/// cache on the segment learns anything from it) for `target`, from `mac`.
pub fn probe_frame(target: Ipv4Addr, mac: [u8; 6]) -> [u8; 42] {
    let mut f = frame(Ipv4Addr::UNSPECIFIED, MacAddr(mac));
    f[38..42].copy_from_slice(&target.octets());
    f
}

/// Whether `f` is an ARP reply from `target` to `mac`.
pub fn is_reply(f: &[u8], target: Ipv4Addr, mac: [u8; 6]) -> bool {
    f.len() >= 42
        && f[12..14] == [0x08, 0x06]
        && f[20..22] == [0, 2]
        && f[28..32] == target.octets()
        && f[32..38] == mac
}

/// A packet socket that asks one interface's segment whether an address
/// answers ARP: [`ArpProbe::send`] a probe from the interface's own MAC,
/// [`ArpProbe::answered`] later. Non-blocking; bound to the interface in
/// the network namespace of the thread that opened it.
pub struct ArpProbe {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl ArpProbe {
    /// Open on `ifname` in the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<ArpProbe> {
        use std::os::fd::FromRawFd;
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)? as i32;
        let proto = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2) call; the fd is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as i32,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr(ifindex, proto, [0; 6]);
        // SAFETY: `addr` outlives the call; the length is its size.
        let r = unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ArpProbe { fd, ifindex })
    }

    /// The interface's MAC now (a bridge's changes with its ports).
    fn mac(&self) -> io::Result<[u8; 6]> {
        use std::os::fd::AsRawFd;
        // SAFETY: zeroed sockaddr_ll is valid; getsockname writes at most
        // `len` bytes into it.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let r = unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&addr.sll_addr[..6]);
        Ok(mac)
    }

    /// Broadcast an ARP probe for `target`.
    pub fn send(&self, target: Ipv4Addr) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let f = probe_frame(target, self.mac()?);
        let proto = (libc::ETH_P_ARP as u16).to_be();
        let addr = sockaddr(self.ifindex, proto, [0xff; 6]);
        // SAFETY: `f` and `addr` outlive the call; lengths match the buffers.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether `target` answered this interface since the last call: reads
    /// every frame waiting (at most 1,024: a storm of ARP on the segment
    /// cannot hold the caller).
    pub fn answered(&self, target: Ipv4Addr) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let mac = self.mac()?;
        let mut buf = [0u8; 128];
        let mut seen = false;
        for _ in 0..1024 {
            // SAFETY: `buf` outlives the call; the length is its size.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(e);
            }
            seen |= is_reply(&buf[..n as usize], target, mac);
        }
        Ok(seen)
    }
}

fn sockaddr(ifindex: i32, proto: u16, dst: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst);
    addr
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

    #[test]
    fn probes_say_nothing_about_the_sender_and_replies_are_matched() {
        let mac = [2, 0, 0, 0, 0, 9];
        let gw: Ipv4Addr = "203.0.113.1".parse().unwrap();
        let f = probe_frame(gw, mac);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[28..32], &[0, 0, 0, 0], "sender 0.0.0.0 (RFC 5227)");
        assert_eq!(&f[38..42], &gw.octets());
        assert!(!is_reply(&f, gw, mac), "a request is no reply");
        // The gateway's reply: op 2, sender gw, target our MAC.
        let mut r = f;
        r[20..22].copy_from_slice(&[0, 2]);
        r[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        r[28..32].copy_from_slice(&gw.octets());
        r[32..38].copy_from_slice(&mac);
        assert!(is_reply(&r, gw, mac));
        assert!(!is_reply(&r, "203.0.113.2".parse().unwrap(), mac));
        assert!(!is_reply(&r, gw, [2, 0, 0, 0, 0, 8]), "another node's");
        assert!(!is_reply(&r[..41], gw, mac));
    }
}
