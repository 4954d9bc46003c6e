use futures::FutureExt;
use kube::runtime::watcher::Event;
use serde_json::json;

use super::*;
use crate::api::FloatingIP;

fn dynobj(name: &str, uid: &str, rv: &str, router: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubedvr.io/v1alpha1", "kind": "FloatingIP",
        "metadata": {"name": name, "namespace": "t", "uid": uid, "resourceVersion": rv,
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"router": router, "target": {"fixedIP": "10.0.0.5"}},
        "status": {"address": "203.0.113.101"}
    }))
    .unwrap()
}

fn good(name: &str, uid: &str, rv: &str) -> DynamicObject {
    dynobj(name, uid, rv, json!("r1"))
}

/// `spec.router` of the wrong type.
fn bad(name: &str, uid: &str, rv: &str) -> DynamicObject {
    dynobj(name, uid, rv, json!(42))
}

struct Fixture {
    decoder: Decoder<FloatingIP>,
    writer: reflector::store::Writer<FloatingIP>,
    store: Store<FloatingIP>,
    registry: Arc<Undecodable>,
    telemetry: Arc<Telemetry>,
}

impl Fixture {
    fn new() -> Fixture {
        let telemetry = Telemetry::new();
        let registry = Undecodable::new(telemetry.clone());
        let (store, writer) = reflector::store::<FloatingIP>();
        Fixture {
            decoder: Decoder::new(store.clone(), registry.clone()),
            writer,
            store,
            registry,
            telemetry,
        }
    }

    /// Feed one event as [`cache`] does; returns the typed event.
    fn feed(&mut self, ev: Event<DynamicObject>) -> Option<Event<FloatingIP>> {
        let out = self.decoder.event(ev);
        if let Some(ev) = &out {
            self.writer.apply_watcher_event(ev);
        }
        out
    }

    fn list(&mut self, objs: Vec<DynamicObject>) {
        self.feed(Event::Init);
        for o in objs {
            self.feed(Event::InitApply(o));
        }
        self.feed(Event::InitDone);
    }

    /// Name → spec.router of the cached objects.
    fn cached(&self) -> BTreeMap<String, String> {
        self.store
            .state()
            .iter()
            .map(|f| (f.metadata.name.clone().unwrap(), f.spec.router.clone()))
            .collect()
    }

    fn gauge(&self) -> Option<f64> {
        self.telemetry
            .value(M_UNDECODABLE, &[("kind", "FloatingIP")])
    }
}

#[test]
fn an_undecodable_object_is_skipped_and_recorded_the_rest_is_cached() {
    let mut f = Fixture::new();
    f.list(vec![
        good("a", "u-a", "1"),
        bad("b", "u-b", "2"),
        good("c", "u-c", "3"),
    ]);
    // The list syncs the cache, without the bad object.
    assert!(f.store.wait_until_ready().now_or_never().is_some());
    assert_eq!(f.cached().keys().collect::<Vec<_>>(), ["a", "c"]);
    assert!(f
        .store
        .state()
        .iter()
        .all(|o| o.metadata.managed_fields.is_none()));
    let u = f.registry.list();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].label(), "FloatingIP t/b");
    assert_eq!(u[0].uid.as_deref(), Some("u-b"));
    assert!(u[0].error.contains("invalid type"), "{}", u[0].error);
    assert_eq!(u[0].raw["status"]["address"], "203.0.113.101");
    assert_eq!(u[0].raw["metadata"].get("managedFields"), None);
    assert_eq!(u[0].reference.kind.as_deref(), Some("FloatingIP"));
    assert_eq!(
        u[0].reference.api_version.as_deref(),
        Some("kubedvr.io/v1alpha1")
    );
    assert_eq!(f.gauge(), Some(1.0));
    assert_eq!(f.registry.raw_of(&["FloatingIP"]).len(), 1);
    assert!(f.registry.raw_of(&["DistributedRouter"]).is_empty());

    // Fixed in place: cached, no longer recorded.
    assert!(matches!(
        f.feed(Event::Apply(good("b", "u-b", "4"))),
        Some(Event::Apply(_))
    ));
    assert_eq!(f.cached().len(), 3);
    assert_eq!(f.gauge(), Some(0.0));
}

#[test]
fn an_object_that_turns_undecodable_keeps_its_last_good_version_until_deleted() {
    let mut f = Fixture::new();
    f.list(vec![good("a", "u-a", "1")]);
    // Turns bad: nothing for the cache, which keeps version 1.
    assert!(f.feed(Event::Apply(bad("a", "u-a", "2"))).is_none());
    assert_eq!(f.cached()["a"], "r1");
    assert_eq!(f.gauge(), Some(1.0));
    // A re-list (watch restarted) carries the good version over.
    f.list(vec![bad("a", "u-a", "2")]);
    assert_eq!(f.cached()["a"], "r1");
    assert_eq!(f.gauge(), Some(1.0));
    // A real Delete removes it, from the cache and the registry.
    assert!(matches!(
        f.feed(Event::Delete(bad("a", "u-a", "3"))),
        Some(Event::Delete(_))
    ));
    assert!(f.cached().is_empty());
    assert_eq!(f.gauge(), Some(0.0));
}

#[test]
fn a_new_object_under_an_old_name_replaces_the_old_one_even_when_undecodable() {
    let mut f = Fixture::new();
    f.list(vec![good("a", "u-a", "1")]);
    // Deleted and recreated (another uid) while the watch was away.
    assert!(matches!(
        f.feed(Event::Apply(bad("a", "u-a2", "5"))),
        Some(Event::Delete(_))
    ));
    assert!(f.cached().is_empty());
    f.feed(Event::Apply(good("a", "u-a", "1")));
    f.list(vec![bad("a", "u-a2", "5")]);
    assert!(f.cached().is_empty());
    assert_eq!(f.gauge(), Some(1.0));
}

#[test]
fn a_relist_forgets_undecodable_objects_that_are_gone() {
    let mut f = Fixture::new();
    f.list(vec![bad("b", "u-b", "1")]);
    assert_eq!(f.gauge(), Some(1.0));
    // Deleted while the watch was away: the next list has no trace of it.
    f.list(vec![good("c", "u-c", "2")]);
    assert_eq!(f.gauge(), Some(0.0));
    assert!(f.registry.list().is_empty());
    // An undecodable object that is deleted and was never cached: nothing
    // to tell the cache.
    f.feed(Event::Apply(bad("d", "u-d", "3")));
    assert!(f.feed(Event::Delete(bad("d", "u-d", "4"))).is_none());
    assert_eq!(f.gauge(), Some(0.0));
}

#[test]
fn core_types_decode_from_list_items_without_type_fields() {
    // A LIST's items of built-in types may omit apiVersion and kind.
    let telemetry = Telemetry::new();
    let registry = Undecodable::new(telemetry.clone());
    let (store, _w) = reflector::store::<k8s_openapi::api::core::v1::Node>();
    let mut d = Decoder::new(store, registry.clone());
    let o: DynamicObject = serde_json::from_value(
        json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}}),
    )
    .unwrap();
    assert!(matches!(
        d.event(Event::InitApply(o)),
        Some(Event::InitApply(_))
    ));
    let o: DynamicObject = serde_json::from_value(
        json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": "yes"}}),
    )
    .unwrap();
    assert!(d.event(Event::InitApply(o)).is_none());
    assert_eq!(registry.list()[0].label(), "Node n2");
    assert_eq!(
        telemetry.value(M_UNDECODABLE, &[("kind", "Node")]),
        Some(1.0)
    );
}
