//! Underlay probes between nodes, for SNAT gateway failover without the
//! API server (BFD-like, over UDP).
//!
//! Every agent binds one UDP socket to its VTEP (port
//! [`DEFAULT_PORT`]) in the node's namespace, answers every probe it gets
//! and probes each peer the agent names ([`Probes::set_peers`]: the other
//! candidates of the SNAT gateways of routers it hosts or is a candidate
//! for): one session per pair of nodes, however many routers. A probe goes
//! out every [`INTERVAL`]; a session goes down after [`MISSES`] intervals
//! without a reply and comes back up only after [`HOLD_DOWN`] intervals
//! with one (no flapping on a lossy link). A reply carries whether the
//! node can serve (`ready`) and the router indexes whose SNAT gateway it
//! serves right now (its claims), so a returning node learns who took
//! over before it could take anything back.
//!
//! The task only uses the socket and a shared state: it needs neither the
//! API server nor the agent's pass loop, and wakes the agent (a watch
//! channel) whenever what a decision depends on changes.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

/// UDP port of the probes (next to VXLAN's 4789).
pub const DEFAULT_PORT: u16 = 4790;
/// Probe interval.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// A session goes down after this many intervals without a reply.
pub const MISSES: u32 = 3;
/// A session comes up only after this many intervals with a reply (1 s).
pub const HOLD_DOWN: u32 = 10;
/// A peer's last reply (its claims) or probe counts for this long.
pub const FRESH: Duration = Duration::from_millis(MISSES as u64 * 100 + 50);

const MAGIC: &[u8; 4] = b"KDVR";
const VERSION: u8 = 1;
const REQUEST: u8 = 0;
const REPLY: u8 = 1;
/// Claims that fit one datagram below the underlay MTU.
const MAX_CLAIMS: usize = 340;

/// A session's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Just created, nothing decided yet: trusted to be as planned.
    Init,
    Up,
    Down,
}

/// What this node knows of a peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub state: Session,
    /// Its last reply said it can serve.
    pub ready: bool,
    /// Router indexes it serves, from its last reply.
    pub claims: BTreeSet<u32>,
    /// When its last reply arrived.
    pub heard: Option<Instant>,
    /// Consecutive intervals with / without a reply.
    ok: u32,
    missed: u32,
    /// A reply arrived in the current interval.
    replied: bool,
    seq: u32,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            state: Session::Init,
            ready: true,
            claims: BTreeSet::new(),
            heard: None,
            ok: 0,
            missed: 0,
            replied: false,
            seq: 0,
        }
    }

    /// Up (or coming up) and ready to serve, in this node's view.
    pub fn up(&self) -> bool {
        matches!(self.state, Session::Init | Session::Up) && self.ready
    }

    /// Whether its last reply is recent.
    pub fn fresh(&self, now: Instant) -> bool {
        self.heard.is_some_and(|t| now.duration_since(t) <= FRESH)
    }
}

/// Shared between the probe task and the agent.
#[derive(Debug)]
pub struct State {
    /// Sessions by peer VTEP.
    pub peers: BTreeMap<Ipv4Addr, Peer>,
    /// What this node answers: it can serve.
    pub ready: bool,
    /// What this node answers: router indexes it serves.
    pub claims: BTreeSet<u32>,
    /// Last probe received from each node (peers that probe us, also
    /// nodes we do not probe).
    pub probed_by: BTreeMap<Ipv4Addr, Instant>,
    /// The socket is bound and the task runs.
    pub running: bool,
    pub started: Instant,
    /// Since when some peer has been heard without a gap (`None`: none
    /// heard now).
    pub visible_since: Option<Instant>,
}

impl State {
    /// A peer was heard recently (a reply or a probe).
    pub fn sees_peer(&self, now: Instant) -> bool {
        // An undecided session counts: a (re)started agent keeps serving.
        self.peers
            .values()
            .any(|p| p.fresh(now) || p.state == Session::Init)
            || self
                .probed_by
                .values()
                .any(|t| now.duration_since(*t) <= FRESH)
    }
}

/// Handle of the probe task.
#[derive(Clone)]
pub struct Probes {
    pub state: Arc<Mutex<State>>,
    wake: tokio::sync::watch::Sender<u64>,
}

impl Probes {
    pub fn new() -> (Probes, tokio::sync::watch::Receiver<u64>) {
        let (wake, rx) = tokio::sync::watch::channel(0);
        let now = Instant::now();
        let p = Probes {
            state: Arc::new(Mutex::new(State {
                peers: BTreeMap::new(),
                ready: true,
                claims: BTreeSet::new(),
                probed_by: BTreeMap::new(),
                running: false,
                started: now,
                visible_since: Some(now),
            })),
            wake,
        };
        (p, rx)
    }

    /// Probe exactly these VTEPs (sessions of others end; new ones start
    /// in [`Session::Init`]).
    pub fn set_peers(&self, vteps: &BTreeSet<Ipv4Addr>) {
        let mut st = self.state.lock().unwrap();
        st.peers.retain(|v, _| vteps.contains(v));
        for v in vteps {
            st.peers.entry(*v).or_insert_with(Peer::new);
        }
    }

    /// What this node answers from now on.
    pub fn set_serving(&self, ready: bool, claims: BTreeSet<u32>) {
        let mut st = self.state.lock().unwrap();
        st.ready = ready;
        st.claims = claims;
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n += 1);
    }

    /// Bind the socket to `vtep:port` inside the namespace `netns` and run
    /// the sessions until the task is dropped. Returns only on a bind error.
    pub async fn run(self, netns: &Path, vtep: Ipv4Addr, port: u16) -> std::io::Result<()> {
        let addr = SocketAddrV4::new(vtep, port);
        let std_sock = crate::dataplane::netns::run_in(netns, || {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })??;
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        {
            let mut st = self.state.lock().unwrap();
            st.running = true;
            st.started = Instant::now();
            st.visible_since = Some(st.started);
        }
        let rx = {
            let (sock, me) = (sock.clone(), self.clone());
            async move { me.receive(&sock, port).await }
        };
        let tx = async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (sends, changed) = self.tick();
                for (dst, seq) in sends {
                    let _ = sock
                        .send_to(&request(seq), SocketAddr::V4(SocketAddrV4::new(dst, port)))
                        .await;
                }
                if changed {
                    self.wake();
                }
            }
        };
        tokio::join!(rx, tx);
        Ok(())
    }

    /// One interval: judge every session by whether it was answered since
    /// the last tick, then say whom to probe next. Returns the probes and
    /// whether anything a decision depends on changed.
    fn tick(&self) -> (Vec<(Ipv4Addr, u32)>, bool) {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap();
        let mut changed = false;
        let mut sends = Vec::new();
        for (vtep, p) in st.peers.iter_mut() {
            if p.replied {
                p.ok += 1;
                p.missed = 0;
            } else {
                p.missed += 1;
                p.ok = 0;
            }
            p.replied = false;
            let next = match p.state {
                Session::Init | Session::Up if p.missed >= MISSES => Session::Down,
                Session::Init if p.ok > 0 => Session::Up,
                Session::Down if p.ok >= HOLD_DOWN => Session::Up,
                s => s,
            };
            if next != p.state {
                tracing::info!(peer = %vtep, from = ?p.state, to = ?next, "gateway probe session");
                p.state = next;
                changed = true;
            }
            p.seq = p.seq.wrapping_add(1);
            sends.push((*vtep, p.seq));
        }
        let sees = st.sees_peer(now);
        match (sees, st.visible_since) {
            (true, None) => {
                st.visible_since = Some(now);
                changed = true;
            }
            (false, Some(_)) => {
                st.visible_since = None;
                changed = true;
            }
            _ => {}
        }
        st.probed_by
            .retain(|_, t| now.duration_since(*t) <= FRESH * 4);
        // Hold-downs measured from visibility end here too.
        (sends, changed)
    }

    async fn receive(&self, sock: &UdpSocket, port: u16) {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let SocketAddr::V4(from) = from else { continue };
            let Some(msg) = parse(&buf[..n]) else {
                continue;
            };
            let now = Instant::now();
            match msg {
                Msg::Request { seq } => {
                    let reply = {
                        let mut st = self.state.lock().unwrap();
                        st.probed_by.insert(*from.ip(), now);
                        reply(seq, st.ready, &st.claims)
                    };
                    let to = SocketAddr::V4(SocketAddrV4::new(*from.ip(), port));
                    let _ = sock.send_to(&reply, to).await;
                }
                Msg::Reply { ready, claims, .. } => {
                    let changed = {
                        let mut st = self.state.lock().unwrap();
                        let Some(p) = st.peers.get_mut(from.ip()) else {
                            continue;
                        };
                        p.replied = true;
                        p.heard = Some(now);
                        let changed = p.ready != ready || p.claims != claims;
                        p.ready = ready;
                        p.claims = claims;
                        // The first answer of a new session decides at once.
                        let first = p.state == Session::Init;
                        if first {
                            p.state = Session::Up;
                        }
                        changed || first
                    };
                    if changed {
                        self.wake();
                    }
                }
            }
        }
    }
}

enum Msg {
    Request {
        seq: u32,
    },
    Reply {
        #[allow(dead_code)]
        seq: u32,
        ready: bool,
        claims: BTreeSet<u32>,
    },
}

fn header(kind: u8, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(MAGIC);
    b.push(VERSION);
    b.push(kind);
    b.extend_from_slice(&seq.to_be_bytes());
    b
}

fn request(seq: u32) -> Vec<u8> {
    header(REQUEST, seq)
}

fn reply(seq: u32, ready: bool, claims: &BTreeSet<u32>) -> Vec<u8> {
    let mut b = header(REPLY, seq);
    b.push(ready as u8);
    let n = claims.len().min(MAX_CLAIMS);
    b.extend_from_slice(&(n as u16).to_be_bytes());
    for c in claims.iter().take(n) {
        b.extend_from_slice(&c.to_be_bytes());
    }
    b
}

fn parse(b: &[u8]) -> Option<Msg> {
    if b.len() < 10 || &b[0..4] != MAGIC || b[4] != VERSION {
        return None;
    }
    let seq = u32::from_be_bytes(b[6..10].try_into().ok()?);
    match b[5] {
        REQUEST => Some(Msg::Request { seq }),
        REPLY => {
            let ready = *b.get(10)? != 0;
            let n = u16::from_be_bytes(b.get(11..13)?.try_into().ok()?) as usize;
            let body = b.get(13..13 + 4 * n)?;
            let claims = body
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
                .collect();
            Some(Msg::Reply { seq, ready, claims })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        assert!(matches!(parse(&request(7)), Some(Msg::Request { seq: 7 })));
        let claims = BTreeSet::from([1, 4096]);
        match parse(&reply(9, false, &claims)) {
            Some(Msg::Reply {
                seq: 9,
                ready: false,
                claims: c,
            }) => assert_eq!(c, claims),
            _ => panic!("reply did not parse"),
        }
        assert!(parse(b"KDVR\x02\x00\0\0\0\x01").is_none(), "other version");
        assert!(parse(&reply(1, true, &claims)[..14]).is_none(), "truncated");
    }

    #[test]
    fn sessions_go_down_after_misses_and_up_after_hold_down() {
        let (p, _rx) = Probes::new();
        let v: Ipv4Addr = "198.18.0.2".parse().unwrap();
        p.set_peers(&BTreeSet::from([v]));
        let state = |p: &Probes| p.state.lock().unwrap().peers[&v].state;
        let answer = |p: &Probes| p.state.lock().unwrap().peers.get_mut(&v).unwrap().replied = true;
        for _ in 0..MISSES - 1 {
            p.tick();
        }
        assert_eq!(state(&p), Session::Init);
        p.tick();
        assert_eq!(state(&p), Session::Down);
        for _ in 0..HOLD_DOWN - 1 {
            answer(&p);
            p.tick();
        }
        assert_eq!(state(&p), Session::Down, "still holding down");
        p.tick(); // one miss restarts the hold-down
        for _ in 0..HOLD_DOWN - 1 {
            answer(&p);
            p.tick();
        }
        assert_eq!(state(&p), Session::Down);
        answer(&p);
        p.tick();
        assert_eq!(state(&p), Session::Up);
        for _ in 0..MISSES {
            p.tick();
        }
        assert_eq!(state(&p), Session::Down);
    }
}
