//! The JSON REST API under `/api/v1`. Handlers are thin: they extract, call one
//! [`Core`](crate::service::Core) operation, and shape the answer.

use crate::error::ServiceError;
use crate::service::{
    AutonomousRequest, Caller, Core, SandboxPatch, TaskRequest, ThreatResponsePatch,
};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine;
use riposte_model::accounts::SPECIAL_ACCOUNT_NAME;
use riposte_model::{Operation, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body the API accepts.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;

type AppState = Arc<Core>;

/// The remote address of a connection, put on each request by the server's accept loop.
#[derive(Clone, Copy, Debug)]
pub struct RemoteAddr(pub SocketAddr);

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServiceError::Conflict(_) => StatusCode::CONFLICT,
            ServiceError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            ServiceError::Internal(m) => {
                // The details (database messages, paths) are for the operator's log, not
                // for whoever sent the request; the reference ties the two together.
                let reference = format!("{:08x}", rand::random::<u32>());
                tracing::error!(reference, "internal error: {m}");
                let message = format!(
                    "internal error (reference {reference}); the server's log has the details"
                );
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({ "error": message })),
                )
                    .into_response();
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// A JSON body whose rejections (malformed, wrong type, too large) become JSON errors.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let refused = |status: StatusCode, text: String| {
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("the request body is larger than the limit of {BODY_LIMIT} bytes")
            } else {
                format!("malformed request: {text}")
            };
            (status, Json(json!({ "error": message }))).into_response()
        };
        if !json_content_type(req.headers()) {
            return Err(refused(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be JSON, sent with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| refused(r.status(), r.body_text()))?;
        // Every body of this API is an object. serde would also take a struct written as
        // an array of its fields in order (`["B", null]` for a group), which nobody means
        // to send and which reads fields by position: refused.
        let first = bytes.iter().find(|b| !b" \t\r\n".contains(b));
        let other_json = || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        if first != Some(&b'{') && other_json() {
            return Err(refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object (`{...}`)".into(),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(refused(rejection.status(), rejection.body_text())),
        }
    }
}

/// Whether the request says its body is JSON: `application/json`, or a type of
/// `application/*+json`, as axum's `Json` takes them.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Query parameters, refused with a JSON error (as everything else is) when they do not
/// parse: `limit=abc` says so in the API's own words.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(rejection) => Err((
                rejection.status(),
                Json(json!({ "error": format!("malformed query: {}", rejection.body_text()) })),
            )
                .into_response()),
        }
    }
}

/// A JSON request body that may be left out: an empty body, sent without a content
/// type, stands for `T::default()`. A body that is there must be JSON, as for [`Body`].
pub struct OptionalBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalBody<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if req.headers().contains_key(axum::http::header::CONTENT_TYPE) {
            return Body::<T>::from_request(req, state)
                .await
                .map(|Body(v)| OptionalBody(v));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if bytes.is_empty() {
            return Ok(OptionalBody(T::default()));
        }
        Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({
                "error": "the request body must be JSON, sent with `Content-Type: application/json`"
            })),
        )
            .into_response())
    }
}

fn source_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RemoteAddr>()
        .map(|a| a.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        core: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let source = source_of(parts);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let principal = if let Some(token) = header.strip_prefix("Bearer ") {
            core.session(token.trim()).await?
        } else if let Some(basic) = header.strip_prefix("Basic ") {
            let (user, password) = basic_credentials(basic).ok_or_else(|| {
                ServiceError::Unauthorized("malformed Basic authorization".into())
            })?;
            core.check_password(&user, &password, &source).await?
        } else {
            return Err(ServiceError::Unauthorized(
                "log in first: no credentials were given".into(),
            ));
        };
        // Refused here, before the request's body is read: the special account learns
        // nothing about any other endpoint, not even what its body should hold. (Each
        // operation checks the role again.)
        let request = format!("{} {}", parts.method, parts.uri.path());
        if principal == riposte_model::Principal::Special && parts.uri.path() != AUTONOMOUS_PATH {
            // Recorded: the special account calling anything else is a sign that a
            // device holding its password is compromised.
            let caller = Caller {
                principal,
                source,
                request: Some(request.clone()),
            };
            core.audit(&caller, "refused", &request).await;
            return Err(riposte_model::Denied::special().into());
        }
        Ok(Caller {
            principal,
            source,
            request: Some(request),
        })
    }
}

/// The one endpoint the special account may call (the router's route, spelt out there
/// too so that the OpenAPI test reads every route from the router's text).
const AUTONOMOUS_PATH: &str = "/api/v1/autonomous-tasks";

/// The API router.
pub fn router(core: AppState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/password", put(change_own_password))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/pki/crl", get(revocation_list))
        .route("/api/v1/groups", get(groups).post(create_group))
        .route(
            "/api/v1/groups/{group}",
            axum::routing::delete(delete_group),
        )
        .route("/api/v1/groups/{group}/rename", post(rename_group))
        .route("/api/v1/groups/{group}/move", post(move_group))
        .route("/api/v1/groups/{group}/policy", get(policy))
        .route(
            "/api/v1/groups/{group}/policy/threat-response",
            put(set_policy_tr),
        )
        .route(
            "/api/v1/groups/{group}/policy/sandbox-integration",
            put(set_policy_sandbox),
        )
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/devices/{device}", get(device))
        .route("/api/v1/devices/{device}/move", post(move_device))
        .route("/api/v1/devices/{device}/revoke", post(revoke_device))
        .route("/api/v1/devices/{device}/settings", get(device_settings))
        .route(
            "/api/v1/devices/{device}/settings/threat-response",
            put(set_device_tr).delete(clear_device_tr),
        )
        .route(
            "/api/v1/enroll-tokens",
            get(enroll_tokens).post(create_enroll_token),
        )
        .route("/api/v1/accounts", get(accounts).post(create_account))
        .route(
            "/api/v1/accounts/{name}",
            axum::routing::delete(delete_account),
        )
        .route(
            "/api/v1/accounts/{name}/password",
            put(set_account_password),
        )
        .route(
            "/api/v1/special-account",
            get(special_status)
                .post(create_special)
                .delete(delete_special),
        )
        .route(
            "/api/v1/special-account/password",
            put(change_special_password),
        )
        .route("/api/v1/tasks", get(tasks).post(create_task))
        .route("/api/v1/tasks/{id}", get(task))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/api/v1/autonomous-tasks", post(create_autonomous))
        .route("/api/v1/detections", get(detections))
        .route("/api/v1/detections/{id}", get(detection))
        .route("/api/v1/quarantine", get(quarantine))
        .route(
            "/api/v1/quarantine/{device}/{entry}/{action}",
            post(quarantine_action),
        )
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/audit", get(audit))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(core)
}

type ApiResult = Result<Json<Value>, ApiError>;

/// What a handler answers when it fails: an operation's error, or a request body refused
/// as malformed (already a JSON answer: [`Body`]).
enum ApiError {
    Service(ServiceError),
    Body(Box<Response>),
}

impl<E: Into<ServiceError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError::Service(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Service(e) => e.into_response(),
            ApiError::Body(r) => *r,
        }
    }
}

/// A request's body, given only to a caller allowed `op`: whoever may not do it learns
/// that (403, and the refusal is audited), not what the body should have held (400 or
/// 422). The operation checks the role again itself.
async fn permitted<T>(
    core: &Core,
    c: &Caller,
    op: Operation,
    body: Result<T, Response>,
) -> Result<T, ApiError> {
    core.allow(c, op).await?;
    body.map_err(|r| ApiError::Body(Box::new(r)))
}

fn ok<T: serde::Serialize>(v: T) -> ApiResult {
    Ok(Json(
        serde_json::to_value(v).map_err(|e| ServiceError::Internal(e.to_string()))?,
    ))
}

/// The answer for unknown paths.
pub async fn not_found() -> ServiceError {
    ServiceError::NotFound("no such API endpoint; see /api/v1/openapi.json".into())
}

/// The answer for a known path asked with a method it does not take: a JSON error as
/// every other, not an empty body.
pub async fn method_not_allowed(method: axum::http::Method) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({
            "error": format!("this endpoint does not take {method}; see /api/v1/openapi.json")
        })),
    )
        .into_response()
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(
    State(core): State<AppState>,
    parts: SourceAddr,
    Body(b): Body<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (token, expires_at, principal) = core.login(&b.user, &b.password, &parts.0).await?;
    // A session token is a credential: no cache along the way may keep it.
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        ok(json!({ "token": token, "expires_at": expires_at, "principal": principal }))?,
    ))
}

/// The caller's source address, for handlers without authentication.
struct SourceAddr(String);

impl<S: Send + Sync> FromRequestParts<S> for SourceAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SourceAddr(source_of(parts)))
    }
}

/// Ends the session whose token authenticates the call. Authenticated as every call is
/// (a request without a live session hears 401, the special account 403), so that an
/// answer of "logged out" always means that a session ended.
async fn logout(State(core): State<AppState>, _: Caller, headers: HeaderMap) -> ApiResult {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ServiceError::BadRequest(
                "there is no session to end: a name and password (Basic) open none; send \
                 the session's token (Bearer)"
                    .into(),
            )
        })?;
    core.logout(token.trim()).await?;
    ok(json!({ "logged_out": true }))
}

async fn whoami(c: Caller) -> ApiResult {
    ok(json!({ "principal": c.principal }))
}

#[derive(Deserialize)]
struct EnrollBody {
    token: String,
    csr_pem: String,
    #[serde(default)]
    name: String,
    hostname: String,
}

async fn enroll(
    State(core): State<AppState>,
    src: SourceAddr,
    Body(b): Body<EnrollBody>,
) -> ApiResult {
    ok(core
        .enroll(&b.token, &b.csr_pem, &b.name, &b.hostname, &src.0)
        .await?)
}

/// The CA's revocation list, for sandboxes that admit enrolled devices: public, as CRLs
/// are, and signed by the CA, so that whoever relays it cannot change it.
async fn revocation_list(State(core): State<AppState>) -> Result<impl IntoResponse, ServiceError> {
    let pem = core.revocation_list().await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        pem,
    ))
}

async fn groups(State(core): State<AppState>, c: Caller) -> ApiResult {
    ok(core.groups(&c).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBody {
    name: String,
    parent: Option<String>,
}

async fn create_group(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<GroupBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangeGroups, body).await?;
    let id = core.create_group(&c, &b.name, b.parent.as_deref()).await?;
    ok(json!({ "id": id, "name": b.name.trim() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    name: String,
}

async fn rename_group(
    State(core): State<AppState>,
    c: Caller,
    Path(group): Path<String>,
    body: Result<Body<RenameBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangeGroups, body).await?;
    core.rename_group(&c, &group, &b.name).await?;
    ok(json!({ "renamed": true, "name": b.name.trim() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveGroupBody {
    parent: String,
}

async fn move_group(
    State(core): State<AppState>,
    c: Caller,
    Path(group): Path<String>,
    body: Result<Body<MoveGroupBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangeGroups, body).await?;
    core.move_group(&c, &group, &b.parent).await?;
    ok(json!({ "moved": true }))
}

async fn delete_group(
    State(core): State<AppState>,
    c: Caller,
    Path(group): Path<String>,
) -> ApiResult {
    core.delete_group(&c, &group).await?;
    ok(json!({ "deleted": true }))
}

async fn policy(State(core): State<AppState>, c: Caller, Path(group): Path<String>) -> ApiResult {
    ok(core.policy(&c, &group).await?)
}

async fn set_policy_tr(
    State(core): State<AppState>,
    c: Caller,
    Path(group): Path<String>,
    body: Result<Body<ThreatResponsePatch>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangePolicy, body).await?;
    ok(core.set_policy_threat_response(&c, &group, &b).await?)
}

async fn set_policy_sandbox(
    State(core): State<AppState>,
    c: Caller,
    Path(group): Path<String>,
    body: Result<Body<SandboxPatch>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangePolicy, body).await?;
    ok(core.set_policy_sandbox(&c, &group, &b).await?)
}

#[derive(Deserialize)]
struct DeviceQuery {
    group: Option<String>,
    search: Option<String>,
    #[serde(default)]
    offset: i64,
    limit: Option<i64>,
}

fn device_json(core: &Core, d: &riposte_store::DeviceRow) -> Value {
    json!({
        "id": d.id, "name": d.name, "hostname": d.hostname, "group_id": d.group_id,
        "enrolled_at": d.enrolled_at, "revoked": d.revoked, "last_seen": d.last_seen,
        "connected": core.is_connected(d), "certificate_expires_at": d.cert_expires_ms,
    })
}

async fn devices(
    State(core): State<AppState>,
    c: Caller,
    Query(q): Query<DeviceQuery>,
) -> ApiResult {
    let list = core
        .devices(
            &c,
            q.group.as_deref(),
            q.search.as_deref(),
            q.offset,
            q.limit.unwrap_or(100),
        )
        .await?;
    ok(list
        .iter()
        .map(|d| device_json(&core, d))
        .collect::<Vec<_>>())
}

async fn device(State(core): State<AppState>, c: Caller, Path(device): Path<String>) -> ApiResult {
    let d = core.device(&c, &device).await?;
    ok(device_json(&core, &d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    group: String,
}

async fn move_device(
    State(core): State<AppState>,
    c: Caller,
    Path(device): Path<String>,
    body: Result<Body<MoveBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::MoveDevice, body).await?;
    core.move_device(&c, &device, &b.group).await?;
    ok(json!({ "moved": true }))
}

async fn revoke_device(
    State(core): State<AppState>,
    c: Caller,
    Path(device): Path<String>,
) -> ApiResult {
    let listed = core.revoke_device(&c, &device).await?;
    ok(json!({ "revoked": true, "on_revocation_list": listed }))
}

async fn device_settings(
    State(core): State<AppState>,
    c: Caller,
    Path(device): Path<String>,
) -> ApiResult {
    let (d, eff) = core.device_settings(&c, &device).await?;
    ok(json!({ "device_id": d.id, "device": d.name, "effective": eff }))
}

async fn set_device_tr(
    State(core): State<AppState>,
    c: Caller,
    Path(device): Path<String>,
    body: Result<Body<ThreatResponsePatch>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangeDeviceSettings, body).await?;
    ok(core.set_device_threat_response(&c, &device, &b).await?)
}

async fn clear_device_tr(
    State(core): State<AppState>,
    c: Caller,
    Path(device): Path<String>,
) -> ApiResult {
    let (had_own_value, effective) = core.clear_device_threat_response(&c, &device).await?;
    ok(json!({ "had_own_value": had_own_value, "effective": effective }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    group: String,
    #[serde(default = "default_ttl")]
    ttl_secs: i64,
    #[serde(default = "default_uses")]
    max_uses: i64,
}
fn default_ttl() -> i64 {
    7 * 86400
}
fn default_uses() -> i64 {
    1
}

async fn create_enroll_token(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<TokenBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ManageEnrollTokens, body).await?;
    let (token, expires_at) = core
        .create_enroll_token(&c, &b.group, b.ttl_secs, b.max_uses)
        .await?;
    ok(
        json!({ "token": token, "expires_at": expires_at, "group": b.group, "max_uses": b.max_uses }),
    )
}

async fn enroll_tokens(State(core): State<AppState>, c: Caller) -> ApiResult {
    ok(core.enroll_tokens(&c).await?)
}

async fn accounts(State(core): State<AppState>, c: Caller) -> ApiResult {
    ok(core.accounts(&c).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    name: String,
    role: String,
    password: String,
}

async fn create_account(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<AccountBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ManageAccounts, body).await?;
    let role = Role::parse(&b.role).map_err(ServiceError::from)?;
    let id = core.create_account(&c, &b.name, role, &b.password).await?;
    ok(json!({ "id": id, "name": b.name, "role": role }))
}

async fn delete_account(
    State(core): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
) -> ApiResult {
    core.delete_account(&c, &name).await?;
    ok(json!({ "deleted": name }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnPasswordBody {
    current_password: String,
    new_password: String,
}

/// The caller's own password; every session of the account ends, this one included.
async fn change_own_password(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<OwnPasswordBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ChangeOwnPassword, body).await?;
    core.change_own_password(&c, &b.current_password, &b.new_password)
        .await?;
    ok(json!({ "changed": true, "sessions_ended": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

async fn set_account_password(
    State(core): State<AppState>,
    c: Caller,
    Path(name): Path<String>,
    body: Result<Body<PasswordBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ManageAccounts, body).await?;
    core.set_account_password(&c, &name, &b.password).await?;
    ok(json!({ "changed": true, "name": name }))
}

async fn special_status(State(core): State<AppState>, c: Caller) -> ApiResult {
    let created = core.special_status(&c).await?;
    ok(
        json!({ "exists": created.is_some(), "created_at": created, "name": riposte_model::accounts::SPECIAL_ACCOUNT_NAME }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecialBody {
    password: String,
}

async fn create_special(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<SpecialBody>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::ManageSpecialAccount, body).await?;
    core.create_special(&c, &b.password).await?;
    ok(json!({ "created": true, "name": riposte_model::accounts::SPECIAL_ACCOUNT_NAME }))
}

async fn delete_special(State(core): State<AppState>, c: Caller) -> ApiResult {
    let (policies, devices) = core.delete_special(&c).await?;
    ok(json!({ "deleted": true, "policies_cleared": policies, "devices_cleared": devices }))
}

async fn change_special_password(State(core): State<AppState>, c: Caller) -> ApiResult {
    core.change_special_password(&c).await?;
    ok(json!({}))
}

async fn tasks(State(core): State<AppState>, c: Caller) -> ApiResult {
    ok(core.tasks(&c).await?)
}

async fn create_task(
    State(core): State<AppState>,
    c: Caller,
    body: Result<Body<TaskRequest>, Response>,
) -> ApiResult {
    let Body(b) = permitted(&core, &c, Operation::CreateTask, body).await?;
    let (id, warnings) = core.create_task_noting(&c, &b).await?;
    ok(json!({ "id": id, "warnings": warnings }))
}

async fn task(State(core): State<AppState>, c: Caller, Path(id): Path<String>) -> ApiResult {
    let id: i64 = id
        .parse()
        .map_err(|_| ServiceError::BadRequest(format!("task id '{id}' is not a number")))?;
    let (t, devices) = core.task(&c, id).await?;
    ok(json!({ "task": t, "devices": devices }))
}

async fn cancel_task(State(core): State<AppState>, c: Caller, Path(id): Path<String>) -> ApiResult {
    // The right first, as for a body: a role that may not cancel hears that.
    core.allow(&c, Operation::CancelTask).await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ServiceError::BadRequest(format!("task id '{id}' is not a number")))?;
    core.cancel_task(&c, id).await?;
    ok(json!({ "cancelled": id }))
}

async fn create_autonomous(
    State(core): State<AppState>,
    headers: HeaderMap,
    c: Result<Caller, ServiceError>,
    src: SourceAddr,
    body: Result<Body<AutonomousRequest>, Response>,
) -> Response {
    match (c, body) {
        (Ok(c), Ok(Body(b))) => match core.create_autonomous_task(&c, &b).await {
            Ok(v) => ok(v).into_response(),
            Err(e) => e.into_response(),
        },
        // Credentials first, as everywhere: a request without them learns nothing of
        // what a valid body looks like, and then the right: an account that may not
        // create the task hears that (audited), not what its body lacked.
        (Ok(c), Err(rejection)) => match core.allow(&c, Operation::CreateAutonomousTask).await {
            Err(e) => e.into_response(),
            Ok(()) => rejection,
        },
        (Err(e), body) => {
            // A try at the special account with a wrong password is audited: the
            // login throttle bounds how often, because a request it refused before
            // checking the password writes nothing, as a request without even a try at
            // the special account's credentials does. Otherwise anyone could fill the
            // audit log at the rate of their requests.
            let throttled = matches!(e, ServiceError::TooManyAttempts(_));
            if let (Some(SPECIAL_ACCOUNT_NAME), Ok(Body(b)), false) =
                (basic_user(&headers).as_deref(), &body, throttled)
            {
                core.audit_refused_group_action(&src.0, b, &e).await;
            }
            e.into_response()
        }
    }
}

/// The user name of a Basic authorization header, if there is one.
fn basic_user(headers: &HeaderMap) -> Option<String> {
    let basic = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    basic_credentials(basic).map(|(user, _)| user)
}

/// User name and password of a Basic authorization value (after `Basic `).
fn basic_credentials(encoded: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, password) = raw.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[derive(Deserialize)]
struct DeviceFilter {
    device: Option<String>,
}

async fn detections(
    State(core): State<AppState>,
    c: Caller,
    Query(q): Query<DeviceFilter>,
) -> ApiResult {
    ok(core.detections(&c, q.device.as_deref()).await?)
}

async fn detection(State(core): State<AppState>, c: Caller, Path(id): Path<String>) -> ApiResult {
    ok(core.detection(&c, &id).await?)
}

async fn quarantine(
    State(core): State<AppState>,
    c: Caller,
    Query(q): Query<DeviceFilter>,
) -> ApiResult {
    ok(core.quarantine(&c, q.device.as_deref()).await?)
}

async fn alerts(
    State(core): State<AppState>,
    c: Caller,
    Query(q): Query<DeviceFilter>,
) -> ApiResult {
    ok(core.alerts(&c, q.device.as_deref()).await?)
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
    /// Only entries older than this entry id: the next page after a page's last id.
    before: Option<i64>,
}

async fn audit(State(core): State<AppState>, c: Caller, Query(q): Query<AuditQuery>) -> ApiResult {
    ok(core.audit_log(&c, q.limit.unwrap_or(200), q.before).await?)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuarantineBody {
    restore_to: Option<String>,
    on_conflict: Option<String>,
}

async fn quarantine_action(
    State(core): State<AppState>,
    c: Caller,
    Path((device, entry, action)): Path<(String, String, String)>,
    body: Result<OptionalBody<QuarantineBody>, Response>,
) -> ApiResult {
    let OptionalBody(b) = permitted(&core, &c, Operation::HandleQuarantine, body).await?;
    let id = core
        .quarantine_action(&c, &device, &entry, &action, b.restore_to, b.on_conflict)
        .await?;
    ok(json!({ "request_id": id, "device": device, "entry_id": entry, "action": action }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_keep_their_details_in_the_log() {
        let r = ServiceError::Internal("database error: relation \"devices\" at /var/lib/x".into())
            .into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("internal error (reference "), "{text}");
        assert!(
            !text.contains("database") && !text.contains("/var/lib"),
            "{text}"
        );
        // Other errors keep their message: it tells the caller what to do.
        let r = ServiceError::Conflict("name it by its id".into()).into_response();
        let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("name it by its id"));
    }
}
