//! A real kube-apiserver on loopback, for tests and `kube-dvr lab --api
//! kube-apiserver`, in the manner of controller-runtime's envtest: etcd,
//! kube-apiserver and a kube-controller-manager that runs only the
//! controllers needing no kubelet (namespace deletion, garbage collection,
//! default service accounts). The binaries are built from Go modules by
//! `scripts/install-tools.sh` into `.tools/bin` (see `tools/kube/`).
//!
//! Everything lives in one temporary directory: an openssl-made CA, the
//! serving certificate and the service-account key pair, etcd's data, each
//! process's log (and the audit log when asked for), and an admin kubeconfig
//! (a static token in `system:masters`). The server runs as a cluster does:
//! `Node,RBAC` authorization, the default admission plugins plus
//! `NodeRestriction` (ValidatingAdmissionPolicy is on by default), a
//! service-account issuer so TokenRequest hands out bound tokens.
//!
//! Dropping [`ApiServer`] stops the processes and removes the directory. The
//! processes are also started with `setpriv --pdeathsig KILL` from a thread
//! that lives as long as this process, so they die with it even when no drop
//! runs (a server shared by a test binary in a static, a crash); a later
//! start removes directories whose owner process is gone.
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

/// The Kubernetes release `tools/kube/k8s/go.mod` pins (what the tests ran
/// against).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// How long start-up may take (etcd, the API server's post-start hooks).
const START_TIMEOUT: Duration = Duration::from_secs(90);
const DIR_PREFIX: &str = "kube-dvr-apiserver-";

#[derive(Debug, thiserror::Error)]
pub enum ApiServerError {
    #[error(
        "{tool} not found in {dir} (run scripts/install-tools.sh, which builds it from tools/kube)"
    )]
    Missing { tool: &'static str, dir: String },
    #[error("{op}: {source}")]
    Io { op: String, source: io::Error },
    #[error("{0}")]
    Failed(String),
    #[error("{op}: {source}")]
    Kube { op: String, source: kube::Error },
}

fn io_err(op: impl Into<String>) -> impl FnOnce(io::Error) -> ApiServerError {
    let op = op.into();
    move |source| ApiServerError::Io { op, source }
}

fn kube_err(op: impl Into<String>) -> impl FnOnce(kube::Error) -> ApiServerError {
    let op = op.into();
    move |source| ApiServerError::Kube { op, source }
}

#[derive(Clone, Debug, Default)]
pub struct ApiServerOptions {
    /// Where the binaries are; [`tools_dir`] when unset.
    pub bin_dir: Option<PathBuf>,
    /// Write an audit log (level Metadata) to `audit.log` in the directory.
    pub audit: bool,
}

/// A running etcd + kube-apiserver + kube-controller-manager.
pub struct ApiServer {
    dir: PathBuf,
    /// In start order; stopped in reverse. Behind a lock so that a server
    /// shared through a static can still be stopped ([`ApiServer::stop`]).
    children: Mutex<Vec<(&'static str, Child)>>,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin kubeconfig (`kubectl --kubeconfig`).
    pub kubeconfig: PathBuf,
    admin_token: String,
}

/// `.tools/bin`: `$KUBE_DVR_TOOLS_BIN`, else `.tools/bin` under the current
/// directory, else under the source tree this binary was built from.
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KUBE_DVR_TOOLS_BIN") {
        return d.into();
    }
    let here = Path::new(".tools/bin");
    if here.join("kube-apiserver").exists() {
        return here.canonicalize().unwrap_or_else(|_| here.into());
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin")
}

impl ApiServer {
    pub async fn start(opts: &ApiServerOptions) -> Result<ApiServer, ApiServerError> {
        let bin = opts.bin_dir.clone().unwrap_or_else(tools_dir);
        for tool in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            if !bin.join(tool).exists() {
                return Err(ApiServerError::Missing {
                    tool,
                    dir: bin.display().to_string(),
                });
            }
        }
        remove_stale_dirs();
        let dir = new_dir()?;
        let mut server = ApiServer {
            url: String::new(),
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            children: Mutex::new(Vec::new()),
            admin_token: random_hex()?,
        };
        // On failure the partly started server is dropped: processes stop,
        // the directory goes.
        server.launch(&bin, opts).await?;
        Ok(server)
    }

    async fn launch(&mut self, bin: &Path, opts: &ApiServerOptions) -> Result<(), ApiServerError> {
        let d = self.dir.clone();
        certificates(&d)?;
        fs::write(
            d.join("tokens.csv"),
            format!("{},admin,admin,\"system:masters\"\n", self.admin_token),
        )
        .map_err(io_err("write tokens.csv"))?;
        let (etcd_port, peer_port, port) = (free_port()?, free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg("--name=kube-dvr-test")
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=kube-dvr-test={peer_url}"))
            // Test data: losing it on a power cut is fine.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        self.spawn("etcd", etcd)?;

        self.url = format!("https://127.0.0.1:{port}");
        let p = |f: &str| d.join(f).display().to_string();
        let mut api = Command::new(bin.join("kube-apiserver"));
        api.arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            // A loopback address cannot back the `kubernetes` Service.
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", p("certs")))
            .arg(format!("--tls-cert-file={}", p("serving.crt")))
            .arg(format!("--tls-private-key-file={}", p("serving.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--allow-privileged=true")
            .arg("--profiling=false");
        if opts.audit {
            fs::write(
                d.join("audit-policy.yaml"),
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
            )
            .map_err(io_err("write audit policy"))?;
            api.arg(format!("--audit-policy-file={}", p("audit-policy.yaml")))
                .arg(format!("--audit-log-path={}", p("audit.log")));
        }
        self.spawn("kube-apiserver", api)?;
        self.write_kubeconfig(&self.kubeconfig.clone(), &self.admin_token.clone())?;
        self.wait_ready().await?;

        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--controllers=namespace,garbagecollector,serviceaccount")
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--profiling=false");
        self.spawn("kube-controller-manager", kcm)?;
        Ok(())
    }

    /// Start `cmd` with its output in `<name>.log`, from the keeper thread.
    fn spawn(&mut self, name: &'static str, cmd: Command) -> Result<(), ApiServerError> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(io_err(format!("create {name}.log")))?;
        let mut wrapped = Command::new("setpriv");
        wrapped
            .args(["--pdeathsig", "KILL", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("log file"))?)
            .stderr(log);
        let child = keeper_spawn(wrapped).map_err(io_err(format!("start {name} (setpriv)")))?;
        self.children.lock().expect("children").push((name, child));
        Ok(())
    }

    /// Wait until `/readyz` answers `ok` (etcd reached, CRD and RBAC
    /// bootstrap hooks done), failing early when a process exits.
    async fn wait_ready(&mut self) -> Result<(), ApiServerError> {
        let client = self.client().await?;
        let start = Instant::now();
        loop {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            if let Ok(body) = client.request_text(req).await {
                if body.trim() == "ok" {
                    return Ok(());
                }
            }
            for (name, c) in self.children.lock().expect("children").iter_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(ApiServerError::Failed(format!(
                        "{name} exited ({status}):\n{}",
                        log_tail(&self.dir.join(format!("{name}.log")))
                    )));
                }
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(ApiServerError::Failed(format!(
                    "kube-apiserver not ready within {} s:\n{}",
                    START_TIMEOUT.as_secs(),
                    log_tail(&self.dir.join("kube-apiserver.log"))
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A client with the admin identity (`system:masters`).
    pub async fn client(&self) -> Result<Client, ApiServerError> {
        client_from(&self.kubeconfig).await
    }

    /// A client authenticating with `token`.
    pub async fn client_with_token(&self, token: &str) -> Result<Client, ApiServerError> {
        let path = self.dir.join(format!("token-{}.kubeconfig", random_hex()?));
        self.write_kubeconfig(&path, token)?;
        let c = client_from(&path).await;
        let _ = fs::remove_file(&path);
        c
    }

    /// A bound token of service account `namespace/name` (TokenRequest,
    /// valid 30 days: a `lab up` may run long, and nothing refreshes it). Bound to `node` when given: the token then carries the extra
    /// `authentication.kubernetes.io/node-name`, as a token mounted into a
    /// pod of a DaemonSet does.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        node: Option<&str>,
    ) -> Result<String, ApiServerError> {
        let admin = self.client().await?;
        let mut spec = serde_json::json!({"expirationSeconds": 30 * 24 * 3600});
        if let Some(n) = node {
            let node = Api::<Node>::all(admin.clone())
                .get(n)
                .await
                .map_err(kube_err(format!("get node {n}")))?;
            spec["boundObjectRef"] = serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": n, "uid": node.metadata.uid});
        }
        let req: TokenRequest = serde_json::from_value(serde_json::json!({"spec": spec}))
            .map_err(|e| ApiServerError::Failed(format!("TokenRequest: {e}")))?;
        let resp = Api::<ServiceAccount>::namespaced(admin, namespace)
            .create_token_request(name, &PostParams::default(), &req)
            .await
            .map_err(kube_err(format!("token for {namespace}/{name}")))?;
        resp.status
            .and_then(|s| s.token)
            .ok_or_else(|| ApiServerError::Failed("TokenRequest without a token".into()))
    }

    /// Write a kubeconfig for this server that authenticates with `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<(), ApiServerError> {
        let ca = self.dir.join("ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-dvr-test\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: kube-dvr-test\n  context: {{cluster: kube-dvr-test, user: user}}\ncurrent-context: kube-dvr-test\n",
            url = self.url,
            ca = ca.display(),
        );
        fs::write(path, text).map_err(io_err(format!("write {}", path.display())))
    }

    /// The directory with the logs (and `audit.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl ApiServer {
    /// Stop every process and remove the directory (what dropping does).
    pub fn stop(&self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let mut children = match self.children.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        while let Some((_, mut child)) = children.pop() {
            // setpriv execs the tool: the child's pid is the tool's.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn client_from(path: &Path) -> Result<Client, ApiServerError> {
    let kc = Kubeconfig::read_from(path)
        .map_err(|e| ApiServerError::Failed(format!("read {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| ApiServerError::Failed(format!("kubeconfig {}: {e}", path.display())))?;
    Client::try_from(config).map_err(kube_err("kube client"))
}

/// The CA, the serving certificate (127.0.0.1, localhost) and the
/// service-account signing key pair, all P-256.
fn certificates(d: &Path) -> Result<(), ApiServerError> {
    let cnf = d.join("openssl.cnf");
    fs::write(
        &cnf,
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = kube-dvr-test\n\
         [ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
         subjectKeyIdentifier = hash\n\
         [serving]\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes.default.svc\n",
    )
    .map_err(io_err("write openssl.cnf"))?;
    let cnf = cnf.display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        d,
        &["req", "-x509", "-config", &cnf, "-extensions", "ca"],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=kube-dvr-test-ca",
        ],
    )?;
    openssl(
        d,
        &["req", "-x509", "-config", &cnf, "-extensions", "serving"],
        &ec,
        &[
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-keyout",
            "serving.key",
            "-out",
            "serving.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=kube-apiserver",
        ],
    )?;
    openssl(
        d,
        &["genpkey", "-algorithm", "EC"],
        &[],
        &["-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key"],
    )?;
    openssl(
        d,
        &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        &[],
        &[],
    )
}

fn openssl(d: &Path, a: &[&str], b: &[&str], c: &[&str]) -> Result<(), ApiServerError> {
    let out = Command::new("openssl")
        .args(a)
        .args(b)
        .args(c)
        .current_dir(d)
        .output()
        .map_err(io_err("run openssl"))?;
    if !out.status.success() {
        return Err(ApiServerError::Failed(format!(
            "openssl {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A port nobody listens on right now (the kernel's choice).
fn free_port() -> Result<u16, ApiServerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("find a free port"))?;
    Ok(l.local_addr().map_err(io_err("find a free port"))?.port())
}

fn random_hex() -> Result<String, ApiServerError> {
    use std::io::Read;
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(io_err("read /dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn new_dir() -> Result<PathBuf, ApiServerError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
    Ok(dir)
}

/// Remove the directories of servers whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Spawn on a thread that never exits: `--pdeathsig` fires when the thread
/// that forked the child ends, not the process.
fn keeper_spawn(cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let tx = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("apiserver-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The senders live in a static: never reached.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawn the keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .expect("keeper lock")
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("keeper thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("keeper thread gone"))?
}
