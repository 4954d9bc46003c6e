//! One kube-apiserver for the whole test binary (start-up costs seconds;
//! tests keep out of each other's way with a namespace each), the real
//! `kubectl` and `helm` against it, and the chart rendered by helm.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::Client;
use kube_dvr::lab::apiserver::{tools_dir, ApiServer, ApiServerOptions};

pub struct Shared {
    pub rt: tokio::runtime::Runtime,
    pub server: ApiServer,
    /// Admin (`system:masters`).
    pub client: Client,
    /// What `kubectl apply --server-side -f crds/` printed when the shared
    /// server got the CRDs.
    pub crd_apply: Output,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

extern "C" fn stop_at_exit() {
    if let Some(s) = SHARED.get() {
        s.server.stop();
    }
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The shared server, started on first use with `crds/` applied.
pub fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        super::tools::ensure();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let opts = ApiServerOptions {
            audit: std::env::var_os("KUBE_DVR_AUDIT").is_some(),
            ..Default::default()
        };
        let server = rt
            .block_on(ApiServer::start(&opts))
            .unwrap_or_else(|e| panic!("start kube-apiserver: {e}"));
        // A static is never dropped: stop the processes when the test
        // binary exits (they would die with it anyway, see setpriv
        // --pdeathsig in the harness; this also removes the directory).
        // SAFETY: registers a plain function with no captured state.
        #[allow(unsafe_code)]
        unsafe {
            libc::atexit(stop_at_exit);
        }
        let client = rt.block_on(server.client()).unwrap();
        let crd_apply = kubectl_with(
            &server.kubeconfig,
            &["apply", "--server-side", "-f", "crds/kubedvr.io_crds.yaml"],
            None,
        );
        if crd_apply.status.success() {
            rt.block_on(wait_crds(&client));
        }
        Shared {
            rt,
            server,
            client,
            crd_apply,
        }
    })
}

async fn wait_crds(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::{conditions, wait::await_condition};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let plurals = (kube_dvr::api::Kind::ALL.iter().map(|k| k.plural())).chain(["ports".into()]);
    for plural in plurals {
        let name = format!("{plural}.kubedvr.io");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} not established"))
        .unwrap();
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    shared().rt.block_on(f)
}

/// Create namespace `name` (once) and return it.
pub fn namespace(name: &str) -> String {
    let s = shared();
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    s.rt.block_on(async {
        match Api::<Namespace>::all(s.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("create namespace {name}: {e}"),
        }
    });
    name.to_string()
}

pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new("kubectl");
    c.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(c, stdin)
}

fn run(mut c: Command, stdin: Option<&str>) -> Output {
    c.current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("run {c:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Admin kubectl.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_with(&shared().server.kubeconfig, args, stdin)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// `.tools/bin/helm` with the shared server's admin kubeconfig.
pub fn helm(args: &[&str]) -> Output {
    let mut c = Command::new(tools_dir().join("helm"));
    c.env("KUBECONFIG", &shared().server.kubeconfig)
        // helm keeps caches and its repository config in the home directory.
        .env("HELM_CACHE_HOME", shared().server.dir().join("helm/cache"))
        .env(
            "HELM_CONFIG_HOME",
            shared().server.dir().join("helm/config"),
        )
        .env("HELM_DATA_HOME", shared().server.dir().join("helm/data"))
        .args(args);
    run(c, None)
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[allow(dead_code)]
pub fn tools() -> PathBuf {
    tools_dir()
}
