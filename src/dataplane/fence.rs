//! The SNAT gateway's dead-man switch (issue 9): a serving gateway's
//! external port passes frames only while its agent keeps saying so.
//!
//! Peers take a gateway over when its node stops answering their probes
//! ([`crate::agent::probe`]: down after 300 ms). When the node's underlay
//! or upstream fails, its agent resigns by itself (it hears no peer, or
//! its upstream does not answer). But when the agent itself dies (killed,
//! OOM, hung) the kernel keeps the gateway attached: without a fence, the
//! old and the new gateway would both answer for the SNAT address and its
//! MAC on the external network.
//!
//! So the root namespace has a bridge-family table [`TABLE`] whose forward
//! chain drops every frame to or from a `qgb-` port (the root side of a
//! gateway's external port, on the external bridge) or an `sgb-` port (its
//! subnet ports, on the subnet bridges: [`ensure_subnet_rules`]) that is
//! not in the set
//! [`SET`]; the set's elements carry a timeout ([`LEASE`], shorter than the
//! peers' detection), and the agent re-adds the ports of the gateways it
//! serves every probe interval, in one netlink transaction (flush and add:
//! atomic, no process, a few microseconds). An agent that stops stops
//! renewing: its ports fall silent within [`LEASE`], before any peer
//! activates. The table is made (once, by an nft script through libnftables
//! or the `nft` process, see `nft::exec`) when the node first serves
//! a gateway: a bridge exists by then (see the bridge-family quirk in
//! `docs/ARCHITECTURE.md`). Gateways on a host interface (macvlan) are not
//! fenced.
//!
//! Message layout: one batch (`NFNL_MSG_BATCH_BEGIN`, `NFT_MSG_DELSETELEM`
//! without elements = flush, `NFT_MSG_NEWSETELEM`, `NFNL_MSG_BATCH_END`),
//! attributes from `include/uapi/linux/netfilter/nf_tables.h`.
use std::io;
use std::path::Path;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::netlink::{attr, nested};
use super::netns;
use super::nft::exec;

/// The fence's table (family `bridge`), beside the engine's `kube_dvr`.
pub const TABLE: &str = "kube_dvr_fence";
/// The ports allowed to pass, each for [`LEASE`] after it was renewed.
pub const SET: &str = "alive";
/// How long a renewal keeps a port open: shorter than the peers' detection
/// (`probe::MISSES` × `probe::INTERVAL` = 300 ms), like `probe::ALONE`.
pub const LEASE: Duration = Duration::from_millis(200);

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_DATA_VALUE: u16 = 1;
const NFPROTO_BRIDGE: u8 = 7;
const AF_UNSPEC: u8 = 0;
const IFNAMSIZ: usize = 16;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;

/// The root side of a gateway's external port (`qgb-<index>` on the
/// external bridge).
pub const EXTERNAL_PORT_PREFIX: &str = "qgb-";
/// The forward chain's two rules for the ports named `<prefix>*`: frames
/// to or from one that is not in the set are dropped.
fn port_rules(prefix: &str) -> [String; 2] {
    ["iifname", "oifname"].map(|dir| format!("{dir} \"{prefix}*\" {dir} != @{SET} drop"))
}

/// The table, as `nft -f` reads it (the subnet ports' rules come later:
/// [`ensure_subnet_rules`]).
pub fn ruleset() -> String {
    let [iif, oif] = port_rules(EXTERNAL_PORT_PREFIX);
    format!(
        "table bridge {TABLE} {{\n\
         \tset {SET} {{ type ifname; flags timeout; }}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority -10; policy accept;\n\
         \t\t{iif}\n\
         \t\t{oif}\n\
         \t}}\n\
         }}\n"
    )
}

/// A netlink socket in one namespace that renews the fence there.
pub struct Fence {
    sock: Socket,
    buf: Vec<u8>,
    seq: u32,
    /// The table is known to exist.
    made: bool,
    /// Its rules for the gateways' subnet ports (`sgb-`) are known to
    /// exist ([`ensure_subnet_rules`]).
    subnets: bool,
    netns: std::path::PathBuf,
}

impl Fence {
    /// A fence for the root namespace at `netns` (the socket is made there
    /// and stays bound to it).
    pub fn open(netns: &Path) -> io::Result<Fence> {
        let sock = netns::run_in(netns, || {
            super::netlink::socket_here(NETLINK_NETFILTER, 1 << 16)
        })??;
        Ok(Fence {
            sock,
            buf: Vec::new(),
            seq: 1,
            made: false,
            subnets: false,
            netns: netns.to_path_buf(),
        })
    }

    /// Open exactly `ports` for [`LEASE`] from now (every other port of the
    /// set closes at once). Nothing to open and no table yet: nothing done.
    pub fn renew(&mut self, ports: &[String]) -> io::Result<()> {
        if !self.made {
            if ports.is_empty() {
                return Ok(());
            }
            ensure_table(&self.netns)?;
            self.made = true;
        }
        let mut out = Vec::new();
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(4);
        message(
            &mut out,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            AF_UNSPEC,
            |b| {
                // res_id: the subsystem the batch is for (big-endian in nfgenmsg).
                b[2..4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
            },
        );
        let names = |b: &mut Vec<u8>| {
            attr(b, NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE));
            attr(b, NFTA_SET_ELEM_LIST_SET, &cstr(SET));
        };
        let ty = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        let mut flush = Vec::new();
        names(&mut flush);
        push(
            &mut out,
            ty(NFT_MSG_DELSETELEM),
            NLM_F_REQUEST | NLM_F_ACK,
            seq + 1,
            &flush,
        );
        if !ports.is_empty() {
            let mut add = Vec::new();
            names(&mut add);
            nested(&mut add, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                for p in ports {
                    nested(l, NFTA_LIST_ELEM, |e| {
                        nested(e, NFTA_SET_ELEM_KEY, |k| {
                            attr(k, NFTA_DATA_VALUE, &ifname(p))
                        });
                        let ms = LEASE.as_millis() as u64;
                        attr(e, NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                    });
                }
            });
            push(
                &mut out,
                ty(NFT_MSG_NEWSETELEM),
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
                seq + 2,
                &add,
            );
        }
        message(
            &mut out,
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            seq + 3,
            AF_UNSPEC,
            |b| {
                b[2..4].copy_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
            },
        );
        self.sock.send(&out, 0)?;
        // One ack (or error) per acked message, all read (an unread one
        // would answer the next renewal); the first error is returned.
        let acks = if ports.is_empty() { 1 } else { 2 };
        let mut got = 0;
        let mut first: Option<i32> = None;
        super::netlink::recv_messages(&self.sock, &mut self.buf, |m| {
            let kind = u16::from_ne_bytes(m[4..6].try_into().unwrap());
            if kind == NLMSG_ERROR && m.len() >= 20 {
                let code = i32::from_ne_bytes(m[16..20].try_into().unwrap());
                if code != 0 && first.is_none() {
                    first = Some(-code);
                }
                got += 1;
            }
            Ok(got >= acks)
        })?;
        if let Some(code) = first {
            if code == ENOENT {
                // The table went (cleanup, someone's flush): make it again
                // on the next renewal.
                self.made = false;
                self.subnets = false;
            }
            return Err(io::Error::from_raw_os_error(code));
        }
        // Subnet ports are fenced from the first renewal that names one
        // (after it: the set already holds them, nothing serving drops).
        if !self.subnets && ports.iter().any(|p| p.starts_with(SUBNET_PORT_PREFIX)) {
            ensure_subnet_rules(&self.netns)?;
            self.subnets = true;
        }
        Ok(())
    }
}

/// The root side of a gateway's subnet ports (`sgb-<vni>` on the subnet
/// bridges).
pub const SUBNET_PORT_PREFIX: &str = "sgb-";

/// The rules that fence the gateways' subnet ports like their external
/// ones: a dead agent's gateway also falls silent towards the subnets. A
/// frame its `sg-` still sends (an ARP, a reply) would otherwise be
/// flooded over VXLAN and teach the serving node's subnet bridge that the
/// gateway's MAC lives behind the tunnel: the serving node would then drop
/// its own SNAT traffic (`benches/gateway_ha.rs` (c) lost egress ~1 s
/// after a clean failover that way). Added to an existing table as well
/// (a table made by an older agent has only the `qgb-` rules).
pub fn ensure_subnet_rules(netns: &Path) -> io::Result<()> {
    netns::run_in(netns, || -> io::Result<()> {
        let out = exec::run_command(&format!("list chain bridge {TABLE} forward"), false)?;
        if !out.ok {
            return Err(io::Error::other(format!(
                "nft: the fence chain: {}",
                out.stderr
            )));
        }
        if out.stdout.contains(SUBNET_PORT_PREFIX) {
            return Ok(());
        }
        let script: String = port_rules(SUBNET_PORT_PREFIX)
            .iter()
            .map(|r| format!("add rule bridge {TABLE} forward {r}\n"))
            .collect();
        let out = exec::run_batch(&script)?;
        if !out.ok {
            return Err(io::Error::other(format!(
                "nft: fencing the subnet ports: {}",
                out.stderr
            )));
        }
        Ok(())
    })?
}

const ENOENT: i32 = 2;

/// Make the table in `netns` unless it is there (one nft call, or two).
pub fn ensure_table(netns: &Path) -> io::Result<()> {
    netns::run_in(netns, || -> io::Result<()> {
        if exec::run_command(&format!("list table bridge {TABLE}"), false)?.ok {
            return Ok(());
        }
        let out = exec::run_batch(&ruleset())?;
        if !out.ok {
            return Err(io::Error::other(format!(
                "nft: making the fence table: {}",
                out.stderr
            )));
        }
        Ok(())
    })?
}

/// The ports whose lease runs now in `netns` (none without the table):
/// what a restarted agent's predecessor was still renewing.
pub fn live_ports(netns: &Path) -> io::Result<Vec<String>> {
    netns::run_in(netns, || -> io::Result<Vec<String>> {
        let out = exec::run_command(&format!("list set bridge {TABLE} {SET}"), true)?;
        if !out.ok {
            return Ok(Vec::new());
        }
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| io::Error::other(format!("nft -j: {e}")))?;
        let mut ports = Vec::new();
        collect_ports(&v, &mut ports);
        Ok(ports)
    })?
}

/// Every string naming a gateway port in `v` (element values, in
/// whatever nesting `nft -j` gives them).
fn collect_ports(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s)
            if s.starts_with(EXTERNAL_PORT_PREFIX) || s.starts_with(SUBNET_PORT_PREFIX) =>
        {
            out.push(s.clone())
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_ports(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_ports(x, out)),
        _ => {}
    }
}

/// Delete the table in `netns` (cleanup); absent is fine.
pub fn remove_table(netns: &Path) -> io::Result<()> {
    netns::run_in(netns, || -> io::Result<()> {
        exec::run_command(&format!("delete table bridge {TABLE}"), false)?;
        Ok(())
    })?
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// An interface name as an `ifname` set key: NUL-padded to IFNAMSIZ.
fn ifname(name: &str) -> Vec<u8> {
    let mut v = vec![0u8; IFNAMSIZ];
    let b = name.as_bytes();
    let n = b.len().min(IFNAMSIZ - 1);
    v[..n].copy_from_slice(&b[..n]);
    v
}

/// An `nlmsghdr` + `nfgenmsg` (family `family`, version 0) message with no
/// attributes; `fix` may edit the nfgenmsg.
fn message(
    out: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    fix: impl FnOnce(&mut [u8]),
) {
    let mut nfgen = [family, 0, 0, 0];
    fix(&mut nfgen);
    header(out, ty, flags, seq, &nfgen, &[]);
}

/// A request for the bridge-family table, with `attrs`.
fn push(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, attrs: &[u8]) {
    header(out, ty, flags, seq, &[NFPROTO_BRIDGE, 0, 0, 0], attrs);
}

fn header(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, nfgen: &[u8; 4], attrs: &[u8]) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(nfgen);
    out.extend_from_slice(attrs);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nul_padded_keys() {
        let k = ifname("qgb-7");
        assert_eq!(k.len(), IFNAMSIZ);
        assert_eq!(&k[..6], b"qgb-7\0");
        assert!(ruleset().contains("iifname != @alive drop"));
    }

    #[test]
    fn attributes_are_aligned_and_nested_lengths_cover_their_content() {
        let mut b = Vec::new();
        nested(&mut b, NFTA_LIST_ELEM, |e| attr(e, NFTA_DATA_VALUE, b"abc"));
        assert_eq!(b.len(), 4 + 8);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), 12);
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), NFTA_LIST_ELEM | 0x8000);
    }
}
