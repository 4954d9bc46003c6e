//! Named network namespaces as bind-mounted files (the `ip netns` layout),
//! in a configurable directory.
//!
//! Every namespace switch happens on a fresh OS thread that exits right
//! after: `setns` changes only the calling thread, so the caller's thread (or
//! a tokio worker) never ends up in a foreign namespace. A child process
//! spawned from inside [`run_in`] inherits that namespace (the nftables code
//! relies on it).
//!
//! **Ownership.** A namespace kube-dvr creates carries a tag: the alias
//! [`OWNER_TAG`] on its `lo`. Its name alone does not make it kube-dvr's:
//! OpenStack's agents name theirs `qrouter-`/`fip-`/`snat-` too, on hosts
//! that run both. A namespace without the tag is never observed, changed
//! or deleted, and [`create`] refuses to adopt one.
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::plan::names::OWNER_TAG;

/// Default directory of named namespaces on a real node.
pub const DEFAULT_DIR: &str = "/run/netns";

/// Path of the namespace file `name` in `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Whether `path` is a mounted namespace file (not a leftover empty file).
fn is_ns_mount(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}

/// Create the named namespace `dir/name` with `lo` up and tagged as
/// kube-dvr's ([`OWNER_TAG`]). An existing namespace of that name is
/// success if it carries the tag, and an error of kind `AlreadyExists`
/// if it does not: it is someone else's, and nothing may be done in it.
pub fn create(dir: &Path, name: &str) -> io::Result<()> {
    let file = path(dir, name);
    if is_ns_mount(&file) {
        return match is_owned(&file)? {
            true => Ok(()),
            false => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} exists and is not kube-dvr's (no ownership tag on its lo)"),
            )),
        };
    }
    fs::create_dir_all(dir)?;
    make_shared_mount(dir)?;
    let target = file.clone();
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&target)?;
            mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            // A fresh namespace has `lo` down; routing to local addresses
            // needs it up. Its alias is kube-dvr's mark of ownership.
            let mut nl = super::netlink::Netlink::open_here()?;
            nl.set_link(
                LOOPBACK_INDEX,
                &super::netlink::LinkChange {
                    up: true,
                    alias: Some(OWNER_TAG.to_string()),
                    ..Default::default()
                },
            )?;
            Ok(())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
    .inspect_err(|_| {
        // Leave no half-made namespace file behind.
        let _ = umount2(&file, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&file);
    })
}

/// `lo`'s index: the first link of every network namespace.
pub const LOOPBACK_INDEX: u32 = 1;

/// Whether the namespace at `path` carries kube-dvr's ownership tag.
pub fn is_owned(path: &Path) -> io::Result<bool> {
    let mut nl = super::netlink::Netlink::open_in(path)?;
    let lo = nl.link_by_name("lo")?;
    Ok(lo.is_some_and(|l| is_owner_tag(l.alias.as_deref())))
}

/// Whether a `lo` alias is kube-dvr's ownership tag.
pub fn is_owner_tag(alias: Option<&str>) -> bool {
    alias == Some(OWNER_TAG)
}

/// Make `dir` a shared mount point of its own, as `ip netns add` does.
///
/// Otherwise the first `ip netns add` (by an operator, say) bind-mounts the
/// directory over itself: namespace files mounted before then are shadowed by
/// copies, and unmounting one copy leaves the other busy.
pub fn make_shared_mount(dir: &Path) -> io::Result<()> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(io::Error::from)?;
            shared().map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete the named namespace `dir/name`. Not found = success.
pub fn delete(dir: &Path, name: &str) -> io::Result<()> {
    let file = path(dir, name);
    match umount2(&file, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match fs::remove_file(&file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Names of the entries of `dir` (empty if `dir` does not exist), sorted.
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        if let Some(n) = e?.file_name().to_str() {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Run `f` on a fresh OS thread that has entered the network namespace at
/// `path` (a bind-mounted namespace file or `/proc/<pid>/ns/net`).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    let ns = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || -> io::Result<T> {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            drop(ns);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The inode of a namespace file: it changes when the namespace is recreated.
pub fn inode(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)?.ino())
}
