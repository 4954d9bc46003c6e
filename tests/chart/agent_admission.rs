//! The agent's least privilege: its RBAC is exactly what `src/agent` calls,
//! and the ValidatingAdmissionPolicy of `templates/agent-admission.yaml`
//! limits its writes to its own Node's kubedvr.io/ annotations and its own
//! Lease. The policy's CEL is evaluated with kube-cel against requests shaped
//! as kube-apiserver builds them (no `subResource` key for the main resource,
//! the node name in `userInfo.extra`), with VAP's semantics: match
//! conditions first, `variables` in order, every validation must be true, an
//! evaluation error denies (`failurePolicy: Fail`). A real kube-apiserver is
//! not available to these tests; the CEL type checker and cost limits are
//! not exercised here.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Program, Value as Cel};
use kube_cel::KubeCelExt;
use serde_json::{json, Value as Json};
use serde_yaml::Value;

use kube_dvr::cluster;

use super::{full, kind, name, one, render, strs, NAMESPACE};

/// RBAC rules as comparable tuples: (group, resource, verb, resourceNames).
type Rules = BTreeSet<(String, String, String, Vec<String>)>;

fn rule_set(rules: &Value) -> Rules {
    let mut set = BTreeSet::new();
    for r in rules.as_sequence().expect("rules") {
        let names: Vec<String> = r
            .get("resourceNames")
            .map(|n| strs(n).iter().map(|s| s.to_string()).collect())
            .unwrap_or_default();
        for g in strs(&r["apiGroups"]) {
            for res in strs(&r["resources"]) {
                for v in strs(&r["verbs"]) {
                    set.insert((g.into(), res.into(), v.into(), names.clone()));
                }
            }
        }
    }
    set
}

/// One expected rule: group, resources, verbs, resourceNames.
type Rule<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a [&'a str]);

fn expect(rules: &[Rule]) -> Rules {
    let mut set = BTreeSet::new();
    for (group, resources, verbs, names) in rules {
        for r in *resources {
            for v in *verbs {
                let names = names.iter().map(|n| n.to_string()).collect();
                set.insert((group.to_string(), r.to_string(), v.to_string(), names));
            }
        }
    }
    set
}

#[test]
fn agent_rbac_is_exactly_what_the_agent_calls() {
    let docs = render(&[]);
    let plurals: Vec<String> = kube_dvr::api::Kind::ALL
        .iter()
        .map(|k| k.plural())
        .collect();
    let kinds: Vec<&str> = plurals.iter().map(String::as_str).collect();
    // Reflector caches (list + watch) of the kinds, Ports and Nodes; a
    // get of its Node at start, merge patches of its annotations; Ports
    // created, read back (an address taken) and deleted for its CNI plugin,
    // a VM's Port's status.bindings updated; a get of a Pod (is it a VM's?).
    // No list or watch of Pods, no other status writes, no Events.
    assert_eq!(
        rule_set(&one(&docs, "ClusterRole", &full("agent"))["rules"]),
        expect(&[
            ("kubedvr.io", &kinds[..], &["list", "watch"], &[]),
            (
                "kubedvr.io",
                &["ports"],
                &["get", "list", "watch", "create", "delete"],
                &[]
            ),
            ("kubedvr.io", &["ports/status"], &["update"], &[]),
            ("", &["nodes"], &["get", "list", "watch", "patch"], &[]),
            ("", &["pods"], &["get"], &[]),
        ])
    );
    // In its namespace: its heartbeat Lease (get, create, replace) and the
    // uninstall ConfigMap only, watched by name.
    assert_eq!(
        rule_set(&one(&docs, "Role", &full("agent"))["rules"]),
        expect(&[
            (
                "coordination.k8s.io",
                &["leases"],
                &["get", "create", "update"],
                &[]
            ),
            (
                "",
                &["configmaps"],
                &["list", "watch"],
                &[cluster::UNINSTALL_CONFIGMAP]
            ),
        ])
    );
}

/// The policy and its binding, as rendered with `extra` values.
fn rendered_policy(extra: &[&str]) -> Option<(Value, Value)> {
    let docs = render(extra);
    let find = |k: &str| {
        docs.iter()
            .find(|d| kind(d) == k && name(d) == full("agent"))
            .cloned()
    };
    let policy = find("ValidatingAdmissionPolicy");
    let binding = find("ValidatingAdmissionPolicyBinding");
    assert_eq!(policy.is_some(), binding.is_some());
    policy.zip(binding)
}

#[test]
fn agent_admission_policy_is_rendered_bound_and_optional() {
    let (policy, binding) = rendered_policy(&[]).expect("rendered by default");
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(binding["spec"]["policyName"], full("agent"));
    assert_eq!(strs(&binding["spec"]["validationActions"]), ["Deny"]);
    let conditions = policy["spec"]["matchConditions"].as_sequence().unwrap();
    assert_eq!(conditions.len(), 1);
    assert!(conditions[0]["expression"]
        .as_str()
        .unwrap()
        .contains(&format!(
            "system:serviceaccount:{NAMESPACE}:{}",
            full("agent")
        )));
    // Every write verb on Nodes and Leases, subresources included.
    let rules = policy["spec"]["matchConstraints"]["resourceRules"]
        .as_sequence()
        .unwrap();
    for (group, resource) in [("", "nodes"), ("coordination.k8s.io", "leases")] {
        let rule = rules
            .iter()
            .find(|r| strs(&r["resources"]).contains(&resource))
            .unwrap_or_else(|| panic!("no rule for {resource}"));
        assert_eq!(strs(&rule["apiGroups"]), [group]);
        assert!(strs(&rule["resources"]).contains(&format!("{resource}/*").as_str()));
        assert_eq!(strs(&rule["operations"]), ["CREATE", "UPDATE", "DELETE"]);
    }
    // A custom ServiceAccount name reaches the match condition.
    let (p, _) = rendered_policy(&["--set", "agent.serviceAccount.name=dvr-agent"]).unwrap();
    assert!(p["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap()
        .contains(&format!("system:serviceaccount:{NAMESPACE}:dvr-agent'")));

    assert!(rendered_policy(&["--set", "agent.admissionPolicy.enabled=false"]).is_none());
}

/// A CEL value from JSON.
fn cel(v: &Json) -> Cel {
    kube_cel::cel::to_value(v).expect("JSON to CEL")
}

fn eval(expr: &str, ctx: &Context) -> Result<Cel, String> {
    let program = Program::compile(expr).map_err(|e| format!("compile {expr:?}: {e}"))?;
    program
        .execute(ctx)
        .map_err(|e| format!("evaluate {expr:?}: {e}"))
}

/// What the API server decides for `request` (with `object` and
/// `oldObject`): `Ok` when the policy does not apply or allows, else the
/// denial messages.
fn admit(policy: &Value, request: Json, object: Json, old: Json) -> Result<(), Vec<String>> {
    let spec = &policy["spec"];
    let mut ctx = Context::default().with_all();
    ctx.add_variable_from_value("request", cel(&request));
    ctx.add_variable_from_value("object", cel(&object));
    ctx.add_variable_from_value("oldObject", cel(&old));
    for c in spec["matchConditions"].as_sequence().unwrap() {
        match eval(c["expression"].as_str().unwrap(), &ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => return Ok(()),
            other => return Err(vec![format!("match condition: {other:?}")]),
        }
    }
    let mut vars: HashMap<Key, Cel> = HashMap::new();
    for v in spec["variables"].as_sequence().unwrap() {
        let value = eval(v["expression"].as_str().unwrap(), &ctx).map_err(|e| vec![e])?;
        vars.insert(Key::from(v["name"].as_str().unwrap().to_string()), value);
        ctx.add_variable_from_value(
            "variables",
            Cel::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
    }
    let mut denied = Vec::new();
    for v in spec["validations"].as_sequence().unwrap() {
        match eval(v["expression"].as_str().unwrap(), &ctx) {
            Ok(Cel::Bool(true)) => continue,
            Ok(Cel::Bool(false)) => {}
            other => {
                denied.push(format!("failurePolicy Fail: {other:?}"));
                continue;
            }
        }
        let message = match v.get("messageExpression") {
            Some(m) => match eval(m.as_str().unwrap(), &ctx) {
                Ok(Cel::String(s)) => s.to_string(),
                other => format!("messageExpression failed: {other:?}"),
            },
            None => v["message"].as_str().unwrap().to_string(),
        };
        denied.push(message);
    }
    if denied.is_empty() {
        Ok(())
    } else {
        Err(denied)
    }
}

const AGENT_NODE: &str = "node-1";

/// A request as kube-apiserver hands it to admission: `subResource` only
/// when there is one; the bound token's node name in `userInfo.extra`.
fn request(
    user: &str,
    node: Option<&str>,
    op: &str,
    resource: &str,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
) -> Json {
    let (group, kind) = match resource {
        "leases" => ("coordination.k8s.io", "Lease"),
        "ports" => ("kubedvr.io", "Port"),
        _ => ("", "Node"),
    };
    let mut user_info = json!({"username": user, "uid": "u", "groups": ["system:serviceaccounts"]});
    if let Some(n) = node {
        user_info["extra"] = json!({
            "authentication.kubernetes.io/node-name": [n],
            "authentication.kubernetes.io/pod-name": ["agent-x"],
        });
    }
    let mut r = json!({
        "operation": op, "name": name, "namespace": namespace, "dryRun": false,
        "resource": {"group": group, "version": "v1", "resource": resource},
        "kind": {"group": group, "version": "v1", "kind": kind},
        "userInfo": user_info,
    });
    if let Some(s) = sub {
        r["subResource"] = json!(s);
    }
    r
}

fn agent_user() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{}", full("agent"))
}

/// A Node as the API server has it.
fn node(name: &str) -> Json {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name, "resourceVersion": "7",
            "labels": {"kubernetes.io/hostname": name, "gw": "no"},
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                cluster::VTEP_ANNOTATION: "198.18.0.1",
                cluster::AGENT_ERRORS_ANNOTATION: "add route failed",
            },
        },
        "spec": {"podCIDR": "10.244.1.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]},
    })
}

/// Admission of an update of Node `name` by the agent of `AGENT_NODE`,
/// `edit` applied to the stored Node.
fn patch_node(
    policy: &Value,
    name: &str,
    sub: Option<&str>,
    edit: impl Fn(&mut Json),
) -> Result<(), Vec<String>> {
    let old = node(name);
    let mut new = old.clone();
    edit(&mut new);
    let req = request(
        &agent_user(),
        Some(AGENT_NODE),
        "UPDATE",
        "nodes",
        "",
        name,
        sub,
    );
    admit(policy, req, new, old)
}

fn lease(name: &str) -> Json {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"holderIdentity": AGENT_NODE, "leaseDurationSeconds": 30},
    })
}

fn write_lease(
    policy: &Value,
    node: Option<&str>,
    op: &str,
    ns: &str,
    name: &str,
) -> Result<(), Vec<String>> {
    let old = if op == "CREATE" {
        Json::Null
    } else {
        lease(name)
    };
    let new = if op == "DELETE" {
        Json::Null
    } else {
        lease(name)
    };
    let req = request(&agent_user(), node, op, "leases", ns, name, None);
    admit(policy, req, new, old)
}

/// A Port on `node` as the API server has it.
fn port(node: &str) -> Json {
    json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "Port",
        "metadata": {"name": "r.a.10.1.0.5", "namespace": "t"},
        "spec": {"router": "r", "subnet": "a", "network": "t/net-a", "ip": "10.1.0.5",
                 "mac": "0a:58:0a:01:00:05", "node": node, "pod": "p",
                 "containerId": "c", "interface": "net1"},
    })
}

/// Admission of the agent of `AGENT_NODE` writing a Port on `node`.
fn write_port(policy: &Value, op: &str, node: &str) -> Result<(), Vec<String>> {
    let (new, old) = match op {
        "CREATE" => (port(node), Json::Null),
        "DELETE" => (Json::Null, port(node)),
        _ => (port(node), port(node)),
    };
    admit_port_write(policy, op, None, new, old)
}

#[test]
fn agent_admission_policy_allows_ports_of_its_own_node_only() {
    let Some((policy, _)) = rendered_policy(&[]) else {
        panic!("the policy is rendered by default");
    };
    assert_eq!(write_port(&policy, "CREATE", AGENT_NODE), Ok(()));
    assert_eq!(write_port(&policy, "DELETE", AGENT_NODE), Ok(()));
    let other = "delete Ports of its own node and update a Port's status, not";
    denied(write_port(&policy, "CREATE", "node-2"), other);
    denied(write_port(&policy, "DELETE", "node-2"), other);
    denied(write_port(&policy, "UPDATE", AGENT_NODE), other);
    // A second Port of an address under another name.
    let mut renamed = port(AGENT_NODE);
    renamed["metadata"]["name"] = json!("zzz");
    let req = request(
        &agent_user(),
        Some(AGENT_NODE),
        "CREATE",
        "ports",
        "t",
        "zzz",
        None,
    );
    denied(admit(&policy, req, renamed, Json::Null), other);
    // The controller (another user) is not limited by this policy.
    let req = request(
        "system:serviceaccount:kube-dvr:kube-dvr-controller",
        None,
        "DELETE",
        "ports",
        "t",
        "r.a.10.1.0.5",
        None,
    );
    assert_eq!(admit(&policy, req, Json::Null, port("node-2")), Ok(()));
}

/// A KubeVirt VM's Port as the API server has it: pods carrying it on
/// `nodes` (status.bindings), `active` its status.activeNode.
fn vm_port(nodes: &[&str], active: Option<&str>) -> Json {
    let mut p = json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "Port",
        "metadata": {"name": "r.a.10.1.0.5", "namespace": "t"},
        "spec": {"router": "r", "subnet": "a", "network": "t/net-a", "ip": "10.1.0.5",
                 "mac": "0a:58:0a:01:00:05", "vm": "vm1"},
    });
    if !nodes.is_empty() || active.is_some() {
        p["status"] = json!({});
    }
    if !nodes.is_empty() {
        p["status"]["bindings"] = nodes.iter().map(|n| binding(n)).collect();
    }
    if let Some(a) = active {
        p["status"]["activeNode"] = json!(a);
    }
    p
}

fn binding(node: &str) -> Json {
    json!({"node": node, "pod": format!("virt-launcher-vm1-{node}"),
           "containerId": format!("c-{node}"), "interface": "net1"})
}

/// Admission of the agent of `AGENT_NODE` writing a Port (its name from
/// `new`, else `old`; `sub`resource) from `old` to `new`.
fn admit_port_write(
    policy: &Value,
    op: &str,
    sub: Option<&str>,
    new: Json,
    old: Json,
) -> Result<(), Vec<String>> {
    let req = request(
        &agent_user(),
        Some(AGENT_NODE),
        op,
        "ports",
        "t",
        new["metadata"]["name"]
            .as_str()
            .or(old["metadata"]["name"].as_str())
            .unwrap(),
        sub,
    );
    admit(policy, req, new, old)
}

/// A VM's Port: any agent may create it (the VM's pod may start on any
/// node), none may delete it; its status.bindings each agent changes for
/// its own node only, and status.activeNode (the controller's) not at all.
#[test]
fn agent_admission_policy_allows_its_own_bindings_of_a_vms_port_only() {
    let (policy, _) = rendered_policy(&[]).unwrap();
    let status =
        |old: Json, new: Json| admit_port_write(&policy, "UPDATE", Some("status"), new, old);
    let other = "node-2";
    let ports = "delete Ports of its own node and update a Port's status, not";

    assert_eq!(
        admit_port_write(&policy, "CREATE", None, vm_port(&[], None), Json::Null),
        Ok(())
    );
    let mut renamed = vm_port(&[], None);
    renamed["metadata"]["name"] = json!("zzz");
    denied(
        admit_port_write(&policy, "CREATE", None, renamed, Json::Null),
        &format!("{ports} CREATE Port t/zzz of VM vm1"),
    );
    denied(
        admit_port_write(
            &policy,
            "DELETE",
            None,
            Json::Null,
            vm_port(&[AGENT_NODE], None),
        ),
        &format!("{ports} DELETE Port t/r.a.10.1.0.5 of VM vm1"),
    );
    denied(
        admit_port_write(
            &policy,
            "UPDATE",
            None,
            vm_port(&[AGENT_NODE], None),
            vm_port(&[], None),
        ),
        &format!("{ports} UPDATE Port t/r.a.10.1.0.5"),
    );
    denied(
        admit_port_write(
            &policy,
            "UPDATE",
            Some("scale"),
            vm_port(&[], None),
            vm_port(&[], None),
        ),
        &format!("{ports} UPDATE Port t/r.a.10.1.0.5/scale"),
    );

    // Its own binding added (first, or beside another node's during a
    // migration) and removed, whatever the controller's activeNode.
    for (old, new) in [
        (vm_port(&[], None), vm_port(&[AGENT_NODE], None)),
        (
            vm_port(&[other], Some(other)),
            vm_port(&[other, AGENT_NODE], Some(other)),
        ),
        (
            vm_port(&[AGENT_NODE, other], Some(AGENT_NODE)),
            vm_port(&[other], Some(AGENT_NODE)),
        ),
        (vm_port(&[AGENT_NODE], None), vm_port(&[], None)),
    ] {
        assert_eq!(status(old.clone(), new.clone()), Ok(()), "{old} -> {new}");
    }

    // Another node's binding added, removed or changed.
    let theirs = "not other nodes' bindings of Port t/r.a.10.1.0.5";
    denied(status(vm_port(&[], None), vm_port(&[other], None)), theirs);
    denied(
        status(vm_port(&[other], None), vm_port(&[AGENT_NODE], None)),
        theirs,
    );
    let mut changed = vm_port(&[other], None);
    changed["status"]["bindings"][0]["pod"] = json!("virt-launcher-vm1-x");
    denied(status(vm_port(&[other], None), changed), theirs);
    // Its own binding put before another node's first (without activeNode
    // the first is where traffic goes).
    denied(
        status(vm_port(&[other], None), vm_port(&[AGENT_NODE, other], None)),
        "may not put a binding before another node's first on Port t/r.a.10.1.0.5",
    );
    // A pod's Port has no bindings to write.
    let mut bound = port(AGENT_NODE);
    bound["status"] = json!({"bindings": [binding(AGENT_NODE)]});
    denied(
        admit_port_write(&policy, "UPDATE", Some("status"), bound, port(AGENT_NODE)),
        "may update the status only of a VM's Port",
    );
    // status.activeNode set, moved or cleared.
    let active = "not status.activeNode of Port t/r.a.10.1.0.5";
    for (old, new) in [
        (None, Some(AGENT_NODE)),
        (Some(other), Some(AGENT_NODE)),
        (Some(other), None),
    ] {
        denied(
            status(vm_port(&[AGENT_NODE], old), vm_port(&[AGENT_NODE], new)),
            active,
        );
    }

    // The controller (another user) is not limited by this policy.
    let req = request(
        "system:serviceaccount:kube-dvr:kube-dvr-controller",
        None,
        "UPDATE",
        "ports",
        "t",
        "r.a.10.1.0.5",
        Some("status"),
    );
    assert_eq!(
        admit(
            &policy,
            req,
            vm_port(&[other], Some(other)),
            vm_port(&[AGENT_NODE, other], None)
        ),
        Ok(())
    );
}

fn denied(r: Result<(), Vec<String>>, needle: &str) {
    let messages = r.expect_err("must be denied");
    assert!(
        messages.iter().any(|m| m.contains(needle)),
        "{needle:?} not in {messages:?}"
    );
}

#[test]
fn agent_admission_policy_allows_its_own_node_and_lease_only() {
    let (policy, _) = rendered_policy(&[]).unwrap();
    let set = |k: &'static str, v: Option<&'static str>| {
        move |n: &mut Json| match v {
            Some(v) => n["metadata"]["annotations"][k] = json!(v),
            None => {
                n["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove(k);
            }
        }
    };
    let own_lease = format!("{}{AGENT_NODE}", cluster::AGENT_LEASE_PREFIX);

    // What the agent does: every annotation it writes, set and removed, on
    // its own Node; its own Lease created and renewed.
    for k in [
        cluster::VTEP_ANNOTATION,
        cluster::DVR_MAC_ANNOTATION,
        cluster::PROGRAMMED_ANNOTATION,
        cluster::AGENT_ERRORS_ANNOTATION,
        cluster::CLEANED_ANNOTATION,
    ] {
        assert_eq!(
            patch_node(&policy, AGENT_NODE, None, set(k, Some("x"))),
            Ok(()),
            "{k}"
        );
        assert_eq!(
            patch_node(&policy, AGENT_NODE, None, set(k, None)),
            Ok(()),
            "{k}"
        );
    }
    for op in ["CREATE", "UPDATE"] {
        assert_eq!(
            write_lease(&policy, Some(AGENT_NODE), op, NAMESPACE, &own_lease),
            Ok(()),
            "{op}"
        );
    }

    // Another node, even a kube-dvr annotation on it.
    denied(
        patch_node(
            &policy,
            "node-2",
            None,
            set(cluster::VTEP_ANNOTATION, Some("198.18.0.1")),
        ),
        "may only patch its own Node, not UPDATE node node-2",
    );
    // Its own node: labels (a gateway selector), other annotations, spec.
    let only_ours = "may change only kubedvr.io/ annotations";
    denied(
        patch_node(&policy, AGENT_NODE, None, |n| {
            n["metadata"]["labels"]["gw"] = json!("yes")
        }),
        only_ours,
    );
    denied(
        patch_node(
            &policy,
            AGENT_NODE,
            None,
            set("node.alpha.kubernetes.io/ttl", Some("5")),
        ),
        only_ours,
    );
    denied(
        patch_node(
            &policy,
            AGENT_NODE,
            None,
            set("example.com/owner", Some("me")),
        ),
        only_ours,
    );
    denied(
        patch_node(
            &policy,
            AGENT_NODE,
            None,
            set("node.alpha.kubernetes.io/ttl", None),
        ),
        only_ours,
    );
    denied(
        patch_node(&policy, AGENT_NODE, None, |n| {
            n["spec"]["unschedulable"] = json!(true)
        }),
        only_ours,
    );
    denied(
        patch_node(&policy, AGENT_NODE, None, |n| {
            n["metadata"]["finalizers"] = json!(["x"])
        }),
        only_ours,
    );
    // Its own node's status subresource, and deleting it.
    denied(
        patch_node(
            &policy,
            AGENT_NODE,
            Some("status"),
            set(cluster::VTEP_ANNOTATION, Some("x")),
        ),
        "not UPDATE node node-1/status",
    );
    let del = request(
        &agent_user(),
        Some(AGENT_NODE),
        "DELETE",
        "nodes",
        "",
        AGENT_NODE,
        None,
    );
    denied(
        admit(&policy, del, Json::Null, node(AGENT_NODE)),
        "not DELETE node node-1",
    );

    // Other Leases: another agent's, the controller's, its own name in
    // another namespace; deleting its own.
    let other = format!("{}node-2", cluster::AGENT_LEASE_PREFIX);
    for (op, ns, name) in [
        ("UPDATE", NAMESPACE, other.as_str()),
        ("CREATE", NAMESPACE, other.as_str()),
        ("UPDATE", NAMESPACE, cluster::CONTROLLER_LEASE),
        ("UPDATE", "kube-system", own_lease.as_str()),
        ("DELETE", NAMESPACE, own_lease.as_str()),
    ] {
        denied(
            write_lease(&policy, Some(AGENT_NODE), op, ns, name),
            &format!("may only create or renew its own Lease {NAMESPACE}/{own_lease}, not {op} Lease {ns}/{name}"),
        );
    }

    // A token that names no node may do nothing.
    denied(
        write_lease(&policy, None, "UPDATE", NAMESPACE, &own_lease),
        "names no node",
    );

    // Anyone else (the controller, kubelets) is not this policy's business.
    for user in [
        format!("system:serviceaccount:{NAMESPACE}:{}", full("controller")),
        "system:node:node-2".to_string(),
    ] {
        let req = request(&user, None, "UPDATE", "nodes", "", "node-2", None);
        let mut new = node("node-2");
        new["metadata"]["labels"]["gw"] = json!("yes");
        assert_eq!(admit(&policy, req, new, node("node-2")), Ok(()), "{user}");
    }
}

/// The evaluation above would catch the classic mistake: comparing
/// `request.subResource` with '' fails on a main-resource request, where
/// kube-apiserver leaves the key out.
#[test]
fn absent_subresource_is_not_empty_string() {
    let req = request(
        &agent_user(),
        Some(AGENT_NODE),
        "UPDATE",
        "nodes",
        "",
        AGENT_NODE,
        None,
    );
    let mut ctx = Context::default().with_all();
    ctx.add_variable_from_value("request", cel(&req));
    assert!(eval("request.subResource == ''", &ctx).is_err());
    assert_eq!(
        eval(
            "!has(request.subResource) || request.subResource == ''",
            &ctx
        ),
        Ok(Cel::Bool(true))
    );
}
