//! The agent's side of kube-dvr's IPAM: the Port records of its node.
//!
//! A Port is named after its address (`<router>.<subnet>.<ip>`,
//! [`port_name`]), so allocating an address is creating that name: when
//! two agents (or two ADDs on one node) pick the same address, the API
//! server accepts exactly one create and answers 409 to the other, which
//! tries the next free address. No node-local file, no lock across nodes.
//!
//! Free addresses are found from the agent's Port cache (every Port of the
//! cluster: east-west needs the remote ones anyway); the gateway and the
//! SNAT gateway's ports are reserved by the caller. The search starts at a
//! pseudo-random offset, so concurrent ADDs on different nodes rarely
//! collide. Creates this agent made and its cache has not seen yet are
//! skipped too.
//!
//! An ADD that is retried (same container ID and interface on this node)
//! gets its Port back. Release (CNI DEL) deletes the node's Ports of a
//! container ID and interface; Ports whose DEL never reached an agent are
//! collected by the controller once their pod is gone.
//!
//! A KubeVirt virt-launcher pod (its controlling owner is a
//! VirtualMachineInstance) gets its VM's Port (`spec.vm`): the one the VM
//! already has on that subnet, whatever node it was made on, else a new
//! one. The pod is then a binding in the Port's status (added by ADD,
//! removed by DEL, never the Port itself: the address stays the VM's across
//! restarts and migrations; the controller deletes the Port once the VM is
//! gone).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use std::sync::{Arc, Mutex};

use super::port_cache::PortCache;
use crate::api::{
    delete_only, kubevirt, port_name, DistributedRouter, Port, PortBinding, PortSpec,
};
use crate::plan::model::MacAddr;
use crate::plan::names;
use crate::plan::resolve::qualify;

/// Default of [`super::AgentOptions::orphan_grace`].
pub const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// Bound on one API call of an allocation or release.
const API_TIMEOUT: Duration = Duration::from_secs(8);
/// Read-modify-write attempts on a VM Port's bindings (others' agents
/// write theirs concurrently).
const BIND_ATTEMPTS: usize = 8;
/// Creates tried before an allocation gives up as contended.
const MAX_ATTEMPTS: usize = 64;
/// An allocation gives up after this (well inside the plugin's 20 s wait
/// for the agent, so the plugin never gives up on a create that lands).
const ALLOCATE_BUDGET: Duration = Duration::from_secs(12);
/// How long an ADD waits for its subnet's Ports to be listed.
const SUBNET_PORTS_WAIT: Duration = Duration::from_secs(4);

/// Why an allocation or release failed: a reason (CamelCase, as in
/// conditions) and a message for the pod's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refusal(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

fn api_down(what: &str, e: impl std::fmt::Display) -> Refusal {
    refusal(
        "ApiUnavailable",
        format!("{what}: the API server did not accept it: {e}"),
    )
}

/// One interface to record: where it attaches and whose it is.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub namespace: &'a str,
    pub router: &'a str,
    pub subnet: &'a str,
    pub cidr: Ipv4Net,
    /// Never handed out: the gateway, the SNAT gateway's ports.
    pub reserved: Vec<Ipv4Addr>,
    /// A static address (Multus `ips`), else the next free one.
    pub ip: Option<Ipv4Addr>,
    /// A static MAC (Multus `mac`), else one derived from the address.
    pub mac: Option<MacAddr>,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub container_id: &'a str,
    pub interface: &'a str,
}

/// The address and MAC a claim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Whether this claim created the Port (a retried ADD gets an earlier
    /// one back: a failure after it must not release it).
    pub created: bool,
}

/// A Port this agent is creating, or created and its cache has not shown
/// yet.
#[derive(Debug, Clone)]
struct Pending {
    container_id: String,
    interface: String,
    /// A VM's Port: released by unbinding, never deleted.
    vm: bool,
    /// Set once created: what it holds and its UID.
    made: Option<(Granted, Option<String>)>,
}

/// The MAC of an address without a static one: `0a:58:` and the address,
/// as ovn-kubernetes does (unique wherever the address is).
pub fn derived_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

/// The Port records of one node.
pub struct PortRecords {
    client: Client,
    node: String,
    ports: Arc<PortCache>,
    routers: Store<DistributedRouter>,
    /// Ports this agent is creating or created that its cache may not hold
    /// yet, by (namespace, name).
    pending: Mutex<BTreeMap<(String, String), Pending>>,
}

impl PortRecords {
    pub fn new(
        client: Client,
        node: &str,
        ports: Arc<PortCache>,
        routers: Store<DistributedRouter>,
    ) -> PortRecords {
        PortRecords {
            client,
            node: node.to_string(),
            ports,
            routers,
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    fn ours(&self, p: &Port, container_id: &str, interface: &str) -> bool {
        p.binds(&self.node, container_id, interface)
    }

    /// The VM pod `c` carries (its controlling VirtualMachineInstance
    /// owner), from the API: None for any other pod, or one the API does
    /// not know (a sandbox without a pod object).
    async fn vm_of(&self, c: &Claim<'_>) -> Result<Option<String>, Refusal> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), c.namespace);
        let what = format!("reading pod {}/{}", c.namespace, c.pod);
        let pod = match tokio::time::timeout(API_TIMEOUT, pods.get_opt(c.pod)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(api_down(&what, e)),
            Err(_) => return Err(api_down(&what, "timed out")),
        };
        Ok(pod
            .filter(|p| c.pod_uid.is_empty() || p.metadata.uid.as_deref() == Some(c.pod_uid))
            .and_then(|p| kubevirt::vm_of(p.owner_references())))
    }

    /// Record `c`: its Port (an earlier ADD's when retried), or a new one.
    /// Concurrent ADDs on this node run their API calls in parallel: each
    /// reserves its candidate name in `pending` first (under a lock held
    /// only to pick), so two never try the same address.
    pub async fn allocate(&self, c: &Claim<'_>) -> Result<Granted, Refusal> {
        // The budget covers the wait for the subnet's Ports too.
        let deadline = tokio::time::Instant::now() + ALLOCATE_BUDGET;
        let network = self.network(c)?;
        // The subnet's Ports, to pick a free address (without them the
        // API's name uniqueness still refuses a taken one: only slower).
        if !self.ports.ensure(&network, SUBNET_PORTS_WAIT).await {
            tracing::warn!(%network, "the subnet's Ports are not listed yet; allocating without them");
        }
        let cached = self.ports.state();
        // A retried ADD: the Port this container's interface has.
        if let Some(p) = cached.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(c.namespace)
                && self.ours(p, c.container_id, c.interface)
        }) {
            return self.reuse(p, c);
        }
        if let Some(done) = self.pending_of(c)? {
            return Ok(done);
        }
        let vm = self.vm_of(c).await?;
        if let Some(vm) = &vm {
            // The VM's address, wherever it was allocated.
            let held = cached.iter().find(|p| {
                p.metadata.namespace.as_deref() == Some(c.namespace)
                    && p.spec.vm == *vm
                    && p.spec.router == c.router
                    && p.spec.subnet == c.subnet
            });
            if let Some(p) = held {
                let g = granted(p);
                if c.ip.is_some_and(|ip| ip != g.ip) || c.mac.is_some_and(|m| m != g.mac) {
                    return Err(refusal(
                        "AddressTaken",
                        format!(
                            "VM {vm} has {} ({}) on {}/{} subnet {} (Port {}): its pods get \
                             that address and MAC, not another",
                            g.ip,
                            g.mac,
                            c.namespace,
                            c.router,
                            c.subnet,
                            p.name_any()
                        ),
                    ));
                }
                let added = self.bind(c, &p.name_any()).await?;
                return Ok(Granted {
                    created: added,
                    ..g
                });
            }
        }
        let vm = vm.as_deref();
        let mut taken: std::collections::BTreeSet<Ipv4Addr> = cached
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(c.namespace))
            .filter(|p| p.spec.router == c.router && p.spec.subnet == c.subnet)
            .filter_map(|p| p.spec.ip.parse().ok())
            .collect();
        taken.extend(c.reserved.iter().copied());
        let api: Api<Port> = Api::namespaced(self.client.clone(), c.namespace);
        if let Some(ip) = c.ip {
            let port = self.port(c, &network, ip, vm);
            let key = (c.namespace.to_string(), port.name_any());
            if !self.reserve(&key, c, vm.is_some()) {
                return Err(refusal(
                    "AddressTaken",
                    format!("{ip} is being allocated by another ADD on this node"),
                ));
            }
            let created = self.create(&api, &port).await;
            self.settle(&key, &created);
            return match created?.is_some() {
                true => self.made(c, &port).await,
                false => {
                    // Taken: ours from an earlier ADD the cache has not
                    // seen, or someone else's.
                    let existing = get(&api, &port.name_any()).await?;
                    match existing {
                        Some(p) if self.ours(&p, c.container_id, c.interface) => self.reuse(&p, c),
                        Some(p) => Err(taken_by(ip, &p)),
                        None => Err(refusal(
                            "AddressTaken",
                            format!("{ip} was taken and released while allocating; try again"),
                        )),
                    }
                }
            };
        }
        let hosts = host_count(c.cidr);
        let start = seed(c) % hosts.max(1);
        let mut next = 0;
        for _ in 0..MAX_ATTEMPTS {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // The next candidate no one holds or is creating, reserved.
            let picked = loop {
                if next >= hosts {
                    break None;
                }
                let ip = nth_host(c.cidr, (start + next) % hosts);
                next += 1;
                if taken.contains(&ip) {
                    continue;
                }
                let key = (c.namespace.to_string(), port_name(c.router, c.subnet, ip));
                if self.reserve(&key, c, vm.is_some()) {
                    break Some((ip, key));
                }
            };
            let Some((ip, key)) = picked else {
                return Err(refusal(
                    "SubnetExhausted",
                    format!(
                        "subnet {} ({}) of router {}/{} has no free address",
                        c.subnet, c.cidr, c.namespace, c.router
                    ),
                ));
            };
            let port = self.port(c, &network, ip, vm);
            let created = self.create(&api, &port).await;
            self.settle(&key, &created);
            if created?.is_some() {
                return self.made(c, &port).await;
            }
            taken.insert(ip);
        }
        Err(refusal(
            "AllocationContended",
            format!(
                "the addresses of subnet {} ({}) tried were taken by others while \
                 allocating; try again",
                c.subnet, c.cidr
            ),
        ))
    }

    /// Reserve Port name `key` for `c` unless a concurrent ADD on this node
    /// has (entries the cache now holds are dropped first).
    fn reserve(&self, key: &(String, String), c: &Claim<'_>, vm: bool) -> bool {
        let mut pending = self.pending.lock().expect("not poisoned");
        pending.retain(|(ns, name), _| self.ports.get(ns, name).is_none());
        if pending.contains_key(key) {
            return false;
        }
        pending.insert(
            key.clone(),
            Pending {
                container_id: c.container_id.to_string(),
                interface: c.interface.to_string(),
                vm,
                made: None,
            },
        );
        true
    }

    /// After a create of `key`: keep the reservation with what was made,
    /// or drop it (taken, or failed).
    fn settle(&self, key: &(String, String), created: &Result<Option<Port>, Refusal>) {
        let mut pending = self.pending.lock().expect("not poisoned");
        match created {
            Ok(Some(p)) => {
                if let Some(e) = pending.get_mut(key) {
                    e.made = Some((granted(p), p.metadata.uid.clone()));
                }
            }
            _ => {
                pending.remove(key);
            }
        }
    }

    /// A retried ADD whose Port this agent made and its cache does not
    /// show yet; an ADD of the same interface still in flight is refused.
    fn pending_of(&self, c: &Claim<'_>) -> Result<Option<Granted>, Refusal> {
        let pending = self.pending.lock().expect("not poisoned");
        let hit = pending.iter().find(|((ns, _), e)| {
            ns == c.namespace && e.container_id == c.container_id && e.interface == c.interface
        });
        match hit {
            None => Ok(None),
            Some((
                _,
                Pending {
                    made: Some((g, _)), ..
                },
            )) => Ok(Some(*g)),
            Some(_) => Err(refusal(
                "AllocationInProgress",
                format!(
                    "an ADD of interface {} of container {} is still allocating; try again",
                    c.interface, c.container_id
                ),
            )),
        }
    }

    /// Delete this node's Ports whose interface is not among `links` (the
    /// host veth `dvrp<hash>` the plugin makes: a DEL that found the agent
    /// down removed it and left the Port, which would keep the address and
    /// route to nothing while the pod lives on with a new sandbox). Only
    /// Ports missing in `missing` since at least `grace` go (an ADD in
    /// progress has its Port before its veth); UID-conditional. Returns
    /// how many were deleted.
    pub async fn collect_orphans(
        &self,
        links: &std::collections::HashSet<String>,
        missing: &mut BTreeMap<String, tokio::time::Instant>,
        grace: Duration,
    ) -> usize {
        let now = tokio::time::Instant::now();
        let mut seen = std::collections::BTreeSet::new();
        let mut gone = Vec::new();
        for p in self.ports.state().iter() {
            for b in p.bindings_on(&self.node) {
                let host = kube_dvr_cni::host_name(&b.container_id, &b.interface);
                if links.contains(&host) {
                    continue;
                }
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                // A VM's Port loses only the binding.
                let key = match p.is_vm() {
                    true => format!("{uid}/{}/{}", b.container_id, b.interface),
                    false => uid.clone(),
                };
                seen.insert(key.clone());
                let since = *missing.entry(key).or_insert(now);
                if now.duration_since(since) >= grace {
                    let vm = p.is_vm().then_some(b);
                    gone.push((p.namespace().unwrap_or_default(), p.name_any(), uid, vm));
                }
            }
        }
        missing.retain(|key, _| seen.contains(key));
        let mut n = 0;
        for (ns, name, uid, vm) in gone {
            let done = match &vm {
                Some(b) => {
                    self.unbind(&ns, &name, &b.node, &b.container_id, &b.interface)
                        .await
                }
                None => self.delete_seen(&ns, &name, Some(uid)).await,
            };
            match done {
                Ok(true) => {
                    n += 1;
                    tracing::info!(port = %format!("{ns}/{name}"), vm = vm.is_some(), "released a Port (a VM's: its binding) whose interface is gone");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(port = %format!("{ns}/{name}"), error = %e.message, "deleting an orphaned Port")
                }
            }
        }
        n
    }

    /// Delete Port `ns/name` only while it has `uid` ([`delete_only`]):
    /// `Ok(false)` when it is gone or is another Port of that address now.
    async fn delete_seen(
        &self,
        ns: &str,
        name: &str,
        uid: Option<String>,
    ) -> Result<bool, Refusal> {
        let api: Api<Port> = Api::namespaced(self.client.clone(), ns);
        let dp = delete_only(uid);
        let what = format!("deleting Port {ns}/{name}");
        match tokio::time::timeout(API_TIMEOUT, api.delete(name, &dp)).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => Ok(false),
            Ok(Err(e)) => Err(api_down(&what, e)),
            Err(_) => Err(api_down(&what, "timed out")),
        }
    }

    /// Delete this node's Ports of `container_id`'s `interface` in
    /// `namespace` (none is fine: DEL is idempotent).
    pub async fn release(
        &self,
        namespace: &str,
        container_id: &str,
        interface: &str,
    ) -> Result<usize, Refusal> {
        // Each with the UID it was seen with: the name is the address, and
        // a Port someone else made of it since must not go instead. A VM's
        // Port stays: only this pod's binding goes.
        let mut names: Vec<(String, Option<String>, bool)> = (self.ports.state().iter())
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| self.ours(p, container_id, interface))
            .map(|p| (p.name_any(), p.metadata.uid.clone(), p.is_vm()))
            .collect();
        self.pending
            .lock()
            .expect("not poisoned")
            .retain(|(ns, name), e| {
                let hit =
                    ns == namespace && e.container_id == container_id && e.interface == interface;
                if let (true, Some((_, uid))) = (hit, &e.made) {
                    if !names.iter().any(|(n, _, _)| n == name) {
                        names.push((name.clone(), uid.clone(), e.vm));
                    }
                }
                !hit
            });
        for (name, uid, vm) in &names {
            match vm {
                true => {
                    self.unbind(namespace, name, &self.node, container_id, interface)
                        .await?
                }
                false => self.delete_seen(namespace, name, uid.clone()).await?,
            };
        }
        Ok(names.len())
    }

    /// Remove `node`'s binding of `container_id`'s `interface` from VM
    /// Port `ns/name`.
    async fn unbind(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        container_id: &str,
        interface: &str,
    ) -> Result<bool, Refusal> {
        self.edit_bindings(ns, name, |all| {
            let before = all.len();
            all.retain(|b| {
                !(b.node == node && b.container_id == container_id && b.interface == interface)
            });
            all.len() != before
        })
        .await
        .map(|changed| changed.unwrap_or(false))
    }

    fn reuse(&self, p: &Port, c: &Claim<'_>) -> Result<Granted, Refusal> {
        let g = granted(p);
        let same = p.spec.router == c.router
            && p.spec.subnet == c.subnet
            && c.ip.is_none_or(|ip| ip == g.ip)
            && c.mac.is_none_or(|m| m == g.mac);
        if same {
            Ok(g)
        } else {
            Err(refusal(
                "InterfaceInUse",
                format!(
                    "interface {} of container {} already holds Port {} ({} on {}/{}); DEL it first",
                    c.interface,
                    c.container_id,
                    p.name_any(),
                    p.spec.ip,
                    p.spec.router,
                    p.spec.subnet
                ),
            ))
        }
    }

    /// The subnet's NetworkAttachmentDefinition as `namespace/name`, from
    /// the router in the agent's cache.
    fn network(&self, c: &Claim<'_>) -> Result<String, Refusal> {
        let routers = self.routers.state();
        let nad = routers
            .iter()
            .find(|r| r.namespace().as_deref() == Some(c.namespace) && r.name_any() == c.router)
            .and_then(|r| r.spec.subnets.iter().find(|s| s.name == c.subnet))
            .map(|s| s.network_attachment.clone())
            .ok_or_else(|| {
                refusal(
                    "UnknownSubnet",
                    format!(
                        "router {}/{} with subnet {} is not in the agent's cache",
                        c.namespace, c.router, c.subnet
                    ),
                )
            })?;
        Ok(qualify(c.namespace, &nad))
    }

    /// The Port of `ip` for `c`: the pod's, or VM `vm`'s (no binding in
    /// its spec: [`Self::bind`] adds the pod).
    fn port(&self, c: &Claim<'_>, network: &str, ip: Ipv4Addr, vm: Option<&str>) -> Port {
        let mut spec = PortSpec {
            router: c.router.into(),
            subnet: c.subnet.into(),
            network: network.into(),
            ip: ip.to_string(),
            mac: c.mac.unwrap_or_else(|| derived_mac(ip)).to_string(),
            ..Default::default()
        };
        match vm {
            Some(vm) => spec.vm = vm.into(),
            None => {
                let b = binding(&self.node, c);
                (spec.node, spec.pod, spec.pod_uid) = (b.node, b.pod, b.pod_uid);
                (spec.container_id, spec.interface) = (b.container_id, b.interface);
            }
        }
        let mut port = Port::new(&port_name(c.router, c.subnet, ip), spec);
        port.metadata.namespace = Some(c.namespace.into());
        port
    }

    /// After creating `port` for `c`: a VM's is bound to the pod.
    async fn made(&self, c: &Claim<'_>, port: &Port) -> Result<Granted, Refusal> {
        if port.is_vm() {
            self.bind(c, &port.name_any()).await?;
        }
        Ok(Granted {
            created: true,
            ..granted(port)
        })
    }

    /// Add `c`'s pod to VM Port `name`'s bindings; whether it was not
    /// there yet.
    async fn bind(&self, c: &Claim<'_>, name: &str) -> Result<bool, Refusal> {
        let b = binding(&self.node, c);
        let edited = self.edit_bindings(c.namespace, name, |all| {
            let known = all.iter().any(|x| {
                x.node == b.node && x.container_id == b.container_id && x.interface == b.interface
            });
            if !known {
                all.push(b.clone());
            }
            !known
        });
        edited.await?.ok_or_else(|| {
            refusal(
                "AllocationInProgress",
                format!("Port {name} went while binding the VM's pod to it; try again"),
            )
        })
    }

    /// Read-modify-write VM Port `ns/name`'s `status.bindings` with `edit`
    /// (which says whether it changed anything), retried when another
    /// writer came between. `Ok(None)`: the Port is gone.
    async fn edit_bindings(
        &self,
        ns: &str,
        name: &str,
        edit: impl Fn(&mut Vec<PortBinding>) -> bool,
    ) -> Result<Option<bool>, Refusal> {
        let api: Api<Port> = Api::namespaced(self.client.clone(), ns);
        let what = format!("updating the bindings of Port {ns}/{name}");
        for _ in 0..BIND_ATTEMPTS {
            let Some(mut port) = get(&api, name).await? else {
                return Ok(None);
            };
            let status = port.status.get_or_insert_with(Default::default);
            if !edit(&mut status.bindings) {
                return Ok(Some(false));
            }
            let pp = PostParams::default();
            let put = api.replace_status(name, &pp, &port);
            match tokio::time::timeout(API_TIMEOUT, put).await {
                Ok(Ok(_)) => return Ok(Some(true)),
                Ok(Err(kube::Error::Api(s))) if s.code == 409 => continue,
                Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Ok(None),
                Ok(Err(kube::Error::Api(s))) if s.code == 422 || s.code == 403 => {
                    return Err(refusal("PortRefused", format!("{what}: {}", s.message)))
                }
                Ok(Err(e)) => return Err(api_down(&what, e)),
                Err(_) => return Err(api_down(&what, "timed out")),
            }
        }
        Err(api_down(&what, "kept conflicting with other writers"))
    }

    /// Create `port`: the Port created, `None` when the name (the address)
    /// is taken.
    async fn create(&self, api: &Api<Port>, port: &Port) -> Result<Option<Port>, Refusal> {
        let what = format!("creating Port {}", port.name_any());
        match tokio::time::timeout(API_TIMEOUT, api.create(&PostParams::default(), port)).await {
            Ok(Ok(p)) => Ok(Some(p)),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(None),
            Ok(Err(kube::Error::Api(s))) if s.code == 422 || s.code == 403 => {
                Err(refusal("PortRefused", format!("{what}: {}", s.message)))
            }
            Ok(Err(e)) => Err(api_down(&what, e)),
            Err(_) => Err(api_down(&what, "timed out")),
        }
    }
}

async fn get(api: &Api<Port>, name: &str) -> Result<Option<Port>, Refusal> {
    match tokio::time::timeout(API_TIMEOUT, api.get_opt(name)).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(api_down(&format!("reading Port {name}"), e)),
        Err(_) => Err(api_down(&format!("reading Port {name}"), "timed out")),
    }
}

/// Claim `c`'s pod as a binding on `node`.
fn binding(node: &str, c: &Claim<'_>) -> PortBinding {
    PortBinding {
        node: node.into(),
        pod: c.pod.into(),
        pod_uid: c.pod_uid.into(),
        container_id: c.container_id.into(),
        interface: c.interface.into(),
    }
}

fn granted(p: &Port) -> Granted {
    Granted {
        ip: p.spec.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
        mac: p.spec.mac.parse().unwrap_or(MacAddr::ZERO),
        created: false,
    }
}

fn taken_by(ip: Ipv4Addr, p: &Port) -> Refusal {
    let holder = match p.is_vm() {
        true => format!("VM {}", p.spec.vm),
        false => format!("pod {} on node {}", p.spec.pod, p.spec.node),
    };
    refusal(
        "AddressTaken",
        format!("{ip} is held by Port {} ({holder})", p.name_any()),
    )
}

/// Host addresses of `cidr` (all of a /31 or /32).
fn host_count(cidr: Ipv4Net) -> u32 {
    let size = 1u64 << (32 - cidr.prefix_len() as u32);
    if cidr.prefix_len() >= 31 {
        size as u32
    } else {
        (size - 2) as u32
    }
}

fn nth_host(cidr: Ipv4Net, i: u32) -> Ipv4Addr {
    let base = u32::from(cidr.network());
    if cidr.prefix_len() >= 31 {
        Ipv4Addr::from(base + i)
    } else {
        Ipv4Addr::from(base + 1 + i)
    }
}

/// Where a claim's search starts: a hash of who claims (differs between
/// concurrent ADDs, so they rarely race for one address).
fn seed(c: &Claim<'_>) -> u32 {
    names::fnv32(&format!("{}\0{}\0{}", c.container_id, c.interface, c.pod))
}

/// Every `grace / 2` (at least 1 s), the links of the node's root namespace
/// `root` against its Ports ([`PortRecords::collect_orphans`]).
pub async fn collect_orphans_every(
    records: Arc<PortRecords>,
    root: std::path::PathBuf,
    grace: Duration,
) {
    let period = (grace / 2).max(Duration::from_secs(1));
    let mut missing = BTreeMap::new();
    loop {
        tokio::time::sleep(period).await;
        let root = root.clone();
        let links = tokio::task::spawn_blocking(move || {
            let mut nl = crate::dataplane::netlink::Netlink::open_in(&root)?;
            nl.links()
        })
        .await;
        match links {
            Ok(Ok(links)) => {
                let names = links.into_iter().map(|l| l.name).collect();
                records.collect_orphans(&names, &mut missing, grace).await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "listing links for orphaned Ports"),
            Err(e) => tracing::warn!(error = %e, "listing links for orphaned Ports"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_a_subnet_exclude_network_and_broadcast() {
        let c: Ipv4Net = "10.1.0.0/29".parse().unwrap();
        assert_eq!(host_count(c), 6);
        let all: Vec<Ipv4Addr> = (0..6).map(|i| nth_host(c, i)).collect();
        assert_eq!(all.first(), Some(&"10.1.0.1".parse().unwrap()));
        assert_eq!(all.last(), Some(&"10.1.0.6".parse().unwrap()));
        let p31: Ipv4Net = "10.1.0.0/31".parse().unwrap();
        assert_eq!(host_count(p31), 2);
        assert_eq!(nth_host(p31, 0), "10.1.0.0".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn derived_macs_are_local_unicast_and_follow_the_address() {
        let m = derived_mac("10.1.0.5".parse().unwrap());
        assert_eq!(m.to_string(), "0a:58:0a:01:00:05");
        assert_eq!(m.0[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(m, derived_mac("10.1.0.6".parse().unwrap()));
    }
}
