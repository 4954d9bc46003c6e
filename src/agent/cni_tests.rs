use super::*;
use crate::plan::view::{RouterView, SnatPort, SnatView, SubnetView};

fn mk_subnet(name: &str, cidr: &str, gw: &str, vni: u32) -> SubnetView {
    SubnetView {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: gw.parse().unwrap(),
        vni,
    }
}

fn mk_view() -> ClusterView {
    let r = RouterView {
        key: ObjectKey::new("t", "r1"),
        index: 0,
        subnets: vec![
            mk_subnet("a", "10.1.0.0/24", "10.1.0.1", 100),
            mk_subnet("b", "10.2.0.0/24", "10.2.0.1", 101),
        ],
        routes: vec![
            (
                "192.168.0.0/16".parse().unwrap(),
                "10.2.0.9".parse().unwrap(),
            ),
            ("0.0.0.0/0".parse().unwrap(), "10.2.0.9".parse().unwrap()),
        ],
        endpoints: vec![],
        standby: vec![],
    };
    ClusterView {
        routers: vec![r],
        snat_gateways: vec![SnatView {
            key: ObjectKey::new("t", "gw"),
            router: ObjectKey::new("t", "r1"),
            external: "ext".into(),
            address: "172.16.0.10".parse().unwrap(),
            node: None,
            candidates: vec![],
            ports: vec![SnatPort {
                subnet: "a".into(),
                ip: "10.1.0.254".parse().unwrap(),
                mac: names::sg_mac(100),
            }],
        }],
        ..Default::default()
    }
}

fn mk_req(pod_ns: &str, router: &str, subnet: &str, ip: &str) -> Request {
    let (rns, r) = router.split_once('/').unwrap();
    Request::Attachment {
        pod_namespace: pod_ns.into(),
        pod_name: "p".into(),
        router_namespace: rns.into(),
        router: r.into(),
        subnet: subnet.into(),
        ip: Some(ip.parse().unwrap()),
        mac: None,
        pod_uid: String::new(),
        container_id: "c".into(),
        interface: "net1".into(),
    }
}

fn reason(r: Response) -> &'static str {
    match r {
        Response::Error { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn answers_bridge_gateway_mtu_and_routes() {
    let v = mk_view();
    let Response::Attachment(a) = answer(Some(&v), &mk_req("t", "t/r1", "a", "10.1.0.5")) else {
        panic!("refused");
    };
    assert_eq!(a.bridge, "dvrbr-100");
    assert_eq!(a.cidr, "10.1.0.0/24".parse::<Ipv4Net>().unwrap());
    assert_eq!(a.gateway, "10.1.0.1".parse::<Ipv4Addr>().unwrap());
    assert_eq!(a.mtu, names::OVERLAY_MTU);
    let dsts: Vec<String> = a.routes.iter().map(|r| r.dst.to_string()).collect();
    // The other subnet and the extra route; never a default route.
    assert_eq!(dsts, ["10.2.0.0/24", "192.168.0.0/16"]);
    assert!(a.routes.iter().all(|r| r.gw == a.gateway));
}

#[test]
fn refusals() {
    let v = mk_view();
    let cases = [
        (mk_req("u", "t/r1", "a", "10.1.0.5"), "CrossNamespace"),
        (mk_req("t", "t/nope", "a", "10.1.0.5"), "UnknownRouter"),
        (mk_req("t", "t/r1", "c", "10.1.0.5"), "UnknownSubnet"),
        (mk_req("t", "t/r1", "a", "10.2.0.5"), "AddressOutsideSubnet"),
        (mk_req("t", "t/r1", "a", "10.1.0.0"), "AddressOutsideSubnet"),
        (
            mk_req("t", "t/r1", "a", "10.1.0.255"),
            "AddressOutsideSubnet",
        ),
        (mk_req("t", "t/r1", "a", "10.1.0.1"), "AddressReserved"),
        (mk_req("t", "t/r1", "a", "10.1.0.254"), "AddressReserved"),
    ];
    for (req, want) in cases {
        assert_eq!(reason(answer(Some(&v), &req)), want, "{req:?}");
    }
    // The SNAT port of subnet a is an ordinary address on subnet b.
    assert!(matches!(
        answer(Some(&v), &mk_req("t", "t/r1", "b", "10.2.0.254")),
        Response::Attachment(_)
    ));
}

#[test]
fn not_ready_before_the_first_resolve() {
    assert_eq!(
        reason(answer(None, &mk_req("t", "t/r1", "a", "10.1.0.5"))),
        "NotReady"
    );
    assert_eq!(reason(answer(None, &Request::Status)), "NotReady");
    assert_eq!(answer(Some(&mk_view()), &Request::Status), Response::Ready);
}

#[test]
fn wire_format() {
    let req: Request = serde_json::from_str(
        r#"{"op":"attachment","podNamespace":"t","routerNamespace":"t","router":"r1","subnet":"a","ip":"10.1.0.5","containerId":"c","interface":"net1"}"#,
    )
    .unwrap();
    let mut want = mk_req("t", "t/r1", "a", "10.1.0.5");
    if let Request::Attachment { pod_name, .. } = &mut want {
        pod_name.clear();
    }
    assert_eq!(req, want);
    let v = mk_view();
    let out = serde_json::to_value(answer(Some(&v), &req)).unwrap();
    assert_eq!(out["attachment"]["bridge"], "dvrbr-100");
    assert_eq!(out["attachment"]["routes"][0]["gw"], "10.1.0.1");
    let out = serde_json::to_value(answer(Some(&v), &Request::Status)).unwrap();
    assert_eq!(out, "ready");
    let out = serde_json::to_value(refuse("UnknownRouter", "m".into())).unwrap();
    assert_eq!(out["error"]["reason"], "UnknownRouter");
}

#[tokio::test]
async fn socket_is_private_and_answers_one_request_per_connection() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("kube-dvr-cni-{}", std::process::id()));
    let path = dir.join("sub/cni.sock");
    // A stale socket file from an earlier run is replaced.
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"stale").unwrap();
    let l = bind(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (_tx, rx) = watch::channel(Some(Arc::new(mk_view())));
    tokio::spawn(serve(l, rx, None));

    async fn ask(path: &Path, body: &[u8]) -> serde_json::Value {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(body).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        serde_json::from_slice(&out).unwrap()
    }
    assert_eq!(ask(&path, br#"{"op":"status"}"#).await, "ready");
    let bad = ask(&path, b"{nope").await;
    assert_eq!(bad["error"]["reason"], "BadRequest");
    // A client that never finishes its request is dropped after the read
    // timeout; the server keeps answering others meanwhile.
    let _silent = UnixStream::connect(&path).await.unwrap();
    assert_eq!(ask(&path, br#"{"op":"status"}"#).await, "ready");
    let _ = std::fs::remove_dir_all(&dir);
}
