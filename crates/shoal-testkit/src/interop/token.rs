//! An in-process token server for the distribution registry's `auth: token:` mode (the
//! Docker registry v2 token protocol that Docker Hub, Harbor and GitLab use).
//!
//! At start it generates an ECDSA P-256 key and a self-signed certificate. The registry trusts
//! that certificate through its `rootcertbundle`; every token is an ES256 JWT whose header
//! carries the certificate in `x5c`, which distribution 2.8 verifies against the bundle (it
//! tries `x5c`, then `jwk`, then `kid`). Users are basic-auth name/password pairs and get
//! `pull` and `push`; anonymous clients get `pull` when allowed.
//!
//! Endpoints on `127.0.0.1:<port>/token`: `GET` with `service`, repeated `scope` and
//! `Authorization: Basic` (Docker, containers/image, containerd without credentials), and
//! `POST` with an OAuth2 password-grant form (containerd with credentials).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use base64::Engine as _;
use http::{header, HeaderMap, StatusCode};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Who may do what.
#[derive(Debug, Clone)]
pub struct TokenServerOptions {
    /// The registry's `auth.token.service`; tokens carry it as their audience.
    pub service: String,
    /// The registry's `auth.token.issuer`; tokens carry it as `iss`.
    pub issuer: String,
    /// Basic-auth `(user, password)` pairs; each may pull and push every repository.
    pub users: Vec<(String, String)>,
    /// Whether clients without credentials may pull.
    pub anonymous_pull: bool,
    /// Token lifetime (`exp - iat`).
    pub lifetime: Duration,
}

impl Default for TokenServerOptions {
    /// Service `shoal-registry`, issuer `shoal-testkit`, user `shoal`/`shoal-password`,
    /// anonymous pull allowed, 5 minute tokens.
    fn default() -> Self {
        TokenServerOptions {
            service: "shoal-registry".into(),
            issuer: "shoal-testkit".into(),
            users: vec![("shoal".into(), "shoal-password".into())],
            anonymous_pull: true,
            lifetime: Duration::from_secs(300),
        }
    }
}

/// One resource grant inside a token (`access` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, e.g. `shoal/interop`.
    pub name: String,
    /// Granted actions, e.g. `["pull"]`.
    pub actions: Vec<String>,
}

/// A token request the server answered, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` (query and basic auth) or `POST` (OAuth2 password grant).
    pub method: http::Method,
    /// The authenticated user, `None` for anonymous.
    pub user: Option<String>,
    /// Requested scopes as sent, e.g. `repository:shoal/interop:pull`.
    pub scopes: Vec<String>,
    /// What the issued token grants.
    pub granted: Vec<Access>,
}

/// A running token server; stops when dropped.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct ServerState {
    options: TokenServerOptions,
    signer: Signer,
    requests: Mutex<Vec<TokenRequest>>,
    serial: AtomicU64,
}

struct Signer {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    certificate_der: Vec<u8>,
    certificate_pem: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl TokenServer {
    /// Generates the signing key and serves on `127.0.0.1:0`.
    pub async fn start(options: TokenServerOptions) -> anyhow::Result<TokenServer> {
        let signer = Signer::generate()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the token server")?;
        let addr = listener
            .local_addr()
            .context("read the token server address")?;
        let state = Arc::new(ServerState {
            options,
            signer,
            requests: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token_get).post(token_post))
            .with_state(state.clone());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(TokenServer {
            addr,
            state,
            cancel,
        })
    }

    /// `http://127.0.0.1:<port>/token`, the registry's `auth.token.realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The options the server runs with.
    pub fn options(&self) -> &TokenServerOptions {
        &self.state.options
    }

    /// PEM of the self-signed signing certificate (the registry's `rootcertbundle`).
    pub fn root_cert_pem(&self) -> &str {
        &self.state.signer.certificate_pem
    }

    /// Writes [`TokenServer::root_cert_pem`] to `path`.
    pub fn write_root_cert_bundle(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.root_cert_pem())
            .with_context(|| format!("write {}", path.display()))
    }

    /// Every token request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .requests
            .lock()
            .expect("token request log lock poisoned")
            .clone()
    }

    /// Signs a token for `subject` granting `access`, as the server would issue it.
    pub fn issue(&self, subject: &str, access: &[Access]) -> anyhow::Result<String> {
        self.state.issue(subject, access)
    }
}

impl Signer {
    fn generate() -> anyhow::Result<Signer> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generate the token signing key")?;
        let mut params = rcgen::CertificateParams::new(vec!["shoal-testkit-token-signer".into()])
            .context("build the signing certificate")?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shoal-testkit token signer");
        let certificate = params
            .self_signed(&key_pair)
            .context("self-sign the certificate")?;
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &rng,
        )
        .map_err(|rejected| anyhow::anyhow!("load the token signing key: {rejected}"))?;
        Ok(Signer {
            key,
            rng,
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
        })
    }

    /// Compact JWS with `alg: ES256` and the certificate in `x5c`; the signature is the raw
    /// `r || s` pair JWS wants (ring's FIXED encoding), not DER.
    fn sign(&self, claims: &serde_json::Value) -> anyhow::Result<String> {
        let standard = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = json!({
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [standard.encode(&self.certificate_der)],
        });
        let signing_input = format!(
            "{}.{}",
            url.encode(serde_json::to_vec(&header)?),
            url.encode(serde_json::to_vec(claims)?)
        );
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("sign a token"))?;
        Ok(format!(
            "{signing_input}.{}",
            url.encode(signature.as_ref())
        ))
    }
}

impl ServerState {
    fn issue(&self, subject: &str, access: &[Access]) -> anyhow::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("read the clock")?
            .as_secs();
        let serial = self.serial.fetch_add(1, Ordering::SeqCst);
        let claims = json!({
            "iss": self.options.issuer,
            "sub": subject,
            "aud": self.options.service,
            "exp": now + self.options.lifetime.as_secs(),
            "nbf": now,
            "iat": now,
            "jti": format!("shoal-testkit-{serial}"),
            "access": access,
        });
        self.signer.sign(&claims)
    }

    /// What `user` (or anonymous) may do for each requested scope; scopes with nothing granted
    /// are left out, so the registry answers 401 for them.
    fn grant(&self, user: Option<&str>, scopes: &[String]) -> Vec<Access> {
        let mut granted = Vec::new();
        for scope in scopes {
            let Some((kind, rest)) = scope.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let allowed: &[&str] = match (user, kind) {
                (Some(_), "repository") => &["pull", "push", "delete"],
                (Some(_), "registry") => &["*"],
                (None, "repository") if self.options.anonymous_pull => &["pull"],
                _ => &[],
            };
            let actions: Vec<String> = actions
                .split(',')
                .flat_map(|action| match action {
                    "*" if kind == "repository" => vec!["pull", "push"],
                    other => vec![other],
                })
                .filter(|action| allowed.contains(action))
                .map(str::to_owned)
                .collect();
            if !actions.is_empty() {
                granted.push(Access {
                    kind: kind.into(),
                    name: name.into(),
                    actions,
                });
            }
        }
        granted
    }

    /// `Ok(None)` for anonymous, `Ok(Some(user))` for a known user, `Err(())` for bad
    /// credentials.
    fn authenticate(&self, user: Option<(String, String)>) -> Result<Option<String>, ()> {
        let Some((name, password)) = user else {
            return Ok(None);
        };
        let known = self
            .options
            .users
            .iter()
            .any(|(u, p)| *u == name && *p == password);
        if known {
            Ok(Some(name))
        } else {
            Err(())
        }
    }

    fn answer(&self, method: http::Method, user: Option<String>, scopes: Vec<String>) -> Response {
        let granted = self.grant(user.as_deref(), &scopes);
        let token = match self.issue(user.as_deref().unwrap_or(""), &granted) {
            Ok(token) => token,
            Err(err) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{err:#}")),
        };
        self.requests
            .lock()
            .expect("token request log lock poisoned")
            .push(TokenRequest {
                method,
                user,
                scopes,
                granted,
            });
        let body = json!({
            "token": token,
            "access_token": token,
            "expires_in": self.options.lifetime.as_secs(),
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("static response parts are valid")
    }
}

async fn token_get(
    State(state): State<Arc<ServerState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let scopes = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "scope")
        .flat_map(|(_, value)| value.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|scope| !scope.is_empty())
        .collect();
    match state.authenticate(basic_auth(&headers)) {
        Ok(user) => state.answer(http::Method::GET, user, scopes),
        Err(()) => unauthorized(),
    }
}

async fn token_post(State(state): State<Arc<ServerState>>, body: Bytes) -> Response {
    let mut grant_type = String::new();
    let (mut username, mut password) = (None, None);
    let mut scopes = Vec::new();
    for (key, value) in url::form_urlencoded::parse(&body) {
        match key.as_ref() {
            "grant_type" => grant_type = value.into_owned(),
            "username" => username = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            "scope" => scopes.extend(
                value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    if grant_type != "password" {
        return plain(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let credentials = username.map(|user| (user, password.unwrap_or_default()));
    match state.authenticate(credentials) {
        Ok(user) => state.answer(http::Method::POST, user, scopes),
        Err(()) => unauthorized(),
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn unauthorized() -> Response {
    let mut response = plain(StatusCode::UNAUTHORIZED, "invalid username or password");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Basic realm=\"shoal-testkit\""),
    );
    response
}

fn plain(status: StatusCode, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(message.to_owned()))
        .expect("static response parts are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> ServerState {
        ServerState {
            options: TokenServerOptions::default(),
            signer: Signer::generate().unwrap(),
            requests: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
        }
    }

    #[test]
    fn anonymous_gets_pull_only_and_users_get_push() {
        let state = state();
        let scopes = vec!["repository:shoal/interop:pull,push".to_owned()];
        let anonymous = state.grant(None, &scopes);
        assert_eq!(anonymous[0].actions, ["pull"]);
        let user = state.grant(Some("shoal"), &scopes);
        assert_eq!(user[0].name, "shoal/interop");
        assert_eq!(user[0].actions, ["pull", "push"]);
        assert!(state
            .grant(None, &["registry:catalog:*".to_owned()])
            .is_empty());
    }

    #[test]
    fn token_has_x5c_header_and_verifiable_signature() {
        let state = state();
        let token = state.issue("shoal", &[]).unwrap();
        let parts: Vec<_> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&url.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert!(header["x5c"][0].is_string());
        let claims: serde_json::Value =
            serde_json::from_slice(&url.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["aud"], "shoal-registry");
        let public_key = ring::signature::KeyPair::public_key(&state.signer.key);
        let verifier = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            public_key.as_ref(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        verifier
            .verify(signed.as_bytes(), &url.decode(parts[2]).unwrap())
            .unwrap();
    }

    #[test]
    fn wrong_password_is_rejected() {
        let state = state();
        assert!(state
            .authenticate(Some(("shoal".into(), "nope".into())))
            .is_err());
        assert_eq!(state.authenticate(None), Ok(None));
    }
}
