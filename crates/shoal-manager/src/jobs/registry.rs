//! Resolving an image for preheat: manifest or index → the chosen platform's config and layers.
//!
//! Speaks the OCI distribution API over plain HTTP(S): GET the manifest URL with every manifest
//! media type accepted; a `401` with a `Bearer` challenge is answered by fetching a token from
//! the challenge's realm (with the job's username and password as Basic auth when given) and
//! retrying. An index (OCI) or manifest list (Docker) picks the entry matching the requested
//! platform (`os/arch[/variant]`), which is then fetched by digest.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE,
};
use serde::Deserialize;

/// Time allowed for one registry request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Manifests larger than this are refused (an index of hundreds of platforms is ~100 KiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Resolving an image failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("{url} is not a registry manifest URL (…/v2/<name>/manifests/<reference>)")]
    NotManifestUrl { url: String },
    #[error("request {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry answered {status} for {url}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("manifest at {url} is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge { url: String },
    #[error("decode manifest at {url}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the index at {url} has no manifest for platform {platform}")]
    NoPlatform { url: String, platform: String },
    #[error("header {name} has a value that cannot be sent")]
    BadHeader { name: String },
}

/// A blob to preheat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) url: String,
    pub(crate) digest: String,
    /// `config` or `layer`.
    pub(crate) kind: &'static str,
}

/// An image's blobs and the headers that let a seed fetch them.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) blobs: Vec<Blob>,
    /// Headers for blob GETs: the job's own, plus a bearer token when the registry asked.
    pub(crate) headers: HashMap<String, String>,
}

/// Registry credentials and headers of a job.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    pub(crate) headers: HashMap<String, String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// The parts of a manifest URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ManifestUrl {
    /// `scheme://host[:port]` plus any path prefix before `/v2/`.
    base: String,
    name: String,
}

fn parse_manifest_url(url: &str) -> Result<ManifestUrl, ResolveError> {
    let not = || ResolveError::NotManifestUrl {
        url: url.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|_| not())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(not());
    }
    let path = parsed.path();
    let v2 = path.find("/v2/").ok_or_else(not)?;
    let rest = &path[v2 + 4..];
    let manifests = rest.rfind("/manifests/").ok_or_else(not)?;
    let name = &rest[..manifests];
    let reference = &rest[manifests + "/manifests/".len()..];
    if name.is_empty() || reference.is_empty() {
        return Err(not());
    }
    let origin = parsed.origin().ascii_serialization();
    Ok(ManifestUrl {
        base: format!("{origin}{}", &path[..v2]),
        name: name.to_string(),
    })
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnyManifest {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// `os/arch[/variant]` matches `platform`; the variant only when the request names one.
fn platform_matches(wanted: &str, platform: &Platform) -> bool {
    let mut parts = wanted.split('/');
    let os = parts.next().unwrap_or_default();
    let architecture = parts.next().unwrap_or_default();
    let variant = parts.next();
    platform.os.eq_ignore_ascii_case(os)
        && platform.architecture.eq_ignore_ascii_case(architecture)
        && variant.is_none_or(|variant| platform.variant.as_deref() == Some(variant))
}

/// Resolves `manifest_url` for `platform` (e.g. `linux/amd64`).
pub(crate) async fn resolve(
    http: &reqwest::Client,
    manifest_url: &str,
    platform: &str,
    credentials: &Credentials,
) -> Result<Resolved, ResolveError> {
    let parsed = parse_manifest_url(manifest_url)?;
    let mut session = Session {
        http,
        credentials,
        headers: credentials.headers.clone(),
    };
    let mut manifest = session.manifest(manifest_url).await?;
    if let Some(entries) = manifest.manifests.take() {
        let entry = entries
            .iter()
            .find(|entry| {
                entry
                    .platform
                    .as_ref()
                    .is_some_and(|found| platform_matches(platform, found))
            })
            .ok_or_else(|| ResolveError::NoPlatform {
                url: manifest_url.to_string(),
                platform: platform.to_string(),
            })?;
        let url = format!(
            "{}/v2/{}/manifests/{}",
            parsed.base, parsed.name, entry.digest
        );
        manifest = session.manifest(&url).await?;
    }
    let blob_url = |digest: &str| format!("{}/v2/{}/blobs/{digest}", parsed.base, parsed.name);
    let mut blobs = Vec::new();
    if let Some(config) = &manifest.config {
        blobs.push(Blob {
            url: blob_url(&config.digest),
            digest: config.digest.clone(),
            kind: "config",
        });
    }
    for layer in manifest.layers.unwrap_or_default() {
        blobs.push(Blob {
            url: blob_url(&layer.digest),
            digest: layer.digest,
            kind: "layer",
        });
    }
    Ok(Resolved {
        blobs,
        headers: session.headers,
    })
}

struct Session<'a> {
    http: &'a reqwest::Client,
    credentials: &'a Credentials,
    headers: HashMap<String, String>,
}

impl Session<'_> {
    fn header_map(&self) -> Result<HeaderMap, ResolveError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let bad = || ResolveError::BadHeader { name: name.clone() };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let value = HeaderValue::from_str(value).map_err(|_| bad())?;
            map.insert(name, value);
        }
        Ok(map)
    }

    async fn manifest(&mut self, url: &str) -> Result<AnyManifest, ResolveError> {
        let mut response = self.get(url).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            if let Some(token) = match challenge {
                Some(challenge) => self.fetch_token(&challenge).await?,
                None => None,
            } {
                self.headers.insert(
                    AUTHORIZATION.as_str().to_string(),
                    format!("Bearer {token}"),
                );
                response = self.get(url).await?;
            }
        }
        let status = response.status();
        if !status.is_success() {
            return Err(ResolveError::Status {
                url: url.to_string(),
                status,
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| ResolveError::Request {
                url: url.to_string(),
                source,
            })?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(ResolveError::TooLarge {
                url: url.to_string(),
            });
        }
        serde_json::from_slice(&body).map_err(|source| ResolveError::Decode {
            url: url.to_string(),
            source,
        })
    }

    async fn get(&self, url: &str) -> Result<reqwest::Response, ResolveError> {
        self.http
            .get(url)
            .headers(self.header_map()?)
            .header(ACCEPT, MANIFEST_TYPES)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| ResolveError::Request {
                url: url.to_string(),
                source,
            })
    }

    /// A bearer token for `challenge`; None when the challenge is not `Bearer`.
    async fn fetch_token(&self, challenge: &str) -> Result<Option<String>, ResolveError> {
        let Some(params) = parse_bearer_challenge(challenge) else {
            return Ok(None);
        };
        let Some(realm) = params.get("realm") else {
            return Ok(None);
        };
        let mut url = url::Url::parse(realm)
            .map_err(|_| ResolveError::NotManifestUrl { url: realm.clone() })?;
        for key in ["service", "scope"] {
            if let Some(value) = params.get(key) {
                url.query_pairs_mut().append_pair(key, value);
            }
        }
        let mut request = self.http.get(url.as_str()).timeout(REQUEST_TIMEOUT);
        if let (Some(user), Some(password)) =
            (&self.credentials.username, &self.credentials.password)
        {
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        let response = request
            .send()
            .await
            .map_err(|source| ResolveError::Request {
                url: realm.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ResolveError::Status {
                url: realm.clone(),
                status,
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|source| ResolveError::Request {
                url: realm.clone(),
                source,
            })?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|source| ResolveError::Decode {
                url: realm.clone(),
                source,
            })?;
        Ok(answer.token.or(answer.access_token))
    }
}

/// `Bearer realm="...",service="...",scope="..."` → its parameters.
fn parse_bearer_challenge(challenge: &str) -> Option<HashMap<String, String>> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_string());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_urls_split_into_base_and_name() {
        let parsed =
            parse_manifest_url("http://127.0.0.1:5000/v2/library/alpine/manifests/3.20").unwrap();
        assert_eq!(parsed.base, "http://127.0.0.1:5000");
        assert_eq!(parsed.name, "library/alpine");
        let prefixed =
            parse_manifest_url("https://r.example/mirror/v2/a/b/manifests/sha256:ab").unwrap();
        assert_eq!(prefixed.base, "https://r.example/mirror");
        assert_eq!(prefixed.name, "a/b");
        for bad in [
            "http://r/v2/a/blobs/sha256:ab",
            "ftp://r/v2/a/manifests/x",
            "http://r/v2//manifests/x",
            "not a url",
        ] {
            assert!(parse_manifest_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_challenges_parse() {
        let params = parse_bearer_challenge(
            r#"Bearer realm="http://127.0.0.1:9/token",service="registry",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(params["realm"], "http://127.0.0.1:9/token");
        assert_eq!(params["service"], "registry");
        assert_eq!(params["scope"], "repository:a/b:pull");
        assert!(parse_bearer_challenge("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn platforms_match_with_optional_variant() {
        let arm = Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        };
        assert!(platform_matches("linux/arm64", &arm));
        assert!(platform_matches("linux/arm64/v8", &arm));
        assert!(!platform_matches("linux/arm64/v7", &arm));
        assert!(!platform_matches("linux/amd64", &arm));
    }
}
