use super::*;
use crate::plan::view::{Attachment, ExternalView, FloatingView, RouterView, SnatView, SubnetView};

fn view() -> ClusterView {
    let router = |ns: &str, index: u32, vni: u32| RouterView {
        key: ObjectKey::new(ns, "main"),
        index,
        subnets: vec![SubnetView {
            name: "a".into(),
            cidr: "10.10.1.0/24".parse().unwrap(),
            gateway: "10.10.1.1".parse().unwrap(),
            vni,
        }],
        routes: vec![],
        endpoints: vec![],
        standby: vec![],
    };
    let mut v = ClusterView {
        routers: vec![router("tenant-a", 0, 5), router("tenant-b", 1, 51)],
        ..Default::default()
    };
    v.external_networks.insert(
        "public".into(),
        ExternalView {
            name: "public".into(),
            cidr: "203.0.113.0/24".parse().unwrap(),
            gateway: "203.0.113.1".parse().unwrap(),
            attachment: Attachment::Bridge("br".into()),
            node_ports: Default::default(),
        },
    );
    v.floating_ips.push(FloatingView {
        key: ObjectKey::new("tenant-a", "web"),
        router: ObjectKey::new("tenant-a", "main"),
        external: "public".into(),
        address: "203.0.113.100".parse().unwrap(),
        fixed_ip: "10.10.1.10".parse().unwrap(),
        node: "n1".into(),
    });
    v.snat_gateways.push(SnatView {
        key: ObjectKey::new("tenant-b", "out"),
        router: ObjectKey::new("tenant-b", "main"),
        external: "public".into(),
        address: "203.0.113.50".parse().unwrap(),
        node: Some("n1".into()),
        candidates: vec!["n1".into()],
        ports: vec![],
    });
    v
}

#[test]
fn operations_are_attributed_to_the_object_whose_names_they_mention() {
    let o = Owners::from_view(&view());
    let a = Some("DistributedRouter/tenant-a/main".to_string());
    let b = Some("DistributedRouter/tenant-b/main".to_string());
    assert_eq!(o.attribute("create vxlan dvrvx-5: File exists"), a);
    // Whole names only: dvrvx-51 is tenant-b's.
    assert_eq!(o.attribute("create vxlan dvrvx-51: File exists"), b);
    assert_eq!(
        o.attribute(&format!(
            "add route 10.10.1.0/24 in {}",
            names::qrouter_ns(0)
        )),
        a
    );
    assert_eq!(
        o.attribute("sysctl write net/ipv4/conf/qrb-5/rp_filter in root: denied"),
        a
    );
    // A veth from the router to the fip- namespace is the router's.
    assert_eq!(
        o.attribute(&format!(
            "create veth {} peer {} in {}",
            names::rfp(0),
            names::fpr(0),
            names::fip_ns("public")
        )),
        a
    );
    // The floating IP's /32 in the shared fip- namespace is the floating IP's.
    assert_eq!(
        o.attribute(&format!(
            "add route 203.0.113.100/32 via 169.254.64.0 in {}",
            names::fip_ns("public")
        )),
        Some("FloatingIP/tenant-a/web".to_string())
    );
    assert_eq!(
        o.attribute(&format!(
            "set sysctl proxy_arp on {} in {}",
            names::fg("public"),
            names::fip_ns("public")
        )),
        Some("ExternalNetwork/public".to_string())
    );
    assert_eq!(
        o.attribute(&format!(
            "create macvlan {} in {}",
            names::qg(1),
            names::snat_ns(1)
        )),
        Some("SnatGateway/tenant-b/out".to_string())
    );
    // Two tenants' names, or none: node-wide.
    assert_eq!(o.attribute("add fdb on dvrvx-5 and dvrvx-51"), None);
    assert_eq!(o.attribute("nftables apply in root: EPERM"), None);
}

#[test]
fn objects_being_deleted_are_attributed_from_their_status() {
    let r: DistributedRouter = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gone", "namespace": "tenant-c"},
        "spec": {"subnets": []},
        "status": {"index": 7, "subnets": [{"name": "a", "vni": 9, "gatewayMac": "02:00:00:00:00:01", "cidr": "10.0.0.0/24"}]}
    }))
    .unwrap();
    let mut o = Owners::from_view(&view());
    o.add_deleting(&[], &[&r], &[], &[]);
    assert_eq!(
        o.attribute("delete 3 links in root: dvrbr-9"),
        Some("DistributedRouter/tenant-c/gone".to_string())
    );
}

#[test]
fn encoded_errors_are_bounded_json() {
    assert_eq!(encode(&[]), None);
    let many: Vec<AgentError> = (0..1000)
        .map(|i| AgentError {
            object: Some(format!("DistributedRouter/t/r{i}")),
            message: format!("add route {i} failed"),
        })
        .collect();
    let text = encode(&many).unwrap();
    assert!(text.len() <= MAX_ERRORS_LEN, "{}", text.len());
    let back = decode(&text);
    assert_eq!(back[0], many[0]);
    let last = back.last().unwrap();
    assert!(last.object.is_none() && last.message.ends_with("more errors"));
    // Plain text (an older agent) is one node-wide error.
    assert_eq!(
        decode("nft: permission denied"),
        vec![AgentError {
            object: None,
            message: "nft: permission denied".into()
        }]
    );
    assert!(decode(" ").is_empty());
}
