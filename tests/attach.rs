//! Attachment end to end (issue 8): kube-dvr's CNI plugin run as Multus
//! runs it, its IPAM (Port records), controller-owned NADs and trusted
//! endpoints, in one lab of five nodes (one sandbox, one set-up shared by
//! every check: a lab of 200 workloads takes a while to build).
//!
//! The lab attaches 200 workloads with no static address concurrently (one
//! plugin process each, spread over five nodes); then, with the plugin run
//! directly on extra sandboxes: a forged network-status annotation changes
//! nothing, DEL then ADD never hands out an address in use, a static
//! address that is taken fails and leaves nothing, a /29 runs out, an
//! agent that is down fails ADD but not DEL, and a KubeVirt VM keeps its
//! address and MAC across a live migration (one active binding) and a
//! restart on another node.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use kube_dvr::api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use kube_dvr::api::nad::NetworkAttachmentDefinition;
use kube_dvr::api::{DistributedRouter, Port};
use kube_dvr::dataplane::{netns, sandbox};
use kube_dvr::lab::probe::{self, Observed};
use kube_dvr::lab::runtime::{self, Attach};
use kube_dvr::lab::topology::{WorkloadNetwork, WorkloadSpec};
use kube_dvr::lab::{Lab, Manifests, Topology};

const STATE: &str = "/run/kube-dvr-lab-attach";
const NODES: usize = 5;
const WORKLOADS: usize = 200;
const NS: &str = "tenant-x";

fn topology() -> Topology {
    let nodes: Vec<_> = (0..NODES)
        .map(|i| {
            json!({"name": format!("n{i}"), "vtep": format!("198.18.0.{}", 31 + i),
                        "labels": {"kubedvr.io/role": "compute"}})
        })
        .collect();
    // No static address: kube-dvr's IPAM picks each.
    let workloads: Vec<_> = (0..WORKLOADS)
        .map(|k| {
            json!({"name": format!("w{k:03}"), "namespace": NS, "node": format!("n{}", k % NODES),
                        "networks": [{"network": format!("{NS}/net-big")}]})
        })
        .collect();
    serde_json::from_value(json!({
        "underlay": "198.18.0.0/24", "nodes": nodes, "workloads": workloads,
        "externalSegments": [],
    }))
    .unwrap()
}

fn manifests(dir: &Path) -> Manifests {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("router.yaml"),
        format!(
            "apiVersion: kubedvr.io/v1alpha1
kind: DistributedRouter
metadata: {{name: r, namespace: {NS}}}
spec:
  subnets:
    - {{name: big, cidr: 10.40.0.0/24, gateway: 10.40.0.1, networkAttachment: net-big}}
    - {{name: tiny, cidr: 10.41.0.0/29, gateway: 10.41.0.1, networkAttachment: net-tiny}}
    - {{name: vms, cidr: 10.43.0.0/24, gateway: 10.43.0.1, networkAttachment: net-vms}}
---
apiVersion: kubedvr.io/v1alpha1
kind: DistributedRouter
metadata: {{name: r, namespace: tenant-y}}
spec:
  subnets:
    - {{name: big, cidr: 10.40.0.0/24, gateway: 10.40.0.1, networkAttachment: net-big}}
"
        ),
    )
    .unwrap();
    Manifests::load(dir).unwrap()
}

/// An extra sandbox `name` on `node` (a pod the lab's topology does not
/// have), attached by running the plugin directly.
fn sandbox_on(lab: &Lab, name: &str, node: &str) -> WorkloadSpec {
    netns::create(&lab.paths.infra(), &format!("wl-{name}")).unwrap();
    WorkloadSpec {
        name: name.into(),
        namespace: NS.into(),
        node: node.into(),
        networks: vec![],
        labels: Default::default(),
    }
}

fn cni(
    lab: &Lab,
    command: &str,
    w: &WorkloadSpec,
    net: &WorkloadNetwork,
) -> Result<Option<serde_json::Value>, String> {
    let config = lab.cluster().nad_config(&net.network).unwrap().unwrap();
    let pod_uid = lab.cluster().pod_uid(&w.namespace, &w.name).unwrap();
    let a = Attach {
        workload: w,
        m: 0,
        net,
        config,
        pod_uid,
    };
    runtime::run_plugin(&lab.paths, &runtime::plugin_path().unwrap(), command, &a)
}

fn net(name: &str, ip: Option<&str>) -> WorkloadNetwork {
    WorkloadNetwork {
        network: format!("{NS}/{name}"),
        ip: ip.map(|s| s.parse().unwrap()),
        mac: None,
    }
}

/// The CNI error code in a failed plugin run's output.
fn code(err: &str) -> u64 {
    runtime::error_code(err).expect("a CNI error object")
}

fn ports(lab: &Lab) -> Vec<Port> {
    let c = lab.cluster();
    let api: Api<Port> = Api::namespaced(c.client.clone(), NS);
    c.rt.block_on(api.list(&ListParams::default()))
        .unwrap()
        .items
}

/// Interfaces in sandbox `name` other than `lo`.
fn interfaces(lab: &Lab, name: &str) -> Vec<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", lab.paths.workload(name).display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n != "lo")
        .collect()
}

fn ip_of(lab: &Lab, k: usize) -> Ipv4Addr {
    lab.attachment(k, 0).expect("attached").0
}

fn answered_by(lab: &Lab, from: &str, dst: Ipv4Addr, who: &str) {
    let ns = lab.paths.workload(from);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe::tcp(&ns, dst, Duration::from_millis(1000)) {
            Observed::Answered { who: w, .. } if w == who => return,
            other if Instant::now() > deadline => {
                panic!("{from} → {dst}: expected an answer from {who}, got {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn plugin_ipam_and_trusted_ports() {
    if !sandbox::enter("plugin_ipam_and_trusted_ports") {
        return;
    }
    let m = manifests(&Path::new(STATE).with_extension("manifests"));
    let started = Instant::now();
    let mut lab = Lab::up_with(Path::new(STATE), topology(), m).expect("lab up");
    eprintln!(
        "{WORKLOADS} workloads on {NODES} nodes attached through the plugin in {:?}",
        started.elapsed()
    );

    // 200 concurrent ADDs over 5 nodes: 200 distinct host addresses of the
    // subnet, never the gateway, each recorded by a Port on its node.
    let addrs: BTreeMap<Ipv4Addr, usize> = (0..WORKLOADS)
        .map(|k| (lab.attachment(k, 0).expect("attached").0, k))
        .collect();
    assert_eq!(addrs.len(), WORKLOADS, "every address distinct");
    let cidr: ipnet::Ipv4Net = "10.40.0.0/24".parse().unwrap();
    assert!(addrs
        .keys()
        .all(|a| cidr.contains(a) && *a != cidr.network()));
    assert!(!addrs.contains_key(&"10.40.0.1".parse().unwrap()));
    let all = ports(&lab);
    assert!(
        all.iter().all(|p| !p.spec.pod_uid.is_empty()),
        "the runtime's K8S_POD_UID is recorded (the controller's GC tells a re-created pod apart)"
    );
    let recorded: BTreeMap<String, (String, String)> = all
        .into_iter()
        .map(|p| (p.spec.ip.clone(), (p.spec.pod.clone(), p.spec.node.clone())))
        .collect();
    for (ip, k) in &addrs {
        let w = &lab.topology.workloads[*k];
        assert_eq!(
            recorded.get(&ip.to_string()),
            Some(&(w.name.clone(), w.node.clone())),
            "the Port of {ip}"
        );
    }

    // The controller's NADs: one per subnet, type kube-dvr, naming router
    // and subnet, never a VNI or bridge.
    let c = lab.cluster();
    let nads: Api<NetworkAttachmentDefinition> = Api::namespaced(c.client.clone(), NS);
    let list = c.rt.block_on(nads.list(&ListParams::default())).unwrap();
    let names: BTreeSet<String> = list
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["net-big".into(), "net-tiny".into(), "net-vms".into()])
    );
    for n in &list.items {
        let conf: serde_json::Value =
            serde_json::from_str(n.spec.config.as_deref().unwrap()).unwrap();
        assert_eq!(conf["type"], "kube-dvr");
        assert_eq!(conf["router"], "r");
        assert!(!n.spec.config.as_deref().unwrap().contains("dvrbr"));
    }

    // Real traffic between IPAM-addressed workloads on different nodes.
    answered_by(&lab, "w000", ip_of(&lab, 1), "w001");
    answered_by(&lab, "w002", ip_of(&lab, 199), "w199");

    // A forged network-status (tenant-y's network, w000's address and MAC)
    // changes nothing: no node's plan, no kernel state, no traffic.
    let view_before = lab.resolution.view.clone();
    let (ip0, mac0) = lab.attachment(0, 0).unwrap();
    let forged = json!([
        {"name": format!("{NS}/net-big"), "interface": "net1", "ips": [ip0.to_string()], "mac": mac0.to_string()},
        {"name": "tenant-y/net-big", "interface": "net2", "ips": ["10.40.0.77"], "mac": "02:66:66:66:66:66"},
    ]);
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let patch = json!({"metadata": {"annotations": {
        "k8s.v1.cni.cncf.io/network-status": forged.to_string()}}});
    c.rt.block_on(pods.patch("w003", &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
    // Give the agents time to see it (nothing should come of it).
    std::thread::sleep(Duration::from_millis(500));
    lab.converge().unwrap();
    assert_eq!(
        lab.resolution.view, view_before,
        "the forged status moved nothing"
    );
    assert_eq!(
        lab.resync().unwrap(),
        0,
        "every node still has exactly its plan"
    );
    answered_by(&lab, "w002", ip0, "w000");

    // DEL then ADD: the Port goes with DEL; the new address is not one in use.
    let w4 = lab.topology.workloads[4].clone();
    let big = net("net-big", None);
    cni(&lab, "DEL", &w4, &big).expect("DEL");
    let old4 = ip_of(&lab, 4);
    assert!(!ports(&lab).iter().any(|p| p.spec.ip == old4.to_string()));
    assert!(
        interfaces(&lab, "w004").is_empty(),
        "DEL removed the interface"
    );
    let again = cni(&lab, "ADD", &w4, &big).expect("ADD again").unwrap();
    let (new4, _) = runtime::result_address(&again).unwrap();
    let in_use: BTreeSet<Ipv4Addr> = (0..WORKLOADS)
        .filter(|k| *k != 4)
        .map(|k| ip_of(&lab, k))
        .collect();
    assert!(!in_use.contains(&new4), "{new4} is in use");
    // DEL is idempotent, also with no ADD before.
    cni(&lab, "DEL", &w4, &big).expect("DEL");
    cni(&lab, "DEL", &w4, &big).expect("DEL again");
    let never = sandbox_on(&lab, "never", "n1");
    cni(&lab, "DEL", &never, &big).expect("DEL without ADD");

    // A static address that another interface holds: code 108, nothing left.
    let taken = sandbox_on(&lab, "taken", "n1");
    let err = cni(
        &lab,
        "ADD",
        &taken,
        &net("net-big", Some(&format!("{ip0}/24"))),
    )
    .expect_err("the address is taken");
    assert_eq!(code(&err), 108, "{err}");
    assert!(interfaces(&lab, "taken").is_empty());
    assert!(!ports(&lab).iter().any(|p| p.spec.pod == "taken"));

    // A /29: five addresses besides the gateway, then code 109.
    let tiny = net("net-tiny", None);
    let mut got = BTreeSet::new();
    for i in 0..5 {
        let w = sandbox_on(&lab, &format!("t{i}"), &format!("n{}", i % NODES));
        let r = cni(&lab, "ADD", &w, &tiny)
            .expect("a free address")
            .unwrap();
        got.insert(runtime::result_address(&r).unwrap().0);
    }
    assert_eq!(got.len(), 5);
    assert!(!got.contains(&"10.41.0.1".parse().unwrap()));
    let full = sandbox_on(&lab, "t5", "n0");
    let err = cni(&lab, "ADD", &full, &tiny).expect_err("exhausted");
    assert_eq!(code(&err), 109, "{err}");
    assert!(interfaces(&lab, "t5").is_empty());

    // The agent down: ADD fails with "try again" and leaves nothing; DEL of
    // an attached workload still succeeds.
    lab.cluster_mut().stop_agent("n4");
    let down = sandbox_on(&lab, "down", "n4");
    let err = cni(&lab, "ADD", &down, &big).expect_err("no agent");
    assert_eq!(code(&err), 11, "{err}");
    assert!(interfaces(&lab, "down").is_empty());
    let w9 = lab.topology.workloads[9].clone();
    assert_eq!(w9.node, "n4");
    cni(&lab, "DEL", &w9, &big).expect("DEL with the agent down");
    // The Port stayed (no agent to release it); the restarted agent finds
    // its interface gone and deletes it after the grace (2 s here, 60 s by
    // default), and only it.
    let w9_ip = ip_of(&lab, 9).to_string();
    assert!(ports(&lab).iter().any(|p| p.spec.ip == w9_ip));
    let on_n4 = |lab: &Lab| ports(lab).iter().filter(|p| p.spec.node == "n4").count();
    let before = on_n4(&lab);
    lab.cluster_mut()
        .agent_options_mut("n4")
        .unwrap()
        .orphan_grace = Duration::from_secs(2);
    lab.cluster_mut().start_agent("n4");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ports(&lab).iter().any(|p| p.spec.ip == w9_ip) {
        assert!(
            Instant::now() < deadline,
            "the orphaned Port of w009 stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(on_n4(&lab), before - 1, "only w009's Port went");

    // A Terminating pod keeps its Port and its traffic until its DEL (its
    // connections can drain): the controller collects only Ports of pods
    // that are gone.
    let c = lab.cluster();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let hold = json!({"metadata": {"finalizers": ["kubedvr.io/test-hold"]}});
    c.rt.block_on(pods.patch("w010", &PatchParams::default(), &Patch::Merge(&hold)))
        .unwrap();
    c.rt.block_on(pods.delete("w010", &Default::default()))
        .unwrap();
    let terminating = c.rt.block_on(pods.get("w010")).unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let w10 = ip_of(&lab, 10);
    assert!(ports(&lab).iter().any(|p| p.spec.ip == w10.to_string()));
    answered_by(&lab, "w011", w10, "w010");
    let c = lab.cluster();
    let release = json!({"metadata": {"finalizers": null}});
    c.rt.block_on(pods.patch("w010", &PatchParams::default(), &Patch::Merge(&release)))
        .unwrap();

    // A NAD the user made is never overwritten: the router says so.
    let c = lab.cluster();
    let theirs: NetworkAttachmentDefinition = serde_json::from_value(json!({
        "metadata": {"name": "mine", "namespace": "tenant-y"},
        "spec": {"config": "{\"cniVersion\":\"1.0.0\",\"type\":\"bridge\"}"}
    }))
    .unwrap();
    let y_nads: Api<NetworkAttachmentDefinition> = Api::namespaced(c.client.clone(), "tenant-y");
    c.rt.block_on(y_nads.create(&PostParams::default(), &theirs))
        .unwrap();
    let routers: Api<DistributedRouter> = Api::namespaced(c.client.clone(), "tenant-y");
    let add = json!({"spec": {"subnets": [
        {"name": "big", "cidr": "10.40.0.0/24", "gateway": "10.40.0.1", "networkAttachment": "net-big"},
        {"name": "s2", "cidr": "10.42.0.0/24", "gateway": "10.42.0.1", "networkAttachment": "mine"}]}});
    c.rt.block_on(routers.patch("r", &PatchParams::default(), &Patch::Merge(&add)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let reason = loop {
        let r = c.rt.block_on(routers.get("r")).unwrap();
        let cond = (r.status.iter())
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == "NetworkAttachments" && c.status == "False")
            .map(|c| c.reason.clone());
        if let Some(reason) = cond {
            break reason;
        }
        assert!(
            Instant::now() < deadline,
            "no NetworkAttachments=False: {:?}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(reason, "NetworkAttachmentConflict");
    let mine = c.rt.block_on(y_nads.get("mine")).unwrap();
    assert_eq!(mine.spec.config, theirs.spec.config, "left alone");

    kubevirt_vm(&mut lab);

    let paths = lab.paths.clone();
    lab.down();
    let left = kube_dvr::lab::infra::leftovers(&paths);
    assert!(left.is_empty(), "left behind: {left:?}");
}

const VM: &str = "vm1";

/// A virt-launcher pod of [`VM`] on `node` (its controlling owner the
/// VirtualMachineInstance, as KubeVirt makes it), with a sandbox serving
/// the lab's who-are-you service under the pod's name.
fn launcher(lab: &Lab, name: &str, node: &str, vmi_uid: &str) -> WorkloadSpec {
    let c = lab.cluster();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "labels": {"vm.kubevirt.io/name": VM},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "name": VM, "uid": vmi_uid, "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "compute", "image": "lab"}]}
    }))
    .unwrap();
    c.rt.block_on(pods.create(&PostParams::default(), &pod))
        .unwrap();
    let w = sandbox_on(lab, name, node);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    probe::serve(&lab.paths.workload(name), name, stop.clone(), stop).unwrap();
    w
}

/// The VM's Port (there must be exactly one).
fn vm_port(lab: &Lab) -> Port {
    let mine: Vec<Port> = ports(lab).into_iter().filter(|p| p.spec.vm == VM).collect();
    assert_eq!(mine.len(), 1, "one Port for the VM: {mine:?}");
    mine.into_iter().next().unwrap()
}

fn bound_pods(p: &Port) -> Vec<String> {
    p.bindings().into_iter().map(|b| b.pod).collect()
}

/// Set the VirtualMachineInstance's node, as KubeVirt does when the VM
/// starts there or a migration to it completes.
fn vmi_on(lab: &Lab, node: &str) {
    let c = lab.cluster();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), NS);
    let patch = json!({"status": {"nodeName": node}});
    c.rt.block_on(vmis.patch_status(VM, &PatchParams::default(), &Patch::Merge(&patch)))
        .unwrap();
}

/// A KubeVirt VM (the tests play KubeVirt: VirtualMachine and instance
/// objects, virt-launcher pods; the plugin and the dataplane are real).
fn kubevirt_vm(lab: &mut Lab) {
    let c = lab.cluster();
    let vms: Api<VirtualMachine> = Api::namespaced(c.client.clone(), NS);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), NS);
    c.rt.block_on(vms.create(
        &PostParams::default(),
        &VirtualMachine::new(VM, Default::default()),
    ))
    .unwrap();
    let vmi =
        c.rt.block_on(vmis.create(
            &PostParams::default(),
            &VirtualMachineInstance::new(VM, Default::default()),
        ))
        .unwrap();
    let vmi_uid = vmi.metadata.uid.unwrap();
    vmi_on(lab, "n0");
    // The VM's interface MAC, which KubeVirt passes in the network
    // selection (Multus `mac`) for every pod of the VM.
    let mac: kube_dvr::plan::model::MacAddr = "02:5e:00:00:00:01".parse().unwrap();
    // A subnet no other workload is on: each node the VM is carried on
    // hosts the router for it (the migration target too, where it is not
    // yet the endpoint). Probed from w002 on net-big: routed.
    let vm_net = WorkloadNetwork {
        mac: Some(mac),
        ..net("net-vms", None)
    };

    // Started on n0: an address from IPAM, a Port owned by the VM with the
    // pod as its binding.
    let src = launcher(lab, "virt-launcher-vm1-a", "n0", &vmi_uid);
    let r = cni(lab, "ADD", &src, &vm_net).expect("ADD on the source");
    let (ip, got_mac) = runtime::result_address(&r.unwrap()).unwrap();
    assert_eq!(got_mac, mac);
    let port = vm_port(lab);
    assert_eq!(port.spec.ip, ip.to_string());
    assert!(port.spec.node.is_empty() && port.spec.pod.is_empty());
    assert_eq!(bound_pods(&port), ["virt-launcher-vm1-a"]);
    answered_by(lab, "w002", ip, "virt-launcher-vm1-a");

    // Live migration to n1: the target pod gets the same address and MAC
    // (no 108), both pods carry it, traffic still goes to the source.
    let dst = launcher(lab, "virt-launcher-vm1-b", "n1", &vmi_uid);
    let r = cni(lab, "ADD", &dst, &vm_net).expect("ADD on the target");
    assert_eq!(runtime::result_address(&r.unwrap()).unwrap(), (ip, mac));
    let port = vm_port(lab);
    assert_eq!(
        bound_pods(&port),
        ["virt-launcher-vm1-a", "virt-launcher-vm1-b"]
    );
    // The target's interface sends nothing by itself (IPv6 off: no DAD or
    // router solicitation with the VM's MAC to mislead the bridges).
    let v6 = std::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            lab.paths.workload("virt-launcher-vm1-b").display()
        ))
        .args(["ip", "-6", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v6.stdout).trim().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        answered_by(lab, "w002", ip, "virt-launcher-vm1-a");
    }
    // A pod of the VM asking for another address: refused (108), nothing
    // left, the Port untouched.
    let other = launcher(lab, "virt-launcher-vm1-x", "n3", &vmi_uid);
    let err = cni(lab, "ADD", &other, &net("net-vms", Some("10.43.0.250/24")))
        .expect_err("the VM's address is another");
    assert_eq!(code(&err), 108, "{err}");
    assert!(interfaces(lab, "virt-launcher-vm1-x").is_empty());
    assert_eq!(
        bound_pods(&vm_port(lab)),
        ["virt-launcher-vm1-a", "virt-launcher-vm1-b"]
    );

    // Migration completes: KubeVirt moves the instance; the controller
    // makes n1 the Port's active node; the VM announces itself from the
    // target (QEMU sends RARP/GARP after a migration: a ping here) and
    // traffic goes to the target.
    let flipped = Instant::now();
    vmi_on(lab, "n1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while vm_port(lab).status.and_then(|s| s.active_node).as_deref() != Some("n1") {
        assert!(Instant::now() < deadline, "activeNode did not follow");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "activeNode followed the instance in {:?}",
        flipped.elapsed()
    );
    let _ = probe::ping(
        &lab.paths.workload("virt-launcher-vm1-b"),
        "10.43.0.1".parse().unwrap(),
    );
    answered_by(lab, "w002", ip, "virt-launcher-vm1-b");
    eprintln!(
        "traffic at the target {:?} after the instance moved",
        flipped.elapsed()
    );
    for _ in 0..5 {
        answered_by(lab, "w002", ip, "virt-launcher-vm1-b");
    }

    // The source pod's DEL removes its binding, not the VM's Port.
    cni(lab, "DEL", &src, &vm_net).expect("DEL on the source");
    assert_eq!(bound_pods(&vm_port(lab)), ["virt-launcher-vm1-b"]);
    assert!(interfaces(lab, "virt-launcher-vm1-a").is_empty());
    answered_by(lab, "w002", ip, "virt-launcher-vm1-b");
    // Every node has exactly its plan: the other nodes' vxlan FDB sends the
    // MAC to n1 alone (a unicast entry moving nodes is replaced, not
    // appended to and then deleted).
    lab.converge().unwrap();
    assert_eq!(lab.resync().unwrap(), 0, "every node has exactly its plan");

    // A restart: the pod goes (the Port stays, unbound, no endpoint), the
    // VM starts again on n2 without a static address or MAC and gets both
    // back.
    cni(lab, "DEL", &dst, &vm_net).expect("DEL on the target");
    let port = vm_port(lab);
    assert!(bound_pods(&port).is_empty());
    assert_eq!(port.spec.ip, ip.to_string(), "the address stays the VM's");
    let c = lab.cluster();
    c.rt.block_on(vmis.delete(VM, &Default::default())).unwrap();
    let vmi =
        c.rt.block_on(vmis.create(
            &PostParams::default(),
            &VirtualMachineInstance::new(VM, Default::default()),
        ))
        .unwrap();
    vmi_on(lab, "n2");
    let again = launcher(lab, "virt-launcher-vm1-c", "n2", &vmi.metadata.uid.unwrap());
    let r = cni(lab, "ADD", &again, &net("net-vms", None)).expect("ADD after the restart");
    assert_eq!(runtime::result_address(&r.unwrap()).unwrap(), (ip, mac));
    assert_eq!(bound_pods(&vm_port(lab)), ["virt-launcher-vm1-c"]);
    answered_by(lab, "w001", ip, "virt-launcher-vm1-c");
}
