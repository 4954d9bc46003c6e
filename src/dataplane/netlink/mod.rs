//! A small synchronous rtnetlink client: one socket per network namespace.
//!
//! A netlink socket stays bound to the namespace it was created in, so
//! [`Netlink::open_in`] creates it on a thread inside the namespace and the
//! socket can then be used from any thread. Requests carry
//! `NLM_F_REQUEST|NLM_F_ACK` and are answered one by one (a request costs
//! ~15 µs in the kernel; the round trip adds little); dumps use `NLM_F_DUMP`.
//!
//! The types here are kernel-facing (interface indexes, not names); the
//! engine maps them onto [`crate::plan::model`].
use std::io;
use std::path::Path;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};

use crate::plan::model::MacAddr;

mod link;
mod objects;
mod types;

pub use types::*;

const RECV_BUF: usize = 1 << 16;
/// Bound on one send or receive on a netlink socket (`SO_RCVTIMEO`,
/// `SO_SNDTIMEO`): the kernel answers in microseconds to milliseconds, even a
/// dump of a big node in well under a second per datagram.
const RECV_TIMEOUT_SECS: i64 = 10;

/// An rtnetlink socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A connected netlink socket of `protocol` in the calling thread's
/// namespace, with a receive buffer of `rx_buf` bytes, set up as every
/// kube-dvr netlink client needs it (rtnetlink here, ctnetlink in
/// `dataplane::conntrack`).
pub(super) fn socket_here(protocol: isize, rx_buf: usize) -> io::Result<Socket> {
    let mut sock = Socket::new(protocol)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    // Short acks (no echo of the request) and room for big dumps.
    let _ = sock.set_cap_ack(true);
    let _ = sock.set_ext_ack(true);
    let _ = sock.set_rx_buf_sz(rx_buf);
    // Bound every wait for the kernel: a request that gets no answer
    // fails the pass (retried) instead of hanging the agent.
    let tv = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
    setsockopt(&sock, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
    setsockopt(&sock, sockopt::SendTimeout, &tv).map_err(io::Error::from)?;
    Ok(sock)
}

/// Receive datagrams on `sock` (into `buf`) and hand every netlink message
/// in them, header included, to `handle`, until a datagram in which
/// `handle` said done (the rest of that datagram is still handed over).
pub(super) fn recv_messages(
    sock: &Socket,
    buf: &mut Vec<u8>,
    mut handle: impl FnMut(&[u8]) -> io::Result<bool>,
) -> io::Result<()> {
    const HEADER: usize = 16;
    loop {
        buf.clear();
        buf.reserve(RECV_BUF);
        let n = sock.recv(buf, 0)?;
        if n > buf.len() {
            return Err(io::Error::other("netlink message truncated"));
        }
        let mut off = 0;
        let mut done = false;
        while off + HEADER <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            if len < HEADER || off + len > buf.len() {
                return Err(io::Error::other("malformed netlink message"));
            }
            done |= handle(&buf[off..off + len])?;
            off += (len + 3) & !3;
        }
        if done {
            return Ok(());
        }
    }
}

impl Netlink {
    /// Open a socket in the calling thread's namespace.
    pub fn open_here() -> io::Result<Netlink> {
        Ok(Netlink {
            sock: socket_here(NETLINK_ROUTE, 4 << 20)?,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Open a socket inside the namespace file at `ns`.
    pub fn open_in(ns: &Path) -> io::Result<Netlink> {
        super::netns::run_in(ns, Netlink::open_here)?
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut out = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut out);
        self.sock.send(&out, 0)?;
        Ok(self.seq)
    }

    /// Receive datagrams until `handle` says the exchange `seq` is done.
    fn recv_until(
        &mut self,
        seq: u32,
        mut handle: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> io::Result<bool>,
    ) -> io::Result<()> {
        recv_messages(&self.sock, &mut self.buf, |m| {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m)
                .map_err(|e| io::Error::other(format!("netlink decode: {e}")))?;
            if msg.header.sequence_number != seq {
                // A late answer to an earlier exchange: ignore.
                return Ok(false);
            }
            handle(msg.payload)
        })
    }

    /// Send one request and wait for its ack.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let mut result = Ok(());
        self.recv_until(seq, |p| match p {
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    result = Err(e.to_io());
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        result
    }

    /// Dump all objects of one kind.
    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)?;
        let mut out = Vec::new();
        let mut err = None;
        self.recv_until(seq, |p| match p {
            NetlinkPayload::InnerMessage(m) => {
                out.push(m);
                Ok(false)
            }
            NetlinkPayload::Done(_) => Ok(true),
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    err = Some(e.to_io());
                }
                Ok(true)
            }
            _ => Ok(false),
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

fn ok_if_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_exists(&e) => Ok(()),
        r => r,
    }
}

fn ok_if_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if is_gone(&e) => Ok(()),
        r => r,
    }
}

fn mac_of(b: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(b).ok().map(MacAddr)
}

/// Append netlink attribute `ty` with `payload`, padded to 4 bytes (for the
/// hand-built netfilter messages: conntrack, the gateway fence).
pub(super) fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Append nested attribute `ty` whose content `fill` writes.
pub(super) fn nested(out: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    const NLA_F_NESTED: u16 = 0x8000;
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = (out.len() - start) as u16;
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    out[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
}
