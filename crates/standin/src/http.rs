//! HTTP front: routing of kube-apiserver paths onto the store, discovery,
//! tables and watches. Plain HTTP/1.1 on loopback, no authentication.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::admission::WriteOpts;
use crate::convert::{ingest, present};
use crate::discovery;
use crate::patch::{apply_patch, parse_body, PatchKind};
use crate::resource::ResourceType;
use crate::selector::Selector;
use crate::status::ApiError;
use crate::store::{Part, Store};
use crate::table::{table, wants_table, Include};
use crate::watch::{spawn as spawn_watch, WatchRequest};

pub type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub struct Ctx {
    pub store: Arc<Store>,
    /// `127.0.0.1:PORT`, for `/api`'s serverAddressByClientCIDRs.
    pub addr: String,
    pub bookmark_interval: Duration,
    pub shutdown: watch::Receiver<bool>,
}

fn respond(code: u16, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

/// A parsed request: what every handler looks at.
struct Req {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| !v.is_empty())
    }

    /// How a write at API `version` is admitted.
    fn write_opts(&self, version: &str) -> WriteOpts {
        let strict = self.q("fieldValidation") == Some("Strict");
        WriteOpts::request(self.dry_run(), version, strict)
    }

    fn body_value(&self) -> Result<Value, ApiError> {
        if self
            .content_type
            .starts_with("application/vnd.kubernetes.protobuf")
        {
            return crate::protobuf::decode(&self.body);
        }
        if !self.content_type.is_empty()
            && !self.content_type.contains("json")
            && !self.content_type.contains("yaml")
        {
            return Err(ApiError::unsupported_media_type(&self.content_type));
        }
        let parsed = if self.content_type.contains("yaml") {
            serde_yaml::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<Value>(&self.body).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}

pub async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error_response(&ApiError::bad_request(format!(
                "reading body: {e}"
            ))))
        }
    };
    let header = |h| {
        parts
            .headers
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let r = Req {
        method: parts.method.clone(),
        query: form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        accept: header(ACCEPT),
        content_type: header(CONTENT_TYPE),
        body,
    };
    let path = parts.uri.path().trim_end_matches('/').to_string();
    let mutating = matches!(
        r.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let resp = route(&ctx, &path, &r).unwrap_or_else(|e| error_response(&e));
    if mutating && resp.status().is_success() {
        ctx.store.count_write();
    }
    tracing::debug!(method = %r.method, %path, status = resp.status().as_u16(), "standin request");
    Ok(resp)
}

fn route(ctx: &Arc<Ctx>, path: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let types = || ctx.store.types();
    let get_only = |v: Value| {
        if r.method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    let aggregated = discovery::wants_aggregated(&r.accept);
    match segs.as_slice() {
        ["version"] => get_only(discovery::version()),
        ["healthz" | "readyz" | "livez"] => Ok(respond(200, "text/plain", b"ok".to_vec())),
        ["openapi", "v3"] => get_only(discovery::openapi_v3(&types())),
        ["openapi", "v3", "api", v] => {
            get_only(discovery::openapi_v3_gv(&types(), "", v).ok_or_else(ApiError::no_such_path)?)
        }
        ["openapi", "v3", "apis", g, v] => {
            get_only(discovery::openapi_v3_gv(&types(), g, v).ok_or_else(ApiError::no_such_path)?)
        }
        ["api"] if aggregated => Ok(respond(
            200,
            discovery::AGGREGATED_CONTENT_TYPE,
            serde_json::to_vec(&discovery::aggregated(&types(), true)).unwrap_or_default(),
        )),
        ["apis"] if aggregated => Ok(respond(
            200,
            discovery::AGGREGATED_CONTENT_TYPE,
            serde_json::to_vec(&discovery::aggregated(&types(), false)).unwrap_or_default(),
        )),
        ["api"] => get_only(discovery::core_versions(&ctx.addr)),
        ["apis"] => get_only(discovery::group_list(&types())),
        ["api", "v1"] => get_only(
            discovery::resource_list(&types(), "", "v1").ok_or_else(ApiError::no_such_path)?,
        ),
        ["apis", g] => get_only(discovery::group(&types(), g).ok_or_else(ApiError::no_such_path)?),
        ["apis", g, v] => {
            get_only(discovery::resource_list(&types(), g, v).ok_or_else(ApiError::no_such_path)?)
        }
        ["api", "v1", rest @ ..] => resource(ctx, "", "v1", rest, r),
        ["apis", g, v, rest @ ..] => resource(ctx, g, v, rest, r),
        _ => Err(ApiError::no_such_path()),
    }
}

/// Where a resource path points.
struct Target {
    rt: ResourceType,
    version: String,
    /// Namespace from the path (None: cluster-scoped or all namespaces).
    ns: Option<String>,
    name: Option<String>,
    part: Part,
}

fn resolve(ctx: &Ctx, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let store = &ctx.store;
    let (ns, plural, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if store
                .lookup(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some(*ns), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return Err(ApiError::no_such_path()),
    };
    let rt = store
        .lookup(group, version, plural)
        .ok_or_else(ApiError::no_such_path)?;
    let (name, part) = match tail {
        [] => (None, Part::Main),
        [name] => (Some(name.to_string()), Part::Main),
        [name, "status"] if rt.status => (Some(name.to_string()), Part::Status),
        _ => return Err(ApiError::no_such_path()),
    };
    if (rt.namespaced && ns.is_none() && name.is_some()) || (!rt.namespaced && ns.is_some()) {
        return Err(ApiError::no_such_path());
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        ns: ns.map(String::from),
        name,
        part,
    })
}

fn resource(
    ctx: &Arc<Ctx>,
    group: &str,
    version: &str,
    rest: &[&str],
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    let t = resolve(ctx, group, version, rest)?;
    let store = &ctx.store;
    let rt = &t.rt;
    let ns = t.ns.clone().unwrap_or_default();
    let opts = r.write_opts(&t.version);
    let view = |o: &Value| present(rt, &t.version, o);
    let as_table = wants_table(&r.accept).then(|| Include::parse(r.q("includeObject")));
    let out = |code: u16, o: Value| match as_table {
        Some(inc) => json_response(code, &table(rt, &[o], None, inc)),
        None => json_response(code, &o),
    };
    let Some(name) = t.name.clone() else {
        let selector = Selector::parse(r.q("labelSelector"), r.q("fieldSelector"))?;
        return match r.method {
            Method::GET if r.flag("watch") => {
                let since = match r.q("resourceVersion") {
                    None | Some("") | Some("0") => None,
                    Some(v) => Some(v.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resourceVersion {v:?}"))
                    })?),
                };
                let timeout = r
                    .q("timeoutSeconds")
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(1800);
                let req = WatchRequest {
                    rt: rt.clone(),
                    version: t.version.clone(),
                    namespace: t.ns.clone(),
                    selector,
                    since,
                    timeout: Duration::from_secs(timeout),
                    bookmarks: r.flag("allowWatchBookmarks"),
                    bookmark_interval: ctx.bookmark_interval,
                    initial_events_end: r.flag("sendInitialEvents"),
                    as_table,
                };
                let body = spawn_watch(store.clone(), req, ctx.shutdown.clone());
                let mut resp = Response::new(body.boxed());
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Ok(resp)
            }
            Method::GET => {
                // Pages (`limit`, `continue`): the token is the first
                // page's resourceVersion and the last key sent.
                let limit = (r.q("limit").and_then(|l| l.parse::<usize>().ok())).filter(|l| *l > 0);
                let (first_rv, after) = match r.q("continue").filter(|c| !c.is_empty()) {
                    None => (None, None),
                    Some(c) => {
                        let bad = || ApiError::bad_request(format!("invalid continue token {c:?}"));
                        let mut parts = c.splitn(3, '/');
                        let rv = parts
                            .next()
                            .and_then(|v| v.parse::<u64>().ok())
                            .ok_or_else(bad)?;
                        let (ns, name) = parts.next().zip(parts.next()).ok_or_else(bad)?;
                        (Some(rv), Some((ns.to_string(), name.to_string())))
                    }
                };
                let (items, rv, more) =
                    store.list_page(rt, t.ns.as_deref(), &selector, view, limit, after);
                let rv = first_rv.unwrap_or(rv);
                let mut metadata = json!({"resourceVersion": rv.to_string()});
                if let Some((ns, name)) = more {
                    metadata["continue"] = json!(format!("{rv}/{ns}/{name}"));
                }
                Ok(match as_table {
                    // kubectl pages its tables too (`--chunk-size`).
                    Some(inc) => {
                        let mut t = table(rt, &items, Some(rv), inc);
                        t["metadata"] = metadata;
                        json_response(200, &t)
                    }
                    None => json_response(
                        200,
                        &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(&t.version),
                                "metadata": metadata, "items": items}),
                    ),
                })
            }
            Method::POST => {
                let created = store.create(rt, &ns, ingest(rt, r.body_value()?), &opts)?;
                Ok(out(201, view(&created)))
            }
            Method::DELETE => {
                let gone = store.delete_collection(rt, t.ns.as_deref(), &selector, view);
                let items: Vec<Value> = gone.iter().map(view).collect();
                Ok(json_response(
                    200,
                    &json!({"kind": rt.list_kind(), "apiVersion": rt.api_version(&t.version), "metadata": {}, "items": items}),
                ))
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    };
    let not_found = || ApiError::not_found(&rt.group, &rt.plural, &name);
    match r.method {
        Method::GET => Ok(out(200, view(&*store.get(rt, &ns, &name)?))),
        Method::PUT => {
            let body = r.body_value()?;
            let (o, _) = store.write(rt, &ns, &name, t.part, &opts, |cur| {
                cur.map(|_| ingest(rt, body)).ok_or_else(not_found)
            })?;
            Ok(out(200, view(&o)))
        }
        Method::PATCH => {
            let kind = PatchKind::from_content_type(&r.content_type)?;
            if kind == PatchKind::Strategic && rt.custom {
                return Err(ApiError::strategic_merge_on_custom_resource());
            }
            let patch = parse_body(kind, &r.body)?;
            let (o, created) =
                store.write(rt, &ns, &name, t.part, &opts, |cur| match (cur, kind) {
                    (None, PatchKind::Apply) => Ok(ingest(rt, patch)),
                    (None, _) => Err(not_found()),
                    (Some(c), _) => Ok(ingest(rt, apply_patch(kind, &view(c), &patch)?)),
                })?;
            Ok(out(if created { 201 } else { 200 }, view(&o)))
        }
        Method::DELETE => Ok(out(200, view(&store.delete(rt, &ns, &name, r.dry_run())?))),
        _ => Err(ApiError::method_not_allowed()),
    }
}
