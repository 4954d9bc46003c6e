//! Runs a stand-in apiserver until Ctrl-C, for poking at it with kubectl:
//! `cargo run -p kube-standin --example serve -- 8080 /tmp/standin.kubeconfig`
//! then `kubectl --kubeconfig /tmp/standin.kubeconfig get ns`.

use kube_standin::StandIn;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().as_deref().unwrap_or("0").parse()?;
    let kubeconfig = args.next().unwrap_or_else(|| "standin.kubeconfig".into());
    let s = StandIn::start(port).await?;
    s.write_kubeconfig(std::path::Path::new(&kubeconfig))?;
    println!("serving {} (kubeconfig {kubeconfig})", s.url());
    tokio::signal::ctrl_c().await?;
    println!("{} writes", s.write_count());
    s.shutdown().await;
    Ok(())
}
