//! How nft commands run: in-process through the system's libnftables
//! (`libnftables.so.1`, loaded at run time), or, where it cannot be
//! loaded, as an `nft` process. The first use picks one for the whole
//! process and logs which ([`backend`]); `KUBE_DVR_NFT=process` forces the
//! process, `KUBE_DVR_NFT=library` insists on the library (an error per
//! call where it is missing, instead of the fallback).
//!
//! Both act in the CALLING THREAD's network namespace, and a script is
//! one netlink transaction in both.
//!
//! **The library and namespaces.** `nft_ctx_new(NFT_CTX_DEFAULT)` opens
//! the context's netfilter netlink socket then and there (nothing is
//! opened when the library is loaded), and a socket belongs to the
//! namespace of the thread that opened it. So every call makes its own
//! context, on a thread spawned from the caller (it inherits the caller's
//! namespace), runs one script and frees it: a context is never kept or
//! shared.
//!
//! **The library and threads.** Separate contexts are not enough: 1.0.x
//! keeps process-wide state that its calls change without a lock (a
//! one-time initialisation flag in `nft_ctx_new`, and the interface-name
//! cache that a run fills from the namespace it runs in and releases at
//! its end). So every library call of the process holds one lock ([`LIB`]),
//! from `nft_ctx_new` to `nft_ctx_free`: library calls in different
//! namespaces run one after the other, never together.
//!
//! **Hazards the process did not have.** A call runs within
//! [`command::bounded`]: at the bound the caller gets an error, but a hung
//! call cannot be killed and keeps the lock (see there). And libnftables
//! ends the whole process (`exit(3)`) when it cannot open its netlink
//! socket; a socket of the same kind is opened (and closed) just before
//! `nft_ctx_new`, so that the usual causes (no descriptors left, no
//! nfnetlink) come back as errors instead.
//!
//! Unsafe code (one of two places in kube-dvr, with `garp`): calls into a
//! C library loaded at run time.
#![allow(unsafe_code)]
use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::io;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::dataplane::command;

/// Which way nft commands run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// libnftables, in-process: no process is forked.
    Library,
    /// The `nft` binary, one process per call.
    Process,
}

/// The environment variable that picks the backend (`process`, `library`).
pub const ENV: &str = "KUBE_DVR_NFT";

/// The shared object loaded (Debian's `libnftables1`).
pub const SONAME: &str = "libnftables.so.1";

/// What one nft call said.
#[derive(Debug)]
pub struct Output {
    pub ok: bool,
    /// How it ended (`exit status: 1`, `libnftables returned -1`).
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// The process-wide backend, picked (and logged) on first use.
pub fn backend() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let wanted = std::env::var(ENV).unwrap_or_default();
        if wanted == "process" {
            tracing::info!("nftables through the nft process ({ENV}=process)");
            return Backend::Process;
        }
        match library() {
            Ok(_) => {
                tracing::info!("nftables in-process through {SONAME}");
                Backend::Library
            }
            Err(e) if wanted == "library" => {
                tracing::error!("{ENV}=library but {e}: every nftables call will fail");
                Backend::Library
            }
            Err(e) => {
                tracing::warn!("{e}: nftables through the nft process");
                Backend::Process
            }
        }
    })
}

/// Run `script` (any number of statements, one transaction) with the
/// process-wide backend.
pub fn run_batch(script: &str) -> io::Result<Output> {
    run_batch_with(backend(), script)
}

/// [`run_batch`] with a given backend. The process reads the script from
/// its standard input (`nft -f -`).
pub fn run_batch_with(b: Backend, script: &str) -> io::Result<Output> {
    match if wedged() { Backend::Process } else { b } {
        Backend::Library => run_library(Input::File(script), false),
        Backend::Process => process(Command::new("nft").args(["-f", "-"]), Some(script)),
    }
}

/// Run one short command (`list table ...`), its output as JSON when
/// `json` (`nft -j`), with the process-wide backend.
pub fn run_command(cmd: &str, json: bool) -> io::Result<Output> {
    run_command_with(backend(), cmd, json)
}

/// [`run_command`] with a given backend. The process gets the command as
/// its argument: `nft -j -f -` prints nothing (1.0.6 reads standard input
/// for its JSON parser first).
pub fn run_command_with(b: Backend, cmd: &str, json: bool) -> io::Result<Output> {
    match if wedged() { Backend::Process } else { b } {
        Backend::Library => run_library(Input::Buffer(cmd), json),
        Backend::Process => {
            let mut c = Command::new("nft");
            if json {
                c.arg("-j");
            }
            process(c.arg(cmd), None)
        }
    }
}

fn process(cmd: &mut Command, input: Option<&str>) -> io::Result<Output> {
    // Bounded in time: a hung nft is killed.
    let out = command::run(cmd, input.map(|s| s.as_bytes().to_vec()))?;
    Ok(Output {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// `struct nft_ctx`, opaque.
#[repr(C)]
struct NftCtx {
    _private: [u8; 0],
}

/// `NFT_CTX_DEFAULT`: a context with its netlink socket.
const NFT_CTX_DEFAULT: u32 = 0;
/// `NFT_CTX_OUTPUT_JSON` (`nft -j`).
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

/// The library's entry points (`nftables/libnftables.h`).
struct Lib {
    /// Kept loaded for the life of the process (the pointers below are
    /// into it).
    _lib: libloading::Library,
    ctx_new: unsafe extern "C" fn(u32) -> *mut NftCtx,
    ctx_free: unsafe extern "C" fn(*mut NftCtx),
    buffer_output: unsafe extern "C" fn(*mut NftCtx) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut NftCtx) -> c_int,
    output_set_flags: unsafe extern "C" fn(*mut NftCtx, c_uint),
    run_cmd_from_buffer: unsafe extern "C" fn(*mut NftCtx, *const c_char) -> c_int,
    run_cmd_from_filename: unsafe extern "C" fn(*mut NftCtx, *const c_char) -> c_int,
    get_output_buffer: unsafe extern "C" fn(*mut NftCtx) -> *const c_char,
    get_error_buffer: unsafe extern "C" fn(*mut NftCtx) -> *const c_char,
}

/// Held by every library call (see the module docs).
static LIB: Mutex<()> = Mutex::new(());

/// Set when a library call outlived its bound: it still holds [`LIB`], so
/// the library is unusable for the rest of the process.
static WEDGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a libnftables call never returned ([`WEDGED`]). From then on
/// every call goes through the `nft` process (killable, bounded), and the
/// component's `/healthz` fails (`crate::telemetry`), so kubelet restarts
/// it into a process whose library is free again.
pub fn wedged() -> bool {
    WEDGED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Take the library's lock, as a call that hangs inside it does: for the
/// test that a hung call wedges the library (`tests/dataplane/libnft.rs`).
#[doc(hidden)]
pub fn hold_library_lock() -> std::sync::MutexGuard<'static, ()> {
    LIB.lock().unwrap_or_else(|p| p.into_inner())
}

/// The library, loaded once (`Err`: why not).
fn library() -> Result<&'static Lib, String> {
    static LOADED: OnceLock<Result<Lib, String>> = OnceLock::new();
    LOADED.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Lib, String> {
    let why = |e: libloading::Error| format!("cannot load {SONAME}: {e}");
    // SAFETY: libnftables' initialisers only set up its own state.
    let lib = unsafe { libloading::Library::new(SONAME) }.map_err(why)?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the types are those of `libnftables.h` (0.9 to 1.1).
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(why)?
        };
    }
    Ok(Lib {
        ctx_new: sym!("nft_ctx_new"),
        ctx_free: sym!("nft_ctx_free"),
        buffer_output: sym!("nft_ctx_buffer_output"),
        buffer_error: sym!("nft_ctx_buffer_error"),
        output_set_flags: sym!("nft_ctx_output_set_flags"),
        run_cmd_from_buffer: sym!("nft_run_cmd_from_buffer"),
        run_cmd_from_filename: sym!("nft_run_cmd_from_filename"),
        get_output_buffer: sym!("nft_ctx_get_output_buffer"),
        get_error_buffer: sym!("nft_ctx_get_error_buffer"),
        _lib: lib,
    })
}

/// Whether the library can be loaded here (whatever [`backend`] chose).
pub fn library_available() -> bool {
    library().is_ok()
}

/// How a script is handed to the library.
enum Input<'a> {
    /// `nft_run_cmd_from_buffer`: for one-line commands. 1.0.6 points an
    /// error in a multi-line buffer at the buffer's first line.
    Buffer(&'a str),
    /// `nft_run_cmd_from_filename` on an in-memory file (`memfd`), as
    /// `nft -f` reads one: errors name the right line
    /// (`/proc/self/fd/N:3:26-30: Error: ...`, the failing statement, a
    /// caret under the culprit).
    File(&'a str),
}

fn run_library(input: Input<'_>, json: bool) -> io::Result<Output> {
    let lib = library().map_err(io::Error::other)?;
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an nft script");
    let (text, file) = match input {
        Input::Buffer(s) => (CString::new(s).map_err(nul)?, None),
        Input::File(s) => {
            use std::io::Write;
            let fd = nix::sys::memfd::memfd_create(c"nft", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
            let mut f = std::fs::File::from(fd);
            f.write_all(s.as_bytes())?;
            let name = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
            (CString::new(name).map_err(nul)?, Some(f))
        }
    };
    let r = command::bounded("libnftables", move || {
        let _held = LIB.lock().unwrap_or_else(|p| p.into_inner());
        // libnftables exit()s when it cannot open this socket: try first.
        drop(netlink_sys::Socket::new(
            netlink_sys::protocols::NETLINK_NETFILTER,
        )?);
        // SAFETY: one context, made, used and freed on this thread under
        // the process-wide lock; the buffers read are copied before the
        // next call into the library.
        let out = unsafe {
            let ctx = (lib.ctx_new)(NFT_CTX_DEFAULT);
            if ctx.is_null() {
                return Err(io::Error::other("nft_ctx_new failed"));
            }
            // Unbuffered, the library would print to the agent's own
            // standard output and error.
            if (lib.buffer_output)(ctx) != 0 || (lib.buffer_error)(ctx) != 0 {
                (lib.ctx_free)(ctx);
                return Err(io::Error::other("nft_ctx_buffer_output/error failed"));
            }
            if json {
                (lib.output_set_flags)(ctx, NFT_CTX_OUTPUT_JSON);
            }
            let rc = match file {
                Some(_) => (lib.run_cmd_from_filename)(ctx, text.as_ptr()),
                None => (lib.run_cmd_from_buffer)(ctx, text.as_ptr()),
            };
            let take = |p: *const c_char| match p.is_null() {
                true => String::new(),
                false => CStr::from_ptr(p).to_string_lossy().into_owned(),
            };
            let stdout = take((lib.get_output_buffer)(ctx));
            let stderr = take((lib.get_error_buffer)(ctx));
            (lib.ctx_free)(ctx);
            Output {
                ok: rc == 0,
                status: format!("libnftables returned {rc}"),
                stdout,
                stderr: stderr.trim().to_string(),
            }
        };
        // The in-memory file lives until the library has read it.
        drop(file);
        Ok(out)
    });
    if r.as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut)
        && !wedged()
    {
        WEDGED.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("a libnftables call never returned: nftables through the nft process from now on, /healthz fails until a restart");
    }
    r?
}
