//! RBAC for real: the chart's identity objects (ServiceAccounts, roles,
//! bindings and any ValidatingAdmissionPolicy it ships) applied as rendered
//! for release `rbac` in namespace `rbac`, bound tokens of its
//! ServiceAccounts (the agent's bound to its Node, so it carries
//! `authentication.kubernetes.io/node-name`), and what kube-apiserver lets
//! each of them do. That everything the controller and the agents do in
//! operation is allowed is shown by the lab on kube-apiserver
//! (`tests/lab_apiserver.rs`), which runs them with these same identities.
use std::sync::OnceLock;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{conditions, wait::await_condition};
use kube::Client;
use kube_dvr::api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use kube_dvr::api::{DistributedRouter, Port, PortBinding, PortSpec, PortStatus};
use kube_dvr::cluster::{AGENT_LEASE_PREFIX, CONTROLLER_LEASE, VTEP_ANNOTATION};
use kube_dvr::lab::identities::{apply, is_hook, render_chart, service_account, IDENTITY_KINDS};
use serde_json::{json, Value};

use super::common::{block_on, eventually, namespace, shared};

const NS: &str = "rbac";
const NODE: &str = "rbac-node-a";
const OTHER: &str = "rbac-node-b";

struct Setup {
    agent: Client,
    controller: Client,
    /// The chart renders a ValidatingAdmissionPolicy.
    policy: bool,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let s = shared();
        namespace(NS);
        let docs: Vec<Value> = render_chart(NS, NS, &[])
            .unwrap()
            .into_iter()
            .filter(|d| !is_hook(d) && IDENTITY_KINDS.contains(&d["kind"].as_str().unwrap()))
            .collect();
        let policy = docs
            .iter()
            .any(|d| d["kind"] == "ValidatingAdmissionPolicy");
        block_on(async {
            apply(&s.client, &docs, "rbac-test").await.unwrap();
            // KubeVirt's CRDs (stand-ins), for the controller to read.
            let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
            for crd in kube_dvr::api::kubevirt::crds_json() {
                let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
                let name = crd.metadata.name.clone().unwrap();
                match crds.create(&PostParams::default(), &crd).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("create CRD {name}: {e}"),
                }
                tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    await_condition(crds.clone(), &name, conditions::is_crd_established()),
                )
                .await
                .unwrap_or_else(|_| panic!("{name} not established"))
                .unwrap();
            }
            let nodes: Api<Node> = Api::all(s.client.clone());
            for n in [NODE, OTHER] {
                let node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => panic!("create node {n}: {e}"),
                }
            }
            let router: DistributedRouter = serde_json::from_value(json!({
                "apiVersion": "kubedvr.io/v1alpha1", "kind": "DistributedRouter",
                "metadata": {"name": "r", "namespace": NS},
                "spec": {"subnets": [{"name": "a", "cidr": "10.10.1.0/24", "gateway": "10.10.1.1", "networkAttachment": "net-a"}]}
            }))
            .unwrap();
            Api::<DistributedRouter>::namespaced(s.client.clone(), NS)
                .create(&PostParams::default(), &router)
                .await
                .unwrap();
            let sa = |c| service_account(&docs, c).unwrap();
            let agent_token = s
                .server
                .service_account_token(NS, &sa("agent"), Some(NODE))
                .await
                .unwrap();
            let controller_token = s
                .server
                .service_account_token(NS, &sa("controller"), None)
                .await
                .unwrap();
            Setup {
                agent: s.server.client_with_token(&agent_token).await.unwrap(),
                controller: s.server.client_with_token(&controller_token).await.unwrap(),
                policy,
            }
        })
    })
}

/// The HTTP status of a request: 200 for success.
fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("not an API answer: {e}"),
    }
}

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

fn annotate(value: &str) -> Patch<Value> {
    merge(json!({"metadata": {"annotations": {VTEP_ANNOTATION: value}}}))
}

fn lease(name: &str, holder: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30}
    }))
    .unwrap()
}

#[test]
fn agent_may_do_its_work_on_its_own_node() {
    let s = setup();
    block_on(async {
        let nodes: Api<Node> = Api::all(s.agent.clone());
        let pp = PatchParams::default();
        assert_eq!(
            code(nodes.patch(NODE, &pp, &annotate("198.18.0.1")).await),
            200
        );
        assert_eq!(code(nodes.list(&ListParams::default()).await), 200);
        let routers: Api<DistributedRouter> = Api::all(s.agent.clone());
        assert_eq!(code(routers.list(&ListParams::default()).await), 200);
        let leases: Api<Lease> = Api::namespaced(s.agent.clone(), NS);
        let own = format!("{AGENT_LEASE_PREFIX}{NODE}");
        assert_eq!(
            code(
                leases
                    .create(&PostParams::default(), &lease(&own, NODE))
                    .await
            ),
            200
        );
        let mut l = leases.get(&own).await.unwrap();
        l.spec.as_mut().unwrap().lease_duration_seconds = Some(40);
        assert_eq!(
            code(leases.replace(&own, &PostParams::default(), &l).await),
            200
        );
    });
}

#[test]
fn agent_may_not_write_specs_statuses_or_secrets() {
    let s = setup();
    block_on(async {
        let routers: Api<DistributedRouter> = Api::namespaced(s.agent.clone(), NS);
        let pp = PatchParams::default();
        let status = merge(json!({"status": {"nodes": ["x"]}}));
        assert_eq!(
            code(routers.patch_status("r", &pp, &status).await),
            403,
            "agent patches status"
        );
        let spec = merge(json!({"spec": {"externalNetwork": "x"}}));
        assert_eq!(
            code(routers.patch("r", &pp, &spec).await),
            403,
            "agent patches spec"
        );
        assert_eq!(
            code(routers.delete("r", &DeleteParams::default()).await),
            403
        );
        let secrets: Api<Secret> = Api::namespaced(s.agent.clone(), NS);
        assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
        let nodes: Api<Node> = Api::all(s.agent.clone());
        assert_eq!(
            code(nodes.delete(OTHER, &DeleteParams::default()).await),
            403
        );
    });
}

/// Another node's annotations and heartbeat Lease: RBAC cannot tell nodes
/// apart (the agent's ClusterRole patches every Node), so the chart's
/// admission policy, keyed on the token's node name, refuses it.
#[test]
fn agent_may_not_write_another_nodes_annotations_or_lease() {
    let s = setup();
    assert!(
        s.policy,
        "the chart renders the agent's ValidatingAdmissionPolicy"
    );
    block_on(async {
        let nodes: Api<Node> = Api::all(s.agent.clone());
        // kube-apiserver loads a new policy through an informer: give it a
        // few seconds to take effect before judging.
        let mut r = 0;
        for _ in 0..40 {
            r = code(
                nodes
                    .patch(OTHER, &PatchParams::default(), &annotate("198.18.0.2"))
                    .await,
            );
            if r != 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert_eq!(r, 403, "agent of {NODE} annotates {OTHER}");
        let own = nodes
            .patch(NODE, &PatchParams::default(), &annotate("198.18.0.1"))
            .await;
        assert_eq!(code(own), 200, "agent of {NODE} annotates its own Node");
        let leases: Api<Lease> = Api::namespaced(s.agent.clone(), NS);
        let other = format!("{AGENT_LEASE_PREFIX}{OTHER}");
        let l = leases
            .create(&PostParams::default(), &lease(&other, OTHER))
            .await;
        assert_eq!(code(l), 403, "agent of {NODE} writes {OTHER}'s Lease");
    });
}

fn port_on(node: &str, ip: &str) -> kube_dvr::api::Port {
    let mut p = kube_dvr::api::Port::new(
        &kube_dvr::api::port_name("r", "a", ip.parse().unwrap()),
        kube_dvr::api::PortSpec {
            router: "r".into(),
            subnet: "a".into(),
            network: format!("{NS}/net-a"),
            ip: ip.into(),
            mac: "0a:58:0a:0a:01:05".into(),
            node: node.into(),
            pod: "p".into(),
            pod_uid: String::new(),
            container_id: format!("c-{ip}"),
            interface: "net1".into(),
            vm: String::new(),
        },
    );
    p.metadata.namespace = Some(NS.into());
    p
}

/// Ports (kube-dvr's IPAM and endpoints): an agent records and deletes
/// those of its own node only (a Port on another node would pull that
/// address's traffic there); it may not change one; the controller may
/// delete any and create none.
#[test]
fn agent_may_write_ports_of_its_own_node_only() {
    let s = setup();
    assert!(s.policy);
    block_on(async {
        let ports: Api<kube_dvr::api::Port> = Api::namespaced(s.agent.clone(), NS);
        let pp = PostParams::default();
        let mut r = 0;
        for _ in 0..40 {
            r = code(ports.create(&pp, &port_on(OTHER, "10.10.1.6")).await);
            if r != 201 && r != 200 {
                break;
            }
            let _ = ports
                .delete(
                    &port_on(OTHER, "10.10.1.6").metadata.name.unwrap(),
                    &Default::default(),
                )
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert_eq!(r, 403, "agent of {NODE} records a Port on {OTHER}");
        let own = port_on(NODE, "10.10.1.5");
        let name = own.metadata.name.clone().unwrap();
        assert_eq!(code(ports.create(&pp, &own).await), 200);
        let taken = ports.create(&pp, &port_on(NODE, "10.10.1.5")).await;
        assert_eq!(code(taken), 409, "one Port per address");
        let patch = merge(json!({"spec": {"node": OTHER}}));
        let moved = ports.patch(&name, &PatchParams::default(), &patch).await;
        assert_eq!(code(moved), 403, "no update (RBAC)");
        // The controller may delete another node's Port, not create one.
        let theirs = port_on(OTHER, "10.10.1.7");
        let admin: Api<kube_dvr::api::Port> = Api::namespaced(shared().client.clone(), NS);
        admin.create(&pp, &theirs).await.unwrap();
        let c: Api<kube_dvr::api::Port> = Api::namespaced(s.controller.clone(), NS);
        assert_eq!(code(c.create(&pp, &port_on(OTHER, "10.10.1.8")).await), 403);
        let theirs_name = theirs.metadata.name.clone().unwrap();
        assert_eq!(
            code(ports.delete(&theirs_name, &Default::default()).await),
            403,
            "agent of {NODE} deletes a Port on {OTHER}"
        );
        assert_eq!(code(c.delete(&theirs_name, &Default::default()).await), 200);
        assert_eq!(code(ports.delete(&name, &Default::default()).await), 200);
    });
}

#[test]
fn controller_may_write_status_and_its_lease_only() {
    let s = setup();
    block_on(async {
        let pp = PatchParams::default();
        let routers: Api<DistributedRouter> = Api::namespaced(s.controller.clone(), NS);
        let status = merge(json!({"status": {"nodes": []}}));
        assert_eq!(code(routers.patch_status("r", &pp, &status).await), 200);
        assert_eq!(
            code(routers.delete("r", &DeleteParams::default()).await),
            403
        );
        let leases: Api<Lease> = Api::namespaced(s.controller.clone(), NS);
        let own = leases
            .create(&PostParams::default(), &lease(CONTROLLER_LEASE, "c"))
            .await;
        assert!(matches!(code(own), 200 | 409));
        let holder = merge(json!({"spec": {"holderIdentity": "c2"}}));
        assert_eq!(
            code(leases.patch(CONTROLLER_LEASE, &pp, &holder).await),
            200
        );
        // An agent's heartbeat: readable, never writable by the controller.
        let agent = format!("{AGENT_LEASE_PREFIX}{NODE}");
        let _ = Api::<Lease>::namespaced(shared().client.clone(), NS)
            .create(&PostParams::default(), &lease(&agent, NODE))
            .await;
        assert_eq!(code(leases.get(&agent).await), 200);
        assert_eq!(code(leases.patch(&agent, &pp, &holder).await), 403);
        let nodes: Api<Node> = Api::all(s.controller.clone());
        assert_eq!(
            code(nodes.patch(NODE, &pp, &annotate("198.18.0.9")).await),
            403
        );
        let secrets: Api<Secret> = Api::namespaced(s.controller.clone(), NS);
        assert_eq!(code(secrets.list(&ListParams::default()).await), 403);
    });
}

/// kube-apiserver loads a new policy through an informer: wait until it
/// refuses the agent a Port on another node (a dry run, so nothing is
/// written while it does not yet).
async fn policy_loaded(agent: &Client) {
    let ports: Api<Port> = Api::namespaced(agent.clone(), NS);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for _ in 0..40 {
        if code(ports.create(&pp, &port_on(OTHER, "10.10.1.99")).await) == 403 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("the agent's admission policy is not in force");
}

/// A KubeVirt VM's Port (no node: its pods are status.bindings).
fn vm_port(ip: &str) -> Port {
    let mut p = port_on("", ip);
    p.spec = PortSpec {
        node: String::new(),
        pod: String::new(),
        container_id: String::new(),
        interface: String::new(),
        vm: "vm1".into(),
        ..p.spec
    };
    p
}

fn binding(node: &str) -> PortBinding {
    PortBinding {
        node: node.into(),
        pod: format!("virt-launcher-vm1-{node}"),
        pod_uid: String::new(),
        container_id: format!("c-{node}"),
        interface: "net1".into(),
    }
}

/// Replace Port `name`'s status (as read by `api`) with `edit` applied.
async fn edit_status(
    api: &Api<Port>,
    name: &str,
    edit: impl FnOnce(&mut PortStatus),
) -> Result<Port, kube::Error> {
    let mut p = api.get(name).await?;
    edit(p.status.get_or_insert_with(Default::default));
    api.replace_status(name, &PostParams::default(), &p).await
}

/// The nodes of Port `name`'s bindings and its activeNode, as stored.
async fn stored(name: &str) -> (Vec<String>, Option<String>) {
    let p = Api::<Port>::namespaced(shared().client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let nodes = p.bindings().into_iter().map(|b| b.node).collect();
    (nodes, p.status.and_then(|s| s.active_node))
}

/// A VM's Port: the agent creates it (whatever node the VM's pod is on),
/// adds and removes its own node's binding and nothing else of its status,
/// and may not delete it; the controller writes its activeNode.
#[test]
fn agent_may_write_its_own_bindings_of_a_vms_port_only() {
    let s = setup();
    assert!(s.policy);
    block_on(async {
        policy_loaded(&s.agent).await;
        let ports: Api<Port> = Api::namespaced(s.agent.clone(), NS);
        let vm = vm_port("10.10.1.20");
        let name = vm.metadata.name.clone().unwrap();
        assert_eq!(code(ports.create(&PostParams::default(), &vm).await), 200);

        let own = edit_status(&ports, &name, |st| st.bindings.push(binding(NODE))).await;
        assert_eq!(code(own), 200, "agent of {NODE} adds its binding");
        assert_eq!(stored(&name).await, (vec![NODE.to_string()], None));
        let theirs = edit_status(&ports, &name, |st| st.bindings.push(binding(OTHER))).await;
        assert_eq!(
            code(theirs),
            403,
            "agent of {NODE} adds a binding on {OTHER}"
        );

        // A migration's target on OTHER, recorded by that node's agent
        // (the admin here).
        let admin: Api<Port> = Api::namespaced(shared().client.clone(), NS);
        edit_status(&admin, &name, |st| st.bindings.push(binding(OTHER)))
            .await
            .unwrap();
        let removed =
            edit_status(&ports, &name, |st| st.bindings.retain(|b| b.node != OTHER)).await;
        assert_eq!(
            code(removed),
            403,
            "agent of {NODE} removes {OTHER}'s binding"
        );
        let altered = edit_status(&ports, &name, |st| st.bindings[1].pod = "evil".into()).await;
        assert_eq!(
            code(altered),
            403,
            "agent of {NODE} changes {OTHER}'s binding"
        );
        let active = edit_status(&ports, &name, |st| st.active_node = Some(NODE.into())).await;
        assert_eq!(code(active), 403, "agent of {NODE} sets status.activeNode");
        assert_eq!(
            stored(&name).await,
            (vec![NODE.to_string(), OTHER.to_string()], None)
        );

        // The controller points traffic at the instance's node.
        let c: Api<Port> = Api::namespaced(s.controller.clone(), NS);
        let set = edit_status(&c, &name, |st| st.active_node = Some(OTHER.into())).await;
        assert_eq!(code(set), 200, "controller sets status.activeNode");
        // The source pod is gone: its agent removes its binding.
        let gone = edit_status(&ports, &name, |st| st.bindings.retain(|b| b.node != NODE)).await;
        assert_eq!(code(gone), 200, "agent of {NODE} removes its binding");
        assert_eq!(
            stored(&name).await,
            (vec![OTHER.to_string()], Some(OTHER.to_string()))
        );

        assert_eq!(
            code(ports.delete(&name, &Default::default()).await),
            403,
            "agent of {NODE} deletes a VM's Port"
        );
        assert_eq!(code(c.delete(&name, &Default::default()).await), 200);
    });
}

/// The agent reads a pod (is it a VM's virt-launcher?) by name, and lists
/// none; the controller reads KubeVirt's VMs and instances and writes none.
#[test]
fn agent_gets_pods_and_controller_reads_kubevirt() {
    let s = setup();
    // A Pod needs its namespace's `default` ServiceAccount, which
    // kube-controller-manager creates.
    let sas: Api<ServiceAccount> = Api::namespaced(shared().client.clone(), NS);
    eventually(std::time::Duration::from_secs(30), || {
        block_on(sas.get_opt("default")).unwrap()
    })
    .expect("kube-controller-manager creates the default ServiceAccount");
    block_on(async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "virt-launcher-vm1-x", "namespace": NS},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/c"}]}
        }))
        .unwrap();
        let _ = Api::<Pod>::namespaced(shared().client.clone(), NS)
            .create(&PostParams::default(), &pod)
            .await;
        let pods: Api<Pod> = Api::namespaced(s.agent.clone(), NS);
        assert_eq!(code(pods.get("virt-launcher-vm1-x").await), 200);
        assert_eq!(code(pods.list(&ListParams::default()).await), 403);

        let vmis: Api<VirtualMachineInstance> = Api::namespaced(s.controller.clone(), NS);
        assert_eq!(code(vmis.list(&ListParams::default()).await), 200);
        let vms: Api<VirtualMachine> = Api::all(s.controller.clone());
        assert_eq!(code(vms.list(&ListParams::default()).await), 200);
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm1", "namespace": NS}, "spec": {}
        }))
        .unwrap();
        assert_eq!(
            code(vmis.create(&PostParams::default(), &vmi).await),
            403,
            "the controller writes no VMI"
        );
        let agent_vmis: Api<VirtualMachineInstance> = Api::namespaced(s.agent.clone(), NS);
        assert_eq!(code(agent_vmis.list(&ListParams::default()).await), 403);
    });
}
