//! One agent pass: plan from the caches, program the kernel when due,
//! report on the Node; and the uninstall pass.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use super::gateway;
use super::probe;
use super::watch::Caches;
use super::{health, input, keep, kernel, report, AgentOptions, Error};
use crate::cluster;
use crate::cluster::errors::{self, AgentError, Owners};
use crate::dataplane::engine::Engine;
use crate::plan::resolve::{qualify, resolve, ClusterInput};
use crate::plan::view::ClusterView;
use crate::plan::view::ObjectKey;
use crate::plan::{plan_node, plan_node_run, routers_on, Down, Serving};
use crate::telemetry::Telemetry;

/// How long a pass waits for the Ports of a router the node newly carries
/// to be listed.
const PORTS_SYNC: Duration = Duration::from_secs(10);

/// The networks (qualified NAD references) of the subnets of `routers`, as
/// the resolver's input has them: where their endpoints' Ports are.
fn networks_of(input: &ClusterInput, routers: &BTreeSet<ObjectKey>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in &input.routers {
        let ns = r.metadata.namespace.as_deref().unwrap_or_default();
        let name = r.metadata.name.as_deref().unwrap_or_default();
        if routers.contains(&ObjectKey::new(ns, name)) {
            let nets = r.spec.subnets.iter();
            out.extend(nets.map(|s| qualify(ns, &s.network_attachment)));
        }
    }
    out
}

pub(super) const M_KERNEL_WRITES: &str = "kube_dvr_kernel_writes_total";
pub(super) const M_KERNEL_WRITES_HELP: &str = "Kernel writes made by the agent, by kind.";
pub(super) const M_DURATION: &str = "kube_dvr_reconcile_duration_seconds";
pub(super) const M_DURATION_HELP: &str =
    "Duration of the agent's kernel passes (observe, diff, apply).";
pub(super) const M_PROGRAMMED: &str = "kube_dvr_programmed_objects";
pub(super) const M_PROGRAMMED_HELP: &str = "kube-dvr objects programmed on this node, by kind.";
pub(super) const M_ERRORS: &str = "kube_dvr_reconcile_errors_total";
pub(super) const M_ERRORS_HELP: &str = "Agent passes that ended with errors.";
pub(super) const M_API_WRITES: &str = "kube_dvr_api_writes_total";
pub(super) const M_API_WRITES_HELP: &str = "API writes made by the agent, by kind.";

/// Count one API write of `kind` (`kube_dvr_api_writes_total`).
pub(super) fn count_api_write(telemetry: &Telemetry, kind: &str) {
    telemetry.inc(M_API_WRITES, M_API_WRITES_HELP, &[("kind", kind)], 1);
}

pub(super) struct Agent {
    pub(super) opts: AgentOptions,
    pub(super) vtep: Ipv4Addr,
    pub(super) telemetry: Arc<Telemetry>,
    /// Writes the Node's annotations; the report task
    /// ([`report::write_reports`]) shares it.
    pub(super) reporter: Arc<tokio::sync::Mutex<report::NodeReporter>>,
    /// What the report task writes next.
    pub(super) wanted: tokio::sync::watch::Sender<report::Wanted>,
    /// VTEP and DVR MAC annotations.
    pub(super) facts: report::Annotations,
    pub(super) input: input::InputState,
    /// Digest of the last plan programmed without error.
    pub(super) last_ok: Option<String>,
    /// Consecutive failed passes (retry backoff).
    pub(super) failures: u32,
    /// Until when a pass waits for the controller rather than plan without
    /// objects held back ([`input::InputState::held_back`]).
    pub(super) hold_until: tokio::time::Instant,
    /// A pass has planned with the Ports of every subnet its node carries
    /// listed (see [`Agent::pass`]).
    pub(super) listed_once: bool,
    /// The last resolved view, for the CNI plugin's socket ([`super::cni`]).
    pub(super) published: tokio::sync::watch::Sender<Option<Arc<ClusterView>>>,
    /// What the last kernel pass kept beyond its plan ([`keep`]).
    pub(super) kept: crate::dataplane::keep::Keep,
    /// The gateway probes ([`probe`]).
    pub(super) probes: probe::Probes,
    /// The serving node of each SNAT gateway in this node's view, as last
    /// decided ([`gateway`]).
    pub(super) serving: std::collections::BTreeMap<ObjectKey, String>,
    /// Of those, the ones that differ from the plan, as last programmed.
    pub(super) overrides: Serving,
    /// Health checks of the load balancers this node serves ([`health`]).
    pub(super) health: health::Checks,
    /// The backends left out, as last programmed.
    pub(super) down: Down,
}

pub(super) const M_PROBE_UP: &str = "kube_dvr_gateway_probe_up";
pub(super) const M_PROBE_UP_HELP: &str =
    "Underlay probe session to a peer node: 1 up, 0 down (or not ready).";
pub(super) const M_UPSTREAM_UP: &str = "kube_dvr_gateway_upstream_up";
pub(super) const M_UPSTREAM_UP_HELP: &str =
    "The external network's gateway answers ARP from this node (1), or not (0): a SNAT gateway candidate without it hands over.";
pub(super) const M_SNAT_ACTIVE: &str = "kube_dvr_snat_gateway_active";
pub(super) const M_SNAT_ACTIVE_HELP: &str =
    "1 when this node serves the SnatGateway (attached), 0 when it is a warm standby.";
pub(super) const M_SNAT_SERVING_RANK: &str = "kube_dvr_snat_gateway_serving_rank";
pub(super) const M_SNAT_SERVING_RANK_HELP: &str =
    "The candidate rank of the node this node sends the SnatGateway's traffic to (0: the planned one).";
pub(super) const M_FAILOVERS: &str = "kube_dvr_snat_gateway_switches_total";
pub(super) const M_FAILOVERS_HELP: &str =
    "Times this node's choice of serving node for a SnatGateway changed.";

impl Agent {
    pub(super) fn api_write(&self, kind: &str) {
        count_api_write(&self.telemetry, kind);
    }

    pub(super) fn backoff(&self) -> Duration {
        crate::backoff::exponential(
            self.failures,
            Duration::from_millis(500),
            Duration::from_secs(30),
        )
    }

    fn own_node(&self, caches: &Caches) -> Option<Arc<Node>> {
        caches.nodes.get(&ObjectRef::new(&self.opts.node))
    }

    /// One pass: plan, program (when due), report. Returns whether it
    /// succeeded completely.
    ///
    /// The kernel is left alone when the plan's digest is the one last
    /// programmed cleanly (an unrelated Pod or Node changed), unless `force`
    /// (resync, retry). A changed plan goes through the change path; a
    /// forced pass, or the first after errors, observes everything.
    pub(super) async fn pass(
        &mut self,
        engine: Engine,
        caches: &Caches,
        force: bool,
    ) -> Result<(Engine, bool), Error> {
        let Some(node) = self.own_node(caches) else {
            // Planning without our own Node would plan everything away.
            tracing::warn!(node = %self.opts.node, "own node not in cache; skipping pass");
            return Ok((engine, false));
        };
        let now =
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
        // The Ports of the subnets of the routers this node carries are
        // watched and listed before they are planned. Until the first such
        // pass (a start: the kernel holds what an earlier run programmed) a
        // router planned with part of its endpoints would lose the others'
        // tunnels, so the pass waits for every list (bounded, then retried).
        // Afterwards a network not listed yet is a router newly carried
        // (nothing of it to lose): it is planned with what is listed, and
        // its list brings the rest in the next pass; no pass (failover
        // decisions included) waits for a list.
        let mut attempts = 0;
        let (snap, view, held) = loop {
            // Read before the snapshot: a list that completes in between is
            // not taken for one the snapshot holds.
            let listed = caches.ports.listed();
            let snap = caches.snapshot();
            let input = self
                .input
                .cluster_input(&snap, &self.opts.node, self.vtep, now);
            let held = self.input.held_back();
            if held > 0 && tokio::time::Instant::now() < self.hold_until {
                // Started while the controller has not processed an edit:
                // the version programmed before is unknown to this agent,
                // and planning without the object would tear its state
                // down. Wait (bounded).
                tracing::info!(
                    objects = held,
                    "waiting for the controller to process edited objects"
                );
                return Ok((engine, false));
            }
            let view = resolve(&input).view;
            let networks = networks_of(&input, &routers_on(&view, &self.opts.node));
            caches.ports.track(&networks);
            let unlisted: BTreeSet<String> = networks.difference(&listed).cloned().collect();
            if unlisted.is_empty() || self.listed_once {
                break (snap, view, held);
            }
            attempts += 1;
            let still = caches.ports.wait_synced(&unlisted, PORTS_SYNC).await;
            if !still.is_empty() || attempts > 3 {
                tracing::warn!(
                    networks = ?unlisted,
                    "the Ports of subnets this node carries are not listed yet; not planning"
                );
                return Ok((engine, false));
            }
        };
        self.listed_once = true;
        // Shared with the CNI socket ([`super::cni`]) without a copy.
        let view = Arc::new(view);
        self.published.send_replace(Some(view.clone()));
        let plan = plan_node(&view, &self.opts.node);
        let digest = cluster::plan_digest(&plan);
        // Which candidate serves is this node's run-time decision: it
        // changes what is programmed, never the digest reported.
        let overrides = self.decide_gateways(&view);
        // So are the load-balancer backends its health checks took out.
        let down = self.check_backends(&view, &overrides);
        let plan = if overrides.is_empty() && down.is_empty() {
            plan
        } else {
            plan_node_run(&view, &self.opts.node, &overrides, &down)
        };
        let keep = keep::keep(&snap, self.input.held(), &self.opts.node);
        if !keep.is_empty() {
            tracing::info!(
                objects = held,
                namespaces = keep.namespaces.len(),
                links = keep.links.len(),
                "keeping the kernel state of objects not resolved yet"
            );
        }

        let mut engine = engine;
        let mut errors: Vec<AgentError> = Vec::new();
        // A changed keep set is a change too: state kept so far may go.
        if force
            || self.last_ok.as_deref() != Some(digest.as_str())
            || keep != self.kept
            || overrides != self.overrides
            || down != self.down
        {
            let kind = if force || self.last_ok.is_none() {
                kernel::Pass::Full
            } else {
                kernel::Pass::Changes
            };
            let t0 = std::time::Instant::now();
            self.kept = keep.clone();
            // Gateways this pass attaches pass the fence before their
            // gratuitous ARPs go out.
            self.probes.arm(self.claims(&view, &overrides));
            let (e, res) = kernel::program(engine, plan, keep, kind).await?;
            engine = e;
            let pass = match kind {
                kernel::Pass::Full => "full",
                kernel::Pass::Changes => "changes",
            };
            self.telemetry.observe(
                M_DURATION,
                M_DURATION_HELP,
                &[("pass", pass)],
                t0.elapsed().as_secs_f64(),
            );
            match res {
                Ok(report) => {
                    for (kind, n) in report.writes.by_kind() {
                        self.telemetry.inc(
                            M_KERNEL_WRITES,
                            M_KERNEL_WRITES_HELP,
                            &[("kind", kind)],
                            *n,
                        );
                    }
                    if report.writes.total() > 0 {
                        tracing::info!(writes = report.writes.total(), %digest, "kernel programmed");
                    }
                    let owners = owners(&view, &snap);
                    errors.extend(report.errors.iter().map(|e| {
                        let message = format!("{}: {}", e.op, e.error);
                        AgentError {
                            object: owners.attribute(&message),
                            message,
                        }
                    }));
                }
                Err(e) => errors.push(AgentError {
                    object: None,
                    message: e.to_string(),
                }),
            }
            self.overrides = overrides;
            self.down = down;
            self.announce_claims(&view);
            if errors.is_empty() {
                self.last_ok = Some(digest.clone());
                self.failures = 0;
                self.set_programmed(&view);
            } else {
                self.last_ok = None;
                self.failures += 1;
                self.telemetry.inc(M_ERRORS, M_ERRORS_HELP, &[], 1);
                tracing::warn!(errors = errors.len(), first = %errors[0].message, "kernel pass had errors");
            }
        }

        // `/readyz`: the first pass reached the kernel.
        self.telemetry.set_ready(true);

        let mut want = self.facts.clone();
        want.insert(cluster::CLEANED_ANNOTATION, None);
        want.insert(cluster::AGENT_ERRORS_ANNOTATION, errors::encode(&errors));
        // The digest of the plan the pass applied, errors or not: the errors
        // name the objects it could not program (see `cluster::errors`), so
        // the controller counts every other object on this node as
        // programmed (and none while a node-wide error is listed).
        want.insert(cluster::PROGRAMMED_ANNOTATION, Some(digest));
        // Which gateways this node serves (run-time state): the controller
        // records it as `activeNode`.
        want.insert(cluster::SNAT_SERVING_ANNOTATION, self.serving_report(&view));
        // The backends it took out, for LoadBalancer statuses.
        want.insert(cluster::LB_DOWN_ANNOTATION, health::annotation(&self.down));
        // Written by the report task: this pass, which may be a failover,
        // does not wait for the API server.
        self.wanted.send_replace(Some((node, want)));
        Ok((engine, errors.is_empty()))
    }

    /// Decide every relevant SNAT gateway's serving node from the probes
    /// (see [`gateway`]), point the probes at the candidates, and return
    /// the decisions that differ from the plan. Without running probes
    /// (no socket) the plan is followed.
    fn decide_gateways(&mut self, view: &ClusterView) -> Serving {
        let me = self.opts.node.as_str();
        let now = std::time::Instant::now();
        let vtep_of = |n: &str| view.nodes.get(n).map(|f| f.vtep);
        let peers: std::collections::BTreeSet<_> = gateway::relevant(view, me)
            .flat_map(|s| s.candidates.iter())
            .filter(|c| c.as_str() != me)
            .filter_map(|c| vtep_of(c))
            .collect();
        self.probes.set_peers(&peers);
        // Check the upstream of every external network this node is a
        // candidate on, from the device its external ports hang on.
        let mut networks: std::collections::BTreeMap<&str, probe::Upstream> = Default::default();
        let mut upstreams: std::collections::BTreeMap<
            probe::Upstream,
            std::collections::BTreeSet<u32>,
        > = Default::default();
        for s in gateway::relevant(view, me).filter(|s| s.candidates.iter().any(|c| c == me)) {
            let (Some(ext), Some(r)) = (
                view.external_networks.get(&s.external),
                view.routers.iter().find(|r| r.key == s.router),
            ) else {
                continue;
            };
            let device = match &ext.attachment {
                crate::plan::view::Attachment::Bridge(d)
                | crate::plan::view::Attachment::Interface(d) => d.clone(),
            };
            let u = probe::Upstream {
                device,
                gateway: ext.gateway,
            };
            networks.insert(s.external.as_str(), u.clone());
            upstreams.entry(u).or_default().insert(r.index);
        }
        self.probes.set_upstreams(upstreams);
        // The gateways' subnet ports, fenced with their external ones.
        let subnet_ports = gateway::relevant(view, me)
            .filter_map(|s| {
                let r = view.routers.iter().find(|r| r.key == s.router)?;
                let ports = (r.subnets.iter())
                    .filter(|sub| s.port_on(&sub.name).is_some())
                    .map(|sub| crate::plan::names::sg_bridge(sub.vni))
                    .collect();
                Some((r.index, ports))
            })
            .collect();
        self.probes.set_subnet_ports(subnet_ports);
        let decisions = {
            let st = self.probes.state.lock().unwrap();
            if !st.running {
                return Serving::new();
            }
            for (name, f) in &view.nodes {
                if let Some(p) = st.peers.get(&f.vtep) {
                    let up = p.up();
                    self.telemetry.set(
                        M_PROBE_UP,
                        M_PROBE_UP_HELP,
                        &[("peer", name)],
                        up as u8 as f64,
                    );
                }
            }
            for (network, u) in &networks {
                let up = st.upstreams.get(u).is_none_or(|c| c.up());
                self.telemetry.set(
                    M_UPSTREAM_UP,
                    M_UPSTREAM_UP_HELP,
                    &[("network", network)],
                    up as u8 as f64,
                );
            }
            let seen = |n: &str, index: u32| {
                let Some(p) = vtep_of(n).and_then(|v| st.peers.get(&v)) else {
                    return gateway::Seen::default();
                };
                gateway::Seen {
                    up: p.up(),
                    init: p.state == probe::Session::Init,
                    claims: p.fresh(now) && p.claims.contains(&index),
                    ready: !p.unready.contains(&index),
                }
            };
            let hold = probe::INTERVAL * probe::HOLD_DOWN;
            let stay = st.ready && st.sees_peer(now);
            let activate = st.ready
                && st
                    .visible_since
                    .is_some_and(|t| now.duration_since(t) >= hold || t == st.started);
            // A gateway fenced when this agent started (its predecessor died
            // a while ago): neither kept nor taken until the hold-down (the
            // probe task forgets it then and wakes a decision).
            let own = |index: u32| {
                let fenced = st.fenced_at_start.contains(&index);
                gateway::Me {
                    stay: stay && !fenced,
                    activate: activate && !fenced,
                    ready: st.upstream_up(index),
                }
            };
            gateway::decide_all(view, me, &self.serving, seen, own)
        };
        let mut overrides = Serving::new();
        let mut serving = std::collections::BTreeMap::new();
        for s in gateway::relevant(view, me) {
            let Some((node, _)) = decisions.get(&s.key) else {
                continue;
            };
            let label = s.key.to_string();
            if self.serving.get(&s.key).is_some_and(|old| old != node) {
                tracing::info!(gateway = %label, from = %self.serving[&s.key], to = %node, "SNAT gateway now served elsewhere in this node's view");
                self.telemetry
                    .inc(M_FAILOVERS, M_FAILOVERS_HELP, &[("gateway", &label)], 1);
            }
            let rank = s.candidates.iter().position(|c| c == node).unwrap_or(0);
            self.telemetry.set(
                M_SNAT_SERVING_RANK,
                M_SNAT_SERVING_RANK_HELP,
                &[("gateway", &label)],
                rank as f64,
            );
            if s.candidates.iter().any(|c| c == me) {
                self.telemetry.set(
                    M_SNAT_ACTIVE,
                    M_SNAT_ACTIVE_HELP,
                    &[("gateway", &label)],
                    (node == me) as u8 as f64,
                );
            }
            if s.candidates.first() != Some(node) {
                overrides.insert(s.key.clone(), node.clone());
            }
            serving.insert(s.key.clone(), node.clone());
        }
        self.serving = serving;
        overrides
    }

    /// Point the health checks at the load balancers whose gateway this
    /// node serves under `overrides`; the backends they found failing.
    fn check_backends(&self, view: &ClusterView, overrides: &Serving) -> Down {
        let me = self.opts.node.as_str();
        let mut targets = std::collections::BTreeMap::new();
        for lb in &view.load_balancers {
            let served = (view.snat_gateways.iter())
                .find(|s| s.router == lb.router)
                .is_some_and(|s| crate::plan::serving_node(s, overrides) == Some(me));
            let Some(router) = view.routers.iter().find(|r| r.key == lb.router) else {
                continue;
            };
            if served {
                let ns = crate::plan::names::snat_ns(router.index);
                targets.insert(
                    lb.key.clone(),
                    health::Target {
                        ns: crate::dataplane::netns::path(&self.opts.engine.netns_dir, &ns),
                        backends: lb.backends.clone(),
                        health: lb.health.clone(),
                    },
                );
            }
        }
        self.health.set_targets(targets);
        self.health.down()
    }

    /// The router indexes of the gateways this node serves under
    /// `overrides`.
    fn claims(&self, view: &ClusterView, overrides: &Serving) -> std::collections::BTreeSet<u32> {
        let me = self.opts.node.as_str();
        gateway::relevant(view, me)
            .filter(|s| crate::plan::serving_node(s, overrides) == Some(me))
            .filter_map(|s| view.routers.iter().find(|r| r.key == s.router))
            .map(|r| r.index)
            .collect()
    }

    /// Tell peers (in probe replies) which gateways this node serves now
    /// that the kernel has them (and the fence: only these stay open).
    fn announce_claims(&self, view: &ClusterView) {
        self.probes
            .set_serving(true, self.claims(view, &self.overrides));
    }

    /// The SnatGateways this node serves as programmed, for
    /// [`cluster::SNAT_SERVING_ANNOTATION`] (`None`: none).
    fn serving_report(&self, view: &ClusterView) -> Option<String> {
        let me = self.opts.node.as_str();
        let keys: Vec<String> = view
            .snat_gateways
            .iter()
            .filter(|s| crate::plan::serving_node(s, &self.overrides) == Some(me))
            .map(|s| s.key.to_string())
            .collect();
        (!keys.is_empty()).then(|| keys.join(","))
    }

    /// `kube_dvr_programmed_objects`: what this node serves of each kind.
    fn set_programmed(&self, view: &ClusterView) {
        let node = self.opts.node.as_str();
        let routers = view
            .routers
            .iter()
            .filter(|r| r.endpoints.iter().any(|e| e.node == node))
            .count();
        let fips = view.floating_ips.iter().filter(|f| f.node == node).count();
        let snats = view
            .snat_gateways
            .iter()
            .filter(|s| crate::plan::serving_node(s, &self.overrides) == Some(node))
            .count();
        for (kind, n) in [
            ("DistributedRouter", routers),
            ("FloatingIP", fips),
            ("SnatGateway", snats),
        ] {
            self.telemetry
                .set(M_PROGRAMMED, M_PROGRAMMED_HELP, &[("kind", kind)], n as f64);
        }
    }

    /// Remove all kernel state and say so on the Node. The inner result
    /// says whether that is done (else it is retried); the outer one is
    /// fatal.
    pub(super) async fn uninstall(
        &mut self,
        engine: Engine,
        caches: &Caches,
    ) -> Result<(Engine, Result<(), Error>), Error> {
        let (engine, res) = kernel::with_engine(engine, |e| e.cleanup()).await?;
        let report = match res {
            Ok(r) => r,
            Err(source) => return Ok((engine, Err(Error::Engine { source }))),
        };
        for (kind, n) in report.writes.by_kind() {
            self.telemetry
                .inc(M_KERNEL_WRITES, M_KERNEL_WRITES_HELP, &[("kind", kind)], *n);
        }
        if let Some(first) = report.errors.first() {
            let err = Error::Cleanup {
                failed: report.errors.len(),
                first: format!("{}: {}", first.op, first.error),
            };
            return Ok((engine, Err(err)));
        }
        self.last_ok = None;
        self.set_programmed(&ClusterView::default());
        // Nothing served: the fence closes and goes.
        self.probes.set_serving(true, Default::default());
        let root = self.opts.engine.root_netns.clone();
        let removed =
            tokio::task::spawn_blocking(move || crate::dataplane::fence::remove_table(&root))
                .await
                .map_err(|e| Error::Task(e.to_string()))?;
        if let Err(e) = removed {
            tracing::warn!(error = %e, "removing the gateway fence table");
        }
        let Some(node) = self.own_node(caches) else {
            return Ok((engine, Err(Error::NodeNotCached)));
        };
        // No pass report may land after this one: stop the report task's
        // retries and wait for a write in flight (bounded: with a hung API
        // server this uninstall pass fails and is retried).
        self.wanted.send_replace(None);
        let Ok(mut reporter) =
            tokio::time::timeout(Duration::from_secs(5), self.reporter.lock()).await
        else {
            return Ok((engine, Err(Error::ReportInFlight)));
        };
        let want = report::Annotations::from([
            (cluster::CLEANED_ANNOTATION, Some("true".to_string())),
            (cluster::PROGRAMMED_ANNOTATION, None),
            (cluster::SNAT_SERVING_ANNOTATION, None),
            (cluster::LB_DOWN_ANNOTATION, None),
            (cluster::AGENT_ERRORS_ANNOTATION, None),
        ]);
        match reporter.report(&node, &want).await {
            Ok(wrote) => {
                if wrote {
                    self.api_write("Node");
                }
                Ok((engine, Ok(())))
            }
            Err(e) => Ok((engine, Err(e))),
        }
    }
}

/// Who owns which kernel name: the objects of the view, and the objects
/// being deleted (whose state the pass removes).
fn owners(view: &ClusterView, snap: &input::Snapshot) -> Owners {
    fn deleting<K: kube::Resource>(v: &[Arc<K>]) -> Vec<&K> {
        v.iter()
            .filter(|o| o.meta().deletion_timestamp.is_some())
            .map(|o| o.as_ref())
            .collect()
    }
    let mut o = Owners::from_view(view);
    o.add_deleting(
        &deleting(&snap.external_networks),
        &deleting(&snap.routers),
        &deleting(&snap.floating_ips),
        &deleting(&snap.snat_gateways),
    );
    o
}
