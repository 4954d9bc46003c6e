//! Underlay probes between nodes, for SNAT gateway failover without the
//! API server (BFD-like, over UDP), and the upstream checks that decide
//! whether this node can serve a gateway at all.
//!
//! Every agent binds one UDP socket to its VTEP (port
//! [`DEFAULT_PORT`]) in the node's namespace, answers every probe it gets
//! and probes each peer the agent names ([`Probes::set_peers`]: the other
//! candidates of the SNAT gateways of routers it hosts or is a candidate
//! for): one session per pair of nodes, however many routers. A probe goes
//! out every [`INTERVAL`]; a session goes down after [`MISSES`] intervals
//! without a reply and comes back up only after [`HOLD_DOWN`] intervals
//! with one (no flapping on a lossy link). A reply carries whether the
//! node can serve (`ready`), the router indexes whose SNAT gateway it
//! serves right now (its claims), so a returning node learns who took
//! over before it could take anything back, and the router indexes whose
//! upstream it cannot reach (`unready`).
//!
//! **Upstream checks** ([`Probes::set_upstreams`]): on the same tick, for
//! each external network of a gateway this node is a candidate for, an ARP
//! probe (RFC 5227: sender 0.0.0.0, so no cache learns anything) for the
//! network's gateway goes out of the node's attachment (the bridge or the
//! host interface the gateway's external port hangs on). The check is a
//! session like a peer's: down after [`MISSES`] unanswered intervals, up
//! after [`HOLD_DOWN`] answered ones. While it is down, the gateways of
//! that network are in this node's `unready` list.
//!
//! The task only uses its sockets and a shared state: it needs neither the
//! API server nor the agent's pass loop, and wakes the agent (a watch
//! channel) whenever what a decision depends on changes.
//!
//! **Fence** ([`crate::dataplane::fence`]): on every tick the task also
//! renews, for [`crate::dataplane::fence::LEASE`] (200 ms, less than the
//! peers' 300 ms detection), the external ports of the gateways this node
//! claims or is about to attach ([`Probes::arm`]). An agent that dies
//! stops renewing, and its gateways fall silent before a peer takes them
//! over: never two attached. At start the task first renews the gateways
//! whose lease still runs, so an agent restarted at once keeps serving (one
//! whose lease ran out stays fenced: a peer may serve it by now).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::dataplane::fence::Fence;

/// Router indexes whose gateway the kernel has attached in `netns` (the
/// `qgb-<index>` ports with a master).
fn attached_gateways(netns: &Path) -> BTreeSet<u32> {
    let links = crate::dataplane::netlink::Netlink::open_in(netns).and_then(|mut nl| nl.links());
    match links {
        Ok(links) => links
            .iter()
            .filter(|l| l.master.is_some())
            .filter_map(|l| {
                l.name
                    .strip_prefix(crate::dataplane::fence::EXTERNAL_PORT_PREFIX)?
                    .parse()
                    .ok()
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "listing attached gateways");
            BTreeSet::new()
        }
    }
}

/// UDP port of the probes (next to VXLAN's 4789).
pub const DEFAULT_PORT: u16 = 4790;
/// Probe interval.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// A session goes down after this many intervals without a reply (300 ms).
/// Six short intervals rather than three long ones: the same detection
/// time, but with 5 % loss each way (≈10 % of round trips) a false "down"
/// needs six lost round trips in a row (≈1e-6 per interval, against ≈1e-3
/// for three).
pub const MISSES: u32 = 6;
/// A session comes up only after this many intervals with a reply (1 s).
pub const HOLD_DOWN: u32 = 20;
/// A peer's last reply (its claims) counts for this long.
pub const FRESH: Duration = Duration::from_millis(MISSES as u64 * 50 + 50);
/// A node that heard no peer for this long is isolated and resigns: shorter
/// than the others' [`MISSES`] intervals, so a node cut off detaches before
/// the next candidate attaches (never two attached).
pub const ALONE: Duration = Duration::from_millis((MISSES as u64 - 2) * 50);

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

/// The counters of a session (a peer's, an upstream check's).
#[derive(Clone, Debug, Default)]
struct Counts {
    /// Consecutive intervals with / without an answer.
    ok: u32,
    missed: u32,
    /// An answer arrived in the current interval.
    answered: bool,
}

impl Counts {
    /// End an interval: count it, and return the session's next state
    /// (down after [`MISSES`] misses, up after [`HOLD_DOWN`] answers, a new
    /// session up at its first answer).
    fn judge(&mut self, state: Session) -> Session {
        if self.answered {
            self.ok += 1;
            self.missed = 0;
        } else {
            self.missed += 1;
            self.ok = 0;
        }
        self.answered = false;
        match state {
            Session::Init | Session::Up if self.missed >= MISSES => Session::Down,
            Session::Init if self.ok > 0 => Session::Up,
            Session::Down if self.ok >= HOLD_DOWN => Session::Up,
            s => s,
        }
    }
}

/// What this node knows of a peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub state: Session,
    /// Its last reply said it can serve.
    pub ready: bool,
    /// Router indexes it serves, from its last reply.
    pub claims: BTreeSet<u32>,
    /// Router indexes whose upstream it cannot reach, from its last reply.
    pub unready: BTreeSet<u32>,
    /// When its last reply arrived.
    pub heard: Option<Instant>,
    counts: Counts,
    seq: u32,
}

impl Peer {
    fn new() -> Peer {
        Peer {
            state: Session::Init,
            ready: true,
            claims: BTreeSet::new(),
            unready: BTreeSet::new(),
            heard: None,
            counts: Counts::default(),
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

/// An upstream to check: the external network's gateway, asked from the
/// node's attachment device (a bridge or a host interface).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Upstream {
    pub device: String,
    pub gateway: Ipv4Addr,
}

/// An upstream check and the routers whose readiness it decides.
#[derive(Clone, Debug)]
pub struct Check {
    pub state: Session,
    /// Router indexes of the gateways this node is a candidate for on
    /// that network.
    pub indexes: BTreeSet<u32>,
    counts: Counts,
}

impl Check {
    /// Answering (or not decided yet).
    pub fn up(&self) -> bool {
        self.state != Session::Down
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
    /// Upstream checks.
    pub upstreams: BTreeMap<Upstream, Check>,
    /// Router indexes whose gateway the fence keeps open besides
    /// `claims`: about to be attached ([`Probes::arm`]).
    pub arming: BTreeSet<u32>,
    /// Router indexes whose gateway the kernel had attached when the task
    /// started but whose lease had run out: the predecessor died a while
    /// ago and a peer may serve it now. This node does not keep it and
    /// takes it only after the hold-down, like a node coming back.
    pub fenced_at_start: BTreeSet<u32>,
    /// Each router index's subnet ports (`sgb-`), renewed with its external
    /// one ([`Probes::set_subnet_ports`]).
    pub subnet_ports: BTreeMap<u32, Vec<String>>,
    /// Every port whose lease still ran when the task started, renewed
    /// until the first pass says what this node serves.
    pub inherited: Vec<String>,
}

impl State {
    /// Router indexes whose upstream is down here (what replies say).
    pub fn unready(&self) -> BTreeSet<u32> {
        self.upstreams
            .values()
            .filter(|c| !c.up())
            .flat_map(|c| c.indexes.iter().copied())
            .collect()
    }

    /// Whether this node reaches the upstream of router `index` (no check
    /// for it counts as yes).
    pub fn upstream_up(&self, index: u32) -> bool {
        self.upstreams
            .values()
            .all(|c| c.up() || !c.indexes.contains(&index))
    }

    /// A peer was heard within [`ALONE`] (a reply or a probe).
    pub fn sees_peer(&self, now: Instant) -> bool {
        let recent = |t: &Instant| now.duration_since(*t) <= ALONE;
        // An undecided session counts: a (re)started agent keeps serving.
        self.peers
            .values()
            .any(|p| p.heard.as_ref().is_some_and(recent) || p.state == Session::Init)
            || self.probed_by.values().any(recent)
    }
}

/// Handle of the probe task.
#[derive(Clone)]
pub struct Probes {
    pub state: Arc<Mutex<State>>,
    wake: tokio::sync::watch::Sender<u64>,
    /// The fence, once the task runs (none without probes: nothing renews,
    /// so nothing may be fenced).
    fence: Arc<Mutex<Option<Fence>>>,
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
                upstreams: BTreeMap::new(),
                arming: BTreeSet::new(),
                fenced_at_start: BTreeSet::new(),
                subnet_ports: BTreeMap::new(),
                inherited: Vec::new(),
            })),
            wake,
            fence: Arc::new(Mutex::new(None)),
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

    /// Check exactly these upstreams, each for these router indexes (new
    /// checks start in [`Session::Init`]: trusted until decided).
    pub fn set_upstreams(&self, want: BTreeMap<Upstream, BTreeSet<u32>>) {
        let mut st = self.state.lock().unwrap();
        st.upstreams.retain(|u, _| want.contains_key(u));
        for (u, indexes) in want {
            st.upstreams
                .entry(u)
                .or_insert_with(|| Check {
                    state: Session::Init,
                    indexes: BTreeSet::new(),
                    counts: Counts::default(),
                })
                .indexes = indexes;
        }
    }

    /// What this node answers from now on (and the fence keeps open:
    /// only these).
    pub fn set_serving(&self, ready: bool, claims: BTreeSet<u32>) {
        {
            let mut st = self.state.lock().unwrap();
            st.ready = ready;
            st.claims = claims;
            st.arming.clear();
            st.inherited.clear();
        }
        self.renew_fence();
    }

    /// The subnet ports (`sgb-`) of each router index's gateway, fenced
    /// and renewed like its external port.
    pub fn set_subnet_ports(&self, ports: BTreeMap<u32, Vec<String>>) {
        self.state.lock().unwrap().subnet_ports = ports;
    }

    /// Open the fence for these gateways too, now: the kernel is about to
    /// attach them (and send their gratuitous ARPs).
    pub fn arm(&self, indexes: BTreeSet<u32>) {
        let more = {
            let mut st = self.state.lock().unwrap();
            let more = indexes
                .iter()
                .any(|i| !st.claims.contains(i) && !st.arming.contains(i));
            st.arming.extend(indexes);
            more
        };
        if more {
            self.renew_fence();
        }
    }

    /// Renew the fence for the claimed and arming gateways.
    fn renew_fence(&self) {
        let ports: Vec<String> = {
            let st = self.state.lock().unwrap();
            st.claims
                .union(&st.arming)
                .flat_map(|i| {
                    let subnets = st.subnet_ports.get(i).into_iter().flatten().cloned();
                    std::iter::once(crate::plan::names::qg_bridge(*i)).chain(subnets)
                })
                .chain(st.inherited.iter().cloned())
                .collect()
        };
        let mut fence = self.fence.lock().unwrap();
        if let Some(f) = fence.as_mut() {
            if let Err(e) = f.renew(&ports) {
                tracing::warn!(error = %e, "renewing the gateway fence failed");
            }
        }
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n += 1);
    }

    /// Bind the socket to `vtep:port` inside the namespace `netns` and run
    /// the sessions until the task is dropped. Returns only on a bind error
    /// other than "in use" (a predecessor still closing its socket: retried
    /// every interval).
    pub async fn run(self, netns: &Path, vtep: Ipv4Addr, port: u16) -> std::io::Result<()> {
        let addr = SocketAddrV4::new(vtep, port);
        let mut waited = 0u32;
        let std_sock = loop {
            let r = crate::dataplane::netns::run_in(netns, || {
                let s = std::net::UdpSocket::bind(addr)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })?;
            match r {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    if waited == HOLD_DOWN {
                        tracing::warn!(%addr, "gateway probe port in use; retrying");
                    }
                    waited += 1;
                    tokio::time::sleep(INTERVAL).await;
                }
                Err(e) => return Err(e),
            }
        };
        let sock = Arc::new(UdpSocket::from_std(std_sock)?);
        match Fence::open(netns) {
            Ok(f) => {
                // Keep serving what the predecessor served until the
                // agent's first pass says otherwise.
                // (A gateway whose lease still runs: its predecessor
                // renewed it less than a lease ago, no peer has taken it
                // over; one whose lease ran out stays fenced until a pass
                // decides.)
                let inherited = crate::dataplane::fence::live_ports(netns).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "reading the gateway fence");
                    Vec::new()
                });
                let fenced = attached_gateways(netns)
                    .into_iter()
                    .filter(|i| !inherited.contains(&crate::plan::names::qg_bridge(*i)))
                    .collect();
                let mut st = self.state.lock().unwrap();
                st.fenced_at_start = fenced;
                st.inherited = inherited;
                drop(st);
                *self.fence.lock().unwrap() = Some(f);
                self.renew_fence();
            }
            Err(e) => {
                tracing::error!(error = %e, "no gateway fence: a gateway of this node stays attached if its agent dies")
            }
        }
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
        let netns = netns.to_path_buf();
        let tx = async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut arp = ArpSockets::default();
            loop {
                tick.tick().await;
                // Answers to the last interval's ARP probes count for it.
                let targets: Vec<Upstream> = {
                    let st = self.state.lock().unwrap();
                    st.upstreams.keys().cloned().collect()
                };
                let answered = arp.collect(&netns, &targets);
                {
                    let mut st = self.state.lock().unwrap();
                    for u in answered {
                        if let Some(c) = st.upstreams.get_mut(&u) {
                            c.counts.answered = true;
                        }
                    }
                }
                let (sends, changed) = self.tick();
                for (dst, seq) in sends {
                    let _ = sock
                        .send_to(&request(seq), SocketAddr::V4(SocketAddrV4::new(dst, port)))
                        .await;
                }
                arp.send(&targets);
                self.renew_fence();
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
            let next = p.counts.judge(p.state);
            if next != p.state {
                tracing::info!(peer = %vtep, from = ?p.state, to = ?next, "gateway probe session");
                if next == Session::Down {
                    // Its claims went silent with it. Its last reply is
                    // still "fresh" for a moment (the session goes down
                    // [`MISSES`] intervals after it, [`FRESH`] is a little
                    // longer), and a claim still counted would keep every
                    // node pointing at it — with nothing to wake a pass
                    // when the claim ages out. A reply heard again brings
                    // them back (a returning node in hold-down that
                    // claims is waited for).
                    p.claims.clear();
                }
                p.state = next;
                changed = true;
            }
            if !p.claims.is_empty() && !p.fresh(now) {
                // A returning node in hold-down that claimed once and fell
                // silent again (its session never went up, so no
                // transition clears them): its claims age out here, and
                // the decision is made again.
                p.claims.clear();
                changed = true;
            }
            p.seq = p.seq.wrapping_add(1);
            sends.push((*vtep, p.seq));
        }
        for (u, c) in st.upstreams.iter_mut() {
            let next = c.counts.judge(c.state);
            if next != c.state {
                tracing::info!(device = %u.device, gateway = %u.gateway, from = ?c.state, to = ?next, "gateway upstream check");
                c.state = next;
                changed = true;
            }
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
        // Past the hold-down a gateway fenced at start is like any other
        // (this node has learnt who serves it).
        let held =
            (st.visible_since).is_some_and(|t| now.duration_since(t) >= INTERVAL * HOLD_DOWN);
        if held && !st.fenced_at_start.is_empty() {
            st.fenced_at_start.clear();
            changed = true;
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
                        reply(seq, st.ready, &st.claims, &st.unready())
                    };
                    let to = SocketAddr::V4(SocketAddrV4::new(*from.ip(), port));
                    let _ = sock.send_to(&reply, to).await;
                }
                Msg::Reply {
                    ready,
                    claims,
                    unready,
                    ..
                } => {
                    let changed = {
                        let mut st = self.state.lock().unwrap();
                        let Some(p) = st.peers.get_mut(from.ip()) else {
                            continue;
                        };
                        p.counts.answered = true;
                        p.heard = Some(now);
                        let changed =
                            p.ready != ready || p.claims != claims || p.unready != unready;
                        p.ready = ready;
                        p.claims = claims;
                        p.unready = unready;
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
        unready: BTreeSet<u32>,
    },
}

/// The ARP sockets of the upstream checks, opened in the node's namespace
/// as checks appear (a device that does not exist is retried every
/// [`HOLD_DOWN`] intervals; until then its check goes unanswered).
#[derive(Default)]
struct ArpSockets {
    open: BTreeMap<String, crate::dataplane::garp::ArpProbe>,
    failed: BTreeMap<String, u32>,
}

impl ArpSockets {
    /// The upstreams among `targets` that answered since the last call;
    /// sockets of devices no longer checked close.
    fn collect(&mut self, netns: &Path, targets: &[Upstream]) -> Vec<Upstream> {
        self.open
            .retain(|d, _| targets.iter().any(|u| &u.device == d));
        self.failed
            .retain(|d, _| targets.iter().any(|u| &u.device == d));
        let mut out = Vec::new();
        for u in targets {
            if !self.open.contains_key(&u.device) {
                let wait = self.failed.entry(u.device.clone()).or_insert(0);
                if *wait > 0 {
                    *wait -= 1;
                    continue;
                }
                let dev = u.device.clone();
                match crate::dataplane::netns::run_in(netns, || {
                    crate::dataplane::garp::ArpProbe::open(&dev)
                }) {
                    Ok(Ok(s)) => {
                        self.failed.remove(&u.device);
                        self.open.insert(u.device.clone(), s);
                    }
                    Ok(Err(e)) | Err(e) => {
                        tracing::debug!(device = %u.device, error = %e, "upstream check cannot open its device; retrying");
                        *wait = HOLD_DOWN;
                    }
                }
                continue;
            }
            match self.open[&u.device].answered(u.gateway) {
                Ok(true) => out.push(u.clone()),
                Ok(false) => {}
                Err(e) => {
                    // The device went away (or was recreated): reopen.
                    tracing::debug!(device = %u.device, error = %e, "upstream check socket failed; reopening");
                    self.open.remove(&u.device);
                }
            }
        }
        out
    }

    /// One probe per upstream whose device is open.
    fn send(&mut self, targets: &[Upstream]) {
        for u in targets {
            if let Some(s) = self.open.get(&u.device) {
                // A down link refuses to send: that interval goes
                // unanswered, which is the point.
                let _ = s.send(u.gateway);
            }
        }
    }
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

/// A reply: `ready`, then two lists of router indexes (u16 count, u32
/// each), the claims and the unready ones. A reply without the second list
/// (an agent before upstream checks) parses with none unready.
fn reply(seq: u32, ready: bool, claims: &BTreeSet<u32>, unready: &BTreeSet<u32>) -> Vec<u8> {
    let mut b = header(REPLY, seq);
    b.push(ready as u8);
    let n = claims.len().min(MAX_CLAIMS);
    b.extend_from_slice(&(n as u16).to_be_bytes());
    for c in claims.iter().take(n) {
        b.extend_from_slice(&c.to_be_bytes());
    }
    let m = unready.len().min(MAX_CLAIMS - n);
    b.extend_from_slice(&(m as u16).to_be_bytes());
    for c in unready.iter().take(m) {
        b.extend_from_slice(&c.to_be_bytes());
    }
    b
}

/// A u16-counted list of u32 at `b[at..]`; the list and where it ends.
fn indexes(b: &[u8], at: usize) -> Option<(BTreeSet<u32>, usize)> {
    let n = u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
    let end = at + 2 + 4 * n;
    let body = b.get(at + 2..end)?;
    let list = body
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    Some((list, end))
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
            let (claims, end) = indexes(b, 11)?;
            let unready = if b.len() == end {
                BTreeSet::new()
            } else {
                indexes(b, end)?.0
            };
            Some(Msg::Reply {
                seq,
                ready,
                claims,
                unready,
            })
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
        let unready = BTreeSet::from([7]);
        match parse(&reply(9, false, &claims, &unready)) {
            Some(Msg::Reply {
                seq: 9,
                ready: false,
                claims: c,
                unready: u,
            }) => assert_eq!((c, u), (claims.clone(), unready.clone())),
            _ => panic!("reply did not parse"),
        }
        assert!(parse(b"KDVR\x02\x00\0\0\0\x01").is_none(), "other version");
        let full = reply(1, true, &claims, &unready);
        assert!(parse(&full[..14]).is_none(), "truncated");
        assert!(parse(&full[..full.len() - 1]).is_none(), "truncated");
        // An agent without upstream checks sends no second list.
        match parse(&full[..13 + 8]) {
            Some(Msg::Reply {
                claims: c,
                unready: u,
                ..
            }) => {
                assert_eq!(c, claims);
                assert!(u.is_empty());
            }
            _ => panic!("old reply did not parse"),
        }
    }

    #[test]
    fn sessions_go_down_after_misses_and_up_after_hold_down() {
        let (p, _rx) = Probes::new();
        let v: Ipv4Addr = "198.18.0.2".parse().unwrap();
        p.set_peers(&BTreeSet::from([v]));
        let state = |p: &Probes| p.state.lock().unwrap().peers[&v].state;
        let answer = |p: &Probes| {
            p.state
                .lock()
                .unwrap()
                .peers
                .get_mut(&v)
                .unwrap()
                .counts
                .answered = true
        };
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

    #[test]
    fn a_session_that_goes_down_forgets_its_claims_until_it_answers_again() {
        let (p, _rx) = Probes::new();
        let v: Ipv4Addr = "198.18.0.2".parse().unwrap();
        p.set_peers(&BTreeSet::from([v]));
        let now = Instant::now();
        {
            let mut st = p.state.lock().unwrap();
            let peer = st.peers.get_mut(&v).unwrap();
            peer.state = Session::Up;
            peer.claims = BTreeSet::from([7]);
            peer.heard = Some(now);
        }
        for _ in 0..MISSES {
            p.tick();
        }
        let st = p.state.lock().unwrap();
        let peer = &st.peers[&v];
        assert_eq!(peer.state, Session::Down);
        // The ticks ran at once: the last reply is still fresh, yet its
        // claim must not count any more.
        assert!(peer.fresh(Instant::now()));
        assert!(
            peer.claims.is_empty(),
            "claims of a down session: {:?}",
            peer.claims
        );
    }

    #[test]
    fn the_claims_of_a_peer_in_hold_down_age_out_and_wake_a_decision() {
        let (p, _rx) = Probes::new();
        let v: Ipv4Addr = "198.18.0.2".parse().unwrap();
        p.set_peers(&BTreeSet::from([v]));
        let claim = |heard: Instant| {
            let mut st = p.state.lock().unwrap();
            let peer = st.peers.get_mut(&v).unwrap();
            peer.state = Session::Down;
            peer.claims = BTreeSet::from([7]);
            peer.heard = Some(heard);
        };
        // Heard just now: the claim stands (it is waited for).
        claim(Instant::now());
        p.tick();
        assert_eq!(
            p.state.lock().unwrap().peers[&v].claims,
            BTreeSet::from([7])
        );
        // Silent for longer than FRESH, still Down: the claim goes.
        claim(Instant::now() - FRESH - Duration::from_millis(1));
        let (_, changed) = p.tick();
        assert!(p.state.lock().unwrap().peers[&v].claims.is_empty());
        assert!(changed, "a decision must be made again");
    }

    #[test]
    fn an_unanswered_upstream_makes_its_routers_unready_with_a_hold_down() {
        let (p, _rx) = Probes::new();
        let u = Upstream {
            device: "br-public".into(),
            gateway: "203.0.113.1".parse().unwrap(),
        };
        p.set_upstreams(BTreeMap::from([(u.clone(), BTreeSet::from([3, 4]))]));
        let ready = |p: &Probes, i| p.state.lock().unwrap().upstream_up(i);
        let answer = |p: &Probes| {
            p.state
                .lock()
                .unwrap()
                .upstreams
                .get_mut(&u)
                .unwrap()
                .counts
                .answered = true
        };
        assert!(ready(&p, 3), "not decided yet: trusted");
        for _ in 0..MISSES {
            p.tick();
        }
        assert!(!ready(&p, 3) && !ready(&p, 4));
        assert!(ready(&p, 5), "another network's router");
        assert_eq!(p.state.lock().unwrap().unready(), BTreeSet::from([3, 4]));
        for _ in 0..HOLD_DOWN - 1 {
            answer(&p);
            p.tick();
        }
        assert!(!ready(&p, 3), "still holding down");
        answer(&p);
        p.tick();
        assert!(ready(&p, 3));
        assert!(p.state.lock().unwrap().unready().is_empty());
        // A check no longer wanted ends.
        p.set_upstreams(BTreeMap::new());
        assert!(p.state.lock().unwrap().upstreams.is_empty());
    }
}
