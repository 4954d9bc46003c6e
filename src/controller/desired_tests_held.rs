//! What deleted objects hold: their external addresses until their
//! finalizer is gone, and (through the persisted cursors) their router
//! index and VNIs for as long as other values are free.
use super::*;
use crate::api::FloatingIP;

fn mk_fip_at(ns: &str, name: &str, fixed: &str, address: Option<&str>) -> FloatingIP {
    let mut f = mk_fip(ns, name, fixed, 10);
    f.metadata.uid = Some(format!("uid-{ns}-{name}"));
    f.spec.address = address.map(str::to_string);
    f
}

#[test]
fn a_deleting_floating_ips_address_is_not_handed_out_until_its_finalizer_is_gone() {
    let mut s = mk_world();
    settle(&mut s, true);
    let addr = fip_status(&s, "web").address.unwrap();
    // web is deleted; n1 (which serves it) has not confirmed yet.
    std::sync::Arc::make_mut(&mut s.floating_ips[0])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    s.floating_ips
        .push(mk_fip_at("tenant-a", "any", "10.10.1.11", None).into());
    s.floating_ips
        .push(mk_fip_at("tenant-a", "asks", "10.10.1.11", Some(&addr)).into());
    let a = compute(&s);
    assert!(a.remove_finalizer.is_empty());
    apply(&mut s, &a);
    let any = fip_status(&s, "any");
    assert_ne!(any.address.as_deref(), Some(addr.as_str()));
    assert!(any.address.is_some());
    let asks = fip_status(&s, "asks");
    assert_eq!(asks.address, None);
    let c = cond(&asks.conditions, "Allocated");
    assert_eq!(c.reason, "AddressInUse");
    assert!(
        !c.message.contains("web"),
        "names the holder: {}",
        c.message
    );
    // n2 is done, n1 is not: still held.
    agents_program(&mut s, Some("n2"));
    let a = compute(&s);
    assert!(a.remove_finalizer.is_empty());
    apply(&mut s, &a);
    assert_eq!(fip_status(&s, "asks").address, None);
    // n1 confirms: the finalizer goes, then the address is free.
    agents_program(&mut s, Some("n1"));
    let a = compute(&s);
    assert_eq!(a.remove_finalizer.len(), 1);
    apply(&mut s, &a);
    settle(&mut s, true);
    assert_eq!(
        fip_status(&s, "asks").address.as_deref(),
        Some(addr.as_str())
    );
}

#[test]
fn a_router_created_after_a_delete_gets_another_index_and_vnis() {
    let mut s = mk_world();
    let mut old = mk_router("tenant-b", "old", "public");
    old.metadata.uid = Some("uid-b-old".into());
    s.routers.push(old.into());
    settle(&mut s, true);
    let st = s.routers[1].status.clone().unwrap();
    let (old_index, old_vni) = (st.index.unwrap(), st.subnets[0].vni);

    std::sync::Arc::make_mut(&mut s.routers[1])
        .metadata
        .deletion_timestamp = Some(Time(ts(NOW)));
    settle(&mut s, true);
    assert_eq!(s.routers.len(), 1, "deleted");
    let mut new = mk_router("tenant-c", "new", "public");
    new.metadata.uid = Some("uid-c-new".into());
    s.routers.push(new.into());
    settle(&mut s, true);
    let st = s.routers[1].status.clone().unwrap();
    assert_ne!(st.index, Some(old_index));
    assert_ne!(st.subnets[0].vni, old_vni);
    // Restart: a controller reading the persisted cursors writes nothing.
    assert!(s.cursors.is_some());
    assert!(compute(&s).is_empty());
}
