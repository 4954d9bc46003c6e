//! Conntrack over netlink (ctnetlink, `NETLINK_NETFILTER`), without the
//! `conntrack` tool.
//!
//! Removing a floating IP must end the flows NAT'd through it (OSSN-0020).
//! `conntrack -D --orig-dst A` scans the whole table in the kernel for each
//! address and costs a process each (twice per address: original and reply
//! destination), so removing 1,000 addresses cost 2,000 processes and 2,000
//! table scans. Here a removal is one dump of the namespace's IPv4 table,
//! a match in memory against every removed address at once, and the deletes
//! sent in batches of many requests per datagram.
//!
//! An entry is deleted by its original tuple and zone exactly as the dump
//! gave them (the attributes are sent back verbatim), so every protocol
//! (TCP, UDP, ICMP with its id) is handled alike and nothing is parsed but
//! the two destination addresses.
//!
//! Message layout: `nlmsghdr`, `nfgenmsg` (family `AF_INET`, version 0,
//! resource id 0), attributes (`include/uapi/linux/netfilter/nfnetlink_conntrack.h`).
use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::netlink::{attr, nested};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const NLA_TYPE_MASK: u16 = 0x3fff;
const AF_INET: u8 = 2;
const IPPROTO_UDP: u8 = 17;

const HEADER: usize = 16;
const NFGENMSG: usize = 4;
/// Requests per datagram: bounded so the acks of one batch always fit in
/// the receive buffer.
const BATCH_BYTES: usize = 64 << 10;
const RECV_BUF: usize = 1 << 16;
/// Retries of a dump the kernel marked inconsistent (`NLM_F_DUMP_INTR`).
const DUMP_TRIES: usize = 3;

/// One IPv4 conntrack entry: enough to match it and to delete it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The `CTA_TUPLE_ORIG` attribute as dumped (header included).
    orig: Vec<u8>,
    /// The `CTA_ZONE` attribute as dumped, if any.
    zone: Option<Vec<u8>>,
    pub orig_dst: Option<Ipv4Addr>,
    pub reply_dst: Option<Ipv4Addr>,
}

/// What [`remove_destinations`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Entries in the table when it was dumped.
    pub scanned: u64,
    /// Entries deleted (gone already by the time of the delete included).
    pub deleted: u64,
}

/// A ctnetlink socket bound to one network namespace.
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    /// Open a socket in the calling thread's namespace (run it inside
    /// `netns::run_in` for another namespace).
    pub fn open_here() -> io::Result<Conntrack> {
        Ok(Conntrack {
            sock: super::netlink::socket_here(NETLINK_NETFILTER, 8 << 20)?,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Every IPv4 entry of the namespace.
    pub fn dump(&mut self) -> io::Result<Vec<Entry>> {
        Ok(self.dump_where(|_, _| true)?.0)
    }

    /// The IPv4 entries of the namespace for which `want(original
    /// destination, reply destination)` holds, and how many entries the
    /// table had. Only the wanted ones are copied out of the dump.
    pub fn dump_where(
        &mut self,
        want: impl Fn(Option<Ipv4Addr>, Option<Ipv4Addr>) -> bool,
    ) -> io::Result<(Vec<Entry>, u64)> {
        for _ in 0..DUMP_TRIES {
            let mut out = Vec::new();
            let seq = self.push(&mut out, IPCTNL_MSG_CT_GET, NLM_F_DUMP, &[]);
            self.sock.send(&out, 0)?;
            let mut entries = Vec::new();
            let mut scanned = 0;
            let mut interrupted = false;
            self.recv(|m| {
                if m.seq != seq {
                    return Ok(false);
                }
                match m.kind {
                    NLMSG_DONE => Ok(true),
                    NLMSG_ERROR => error_of(m.payload).map(|()| true),
                    k if k == ct_type(IPCTNL_MSG_CT_NEW) => {
                        interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                        scanned += 1;
                        entries.extend(parse_entry(m.payload, &want));
                        Ok(false)
                    }
                    _ => Ok(false),
                }
            })?;
            if !interrupted {
                return Ok((entries, scanned));
            }
        }
        Err(io::Error::other(
            "conntrack dump interrupted repeatedly (table changing)",
        ))
    }

    /// Delete `entries`, many requests per datagram. An entry already gone
    /// counts as deleted. Returns how many were deleted.
    pub fn delete(&mut self, entries: &[Entry]) -> io::Result<u64> {
        let mut deleted = 0;
        for chunk in batches(entries.iter().map(|e| e.orig.len() + e.zone_len())) {
            let mut out = Vec::with_capacity(BATCH_BYTES + 512);
            let mut seqs = HashSet::new();
            for e in &entries[chunk] {
                let mut attrs = e.orig.clone();
                if let Some(z) = &e.zone {
                    attrs.extend_from_slice(z);
                }
                seqs.insert(self.push(&mut out, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, &attrs));
            }
            deleted += self.send_batch(&out, seqs, |code| code == libc::ENOENT)?;
        }
        Ok(deleted)
    }

    /// Create UDP entries `src:sport → dst:dport` (reply `dst → src`) with a
    /// timeout of `timeout_secs`: for tests and benchmarks, which need tens
    /// of thousands of entries faster than `conntrack -I` can make them.
    pub fn insert_udp(
        &mut self,
        flows: &[(Ipv4Addr, u16, Ipv4Addr, u16)],
        timeout_secs: u32,
    ) -> io::Result<u64> {
        let mut made = 0;
        for chunk in batches(flows.iter().map(|_| 96)) {
            let mut out = Vec::with_capacity(BATCH_BYTES + 512);
            let mut seqs = HashSet::new();
            for &(src, sport, dst, dport) in &flows[chunk] {
                let mut a = Vec::new();
                tuple(&mut a, CTA_TUPLE_ORIG, src, sport, dst, dport);
                tuple(&mut a, CTA_TUPLE_REPLY, dst, dport, src, sport);
                attr(&mut a, CTA_TIMEOUT, &timeout_secs.to_be_bytes());
                let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
                seqs.insert(self.push(&mut out, IPCTNL_MSG_CT_NEW, flags, &a));
            }
            made += self.send_batch(&out, seqs, |_| false)?;
        }
        Ok(made)
    }

    /// Append one request to `out`; returns its sequence number.
    fn push(&mut self, out: &mut Vec<u8>, msg: u16, flags: u16, attrs: &[u8]) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let len = HEADER + NFGENMSG + attrs.len();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&ct_type(msg).to_ne_bytes());
        out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&[AF_INET, 0, 0, 0]);
        out.extend_from_slice(attrs);
        self.seq
    }

    /// Send a datagram of acked requests and wait for every ack. An error
    /// for which `fine(errno)` holds counts as done; any other fails the
    /// batch (after all acks are in). Returns how many succeeded.
    fn send_batch(
        &mut self,
        out: &[u8],
        mut seqs: HashSet<u32>,
        fine: impl Fn(i32) -> bool,
    ) -> io::Result<u64> {
        if seqs.is_empty() {
            return Ok(0);
        }
        self.sock.send(out, 0)?;
        let mut ok = 0;
        let mut first_err = None;
        self.recv(|m| {
            if m.kind == NLMSG_ERROR && seqs.remove(&m.seq) {
                match error_of(m.payload) {
                    Ok(()) => ok += 1,
                    Err(e) if e.raw_os_error().is_some_and(&fine) => ok += 1,
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            Ok(seqs.is_empty())
        })?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(ok),
        }
    }

    /// Receive datagrams and hand each message to `handle` until it says
    /// done.
    fn recv(&mut self, mut handle: impl FnMut(Msg<'_>) -> io::Result<bool>) -> io::Result<()> {
        super::netlink::recv_messages(&self.sock, &mut self.buf, |b| {
            handle(Msg {
                kind: u16::from_ne_bytes(b[4..6].try_into().unwrap()),
                flags: u16::from_ne_bytes(b[6..8].try_into().unwrap()),
                seq: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
                payload: &b[HEADER..],
            })
        })
    }
}

impl Entry {
    fn zone_len(&self) -> usize {
        self.zone.as_ref().map_or(0, Vec::len)
    }
}

/// Delete the entries whose original or reply destination is one of `ips`
/// (inbound DNAT'd flows and outbound SNAT'd ones), in the calling thread's
/// namespace: one dump, batched deletes.
pub fn remove_destinations(ips: &[Ipv4Addr]) -> io::Result<Removed> {
    if ips.is_empty() {
        return Ok(Removed::default());
    }
    let gone: HashSet<Ipv4Addr> = ips.iter().copied().collect();
    let mut ct = Conntrack::open_here()?;
    let hit = |a: Option<Ipv4Addr>| a.is_some_and(|a| gone.contains(&a));
    let (matching, scanned) = ct.dump_where(|o, r| hit(o) || hit(r))?;
    Ok(Removed {
        scanned,
        deleted: ct.delete(&matching)?,
    })
}

struct Msg<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Index ranges of consecutive items whose sizes add up to at most
/// [`BATCH_BYTES`] (at least one item each).
fn batches(sizes: impl Iterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes, mut i) = (0, 0, 0);
    for s in sizes {
        let s = s + HEADER + NFGENMSG;
        if i > start && bytes + s > BATCH_BYTES {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += s;
        i += 1;
    }
    if i > start {
        out.push(start..i);
    }
    out
}

/// The errno of an `NLMSG_ERROR` payload (0 = ack).
fn error_of(payload: &[u8]) -> io::Result<()> {
    let code = payload
        .get(0..4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        .ok_or_else(|| io::Error::other("short netlink error message"))?;
    match code {
        0 => Ok(()),
        c => Err(io::Error::from_raw_os_error(-c)),
    }
}

/// Attributes in `buf`: (type without flags, payload, the whole attribute).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let b = buf.get(off..)?;
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        off += align(len);
        Some((ty, &b[4..len], &b[..len]))
    })
}

/// The entry in a dumped message, if `want` its destinations (copied out
/// only then).
fn parse_entry(
    payload: &[u8],
    want: impl Fn(Option<Ipv4Addr>, Option<Ipv4Addr>) -> bool,
) -> Option<Entry> {
    let (mut orig, mut zone) = (None, None);
    let (mut orig_dst, mut reply_dst) = (None, None);
    for (ty, inner, whole) in attrs(payload.get(NFGENMSG..)?) {
        match ty {
            CTA_TUPLE_ORIG => {
                orig = Some(whole);
                orig_dst = tuple_dst(inner);
            }
            CTA_TUPLE_REPLY => reply_dst = tuple_dst(inner),
            CTA_ZONE => zone = Some(whole),
            _ => {}
        }
    }
    let orig = orig?;
    want(orig_dst, reply_dst).then(|| Entry {
        orig: orig.to_vec(),
        zone: zone.map(<[u8]>::to_vec),
        orig_dst,
        reply_dst,
    })
}

fn tuple_dst(tuple: &[u8]) -> Option<Ipv4Addr> {
    let (_, ip, _) = attrs(tuple).find(|(t, _, _)| *t == CTA_TUPLE_IP)?;
    let (_, dst, _) = attrs(ip).find(|(t, _, _)| *t == CTA_IP_V4_DST)?;
    Some(Ipv4Addr::from(<[u8; 4]>::try_from(dst).ok()?))
}

fn tuple(out: &mut Vec<u8>, ty: u16, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) {
    nested(out, ty, |t| {
        nested(t, CTA_TUPLE_IP, |ip| {
            attr(ip, CTA_IP_V4_SRC, &src.octets());
            attr(ip, CTA_IP_V4_DST, &dst.octets());
        });
        nested(t, CTA_TUPLE_PROTO, |p| {
            attr(p, CTA_PROTO_NUM, &[IPPROTO_UDP]);
            attr(p, CTA_PROTO_SRC_PORT, &sport.to_be_bytes());
            attr(p, CTA_PROTO_DST_PORT, &dport.to_be_bytes());
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_tuple_parses_back() {
        let src = Ipv4Addr::new(198, 51, 100, 7);
        let dst = Ipv4Addr::new(203, 0, 113, 9);
        let mut orig = Vec::new();
        tuple(&mut orig, CTA_TUPLE_ORIG, src, 1000, dst, 53);
        let mut reply = Vec::new();
        tuple(&mut reply, CTA_TUPLE_REPLY, dst, 53, src, 1000);
        let mut payload = vec![AF_INET, 0, 0, 0];
        payload.extend(&orig);
        payload.extend(&reply);
        assert_eq!(parse_entry(&payload, |_, r| r == Some(dst)), None);
        let e = parse_entry(&payload, |o, _| o == Some(dst)).unwrap();
        assert_eq!(e.orig_dst, Some(dst));
        assert_eq!(e.reply_dst, Some(src));
        assert_eq!(e.orig, orig);
        assert_eq!(e.zone, None);
    }

    #[test]
    fn batches_cover_everything_once_within_the_bound() {
        let sizes = vec![100; 2000];
        let b = batches(sizes.iter().copied());
        assert!(b.len() > 1);
        assert_eq!(b.first().unwrap().start, 0);
        assert_eq!(b.last().unwrap().end, 2000);
        for w in b.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &b {
            assert!(r.len() * (100 + HEADER + NFGENMSG) <= BATCH_BYTES);
        }
        // One item bigger than the bound still gets a batch of its own.
        assert_eq!(batches([BATCH_BYTES * 2].into_iter()), vec![0..1]);
        assert!(batches(std::iter::empty()).is_empty());
    }
}
