//! The agent's side of the kernel: the engine runs on blocking threads (it
//! does netlink I/O and enters namespaces on OS threads of its own), never on
//! the async executor.
use std::io;
use std::path::Path;

use super::Error;
use crate::dataplane::engine::{Engine, EngineConfig, Keep, Report};
use crate::plan::model::NodeState;

/// Run `f` with the engine on a blocking thread and give the engine back.
pub async fn with_engine<T: Send + 'static>(
    engine: Engine,
    f: impl FnOnce(&mut Engine) -> T + Send + 'static,
) -> Result<(Engine, T), Error> {
    tokio::task::spawn_blocking(move || {
        let mut engine = engine;
        let out = f(&mut engine);
        (engine, out)
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))
}

/// How much of the kernel a pass looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Observe everything kube-dvr owns, diff, apply, sweep: the start, the
    /// periodic resync and every retry after errors.
    Full,
    /// Apply what changed since the last clean pass, without observing
    /// ([`Engine::reconcile_changes`]): user changes, O(change).
    Changes,
}

/// Program `plan` on a blocking thread, removing nothing `keep` holds
/// (state of objects not resolved yet, [`super::keep`]).
pub async fn program(
    engine: Engine,
    plan: NodeState,
    keep: Keep,
    pass: Pass,
) -> Result<(Engine, Result<Report, crate::dataplane::engine::Error>), Error> {
    with_engine(engine, move |e| match pass {
        Pass::Full => e.reconcile_keeping(&plan, &keep),
        Pass::Changes => e.reconcile_changes_keeping(&plan, &keep),
    })
    .await
}

/// Make the namespace directory exist and be a shared mount point of its
/// own, as `ip netns add` does.
///
/// On a node the agent runs in a container whose netns directory is the
/// host's, mounted with Bidirectional propagation: the namespace files the
/// agent bind-mounts there must propagate to the host (and outlive the
/// container), which needs the directory to be a shared mount. The engine's
/// namespace creation does the same; doing it at start also covers an agent
/// that adopts existing namespaces without creating any.
pub fn prepare_netns_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::dataplane::netns::make_shared_mount(dir)
}

/// `kube-dvr agent --cleanup`: remove every kernel object kube-dvr owns on
/// this node (namespaces, links, routes, rules, nftables tables). Needs no
/// API. Blocking.
pub fn cleanup(cfg: EngineConfig) -> Result<Report, Error> {
    let root = cfg.root_netns.clone();
    let mut engine = Engine::new(cfg).map_err(|source| Error::Engine { source })?;
    let report = engine
        .cleanup()
        .map_err(|source| Error::Engine { source })?;
    // The gateway fence (not the engine's: the probe task renews it).
    if let Err(e) = crate::dataplane::fence::remove_table(&root) {
        tracing::warn!(error = %e, "removing the gateway fence table");
    }
    Ok(report)
}
