//! The three hub calls a snapshot download needs, on `ureq` (blocking, rustls):
//! `GET /api/models/{id}/revision/{rev}` (commit and file list), `HEAD /{id}/resolve/{commit}/{file}`
//! (ETag, size) and a resumable `GET` of the same URL.
//!
//! Why not the `hf-hub` crate: its blocking client (0.5, on ureq) builds its agent without any
//! timeout and offers no way to set one, so a stalled connection hangs the element forever; it
//! drops the status headers (`X-Error-Code`), so an unknown repo, an unknown revision, a gated
//! repo and a missing file are one "status 401/404"; its lock gives up after 5 s instead of
//! waiting for the other download; it re-downloads blobs already in the cache and appends a
//! `200` answer to a Range request onto the partial file; and it reads neither `HF_TOKEN` nor
//! `HF_HUB_CACHE` nor offline mode. hf-hub 1.x fixes these but brings tokio, reqwest, aws-lc and
//! the Xet client (≈160 more crates) into a GStreamer plugin. The HTTP part here is small, follows
//! huggingface_hub's `file_download.py`, and is tested against a loopback stand-in (tests/hub*.rs).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use ureq::Agent;
use ureq::config::RedirectAuthHeaders;
use ureq::http::{HeaderMap, Response};

use super::error::redact_url;
use super::hub_cache::is_inside_path;
use super::hub_error::{ResolveError, ResolveErrorKind as Kind};

/// What `GET /api/models/{id}/revision/{rev}` says about a repository.
pub struct RepoInfo {
    /// The commit the revision points at.
    pub sha: String,
    /// Every file in the repository at that commit (`siblings[].rfilename`).
    pub files: Vec<String>,
}

/// What `HEAD /{id}/resolve/{commit}/{file}` says about a file.
#[derive(Clone, Debug)]
pub struct FileMeta {
    pub etag: String,
    pub size: u64,
}

pub struct HubClient {
    endpoint: String,
    /// `endpoint` for messages: without the credentials of a `user:password@` part.
    shown: String,
    token: Option<String>,
    /// Names the model in every error.
    model: String,
    repo: String,
    /// For metadata: redirects are looked at, not followed (the LFS headers are on the 302).
    head_agent: Agent,
    /// For contents: follows redirects to the storage host, without the token there.
    get_agent: Agent,
}

impl HubClient {
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        timeout: Duration,
        model: &str,
        repo: &str,
    ) -> Self {
        let agent = |redirects: u32| -> Agent {
            Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(redirects)
                .max_redirects_will_error(false)
                .redirect_auth_headers(RedirectAuthHeaders::SameHost)
                .timeout_connect(Some(timeout))
                .timeout_recv_response(Some(timeout))
                .timeout_per_read(Some(timeout))
                .user_agent(concat!("gst-blip2/", env!("CARGO_PKG_VERSION")))
                .build()
                .into()
        };
        let endpoint = endpoint.trim_end_matches('/').to_string();
        Self {
            shown: redact_url(&endpoint),
            endpoint,
            token,
            model: model.to_string(),
            repo: repo.to_string(),
            head_agent: agent(0),
            get_agent: agent(10),
        }
    }

    /// The endpoint as messages show it (without credentials).
    pub fn shown_endpoint(&self) -> &str {
        &self.shown
    }

    pub fn repo_info(&self, revision: &str) -> Result<RepoInfo, ResolveError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.endpoint,
            self.repo,
            encode(revision, false)
        );
        let mut response = self.call(self.get_agent.get(&url))?;
        if !response.status().is_success() {
            return Err(self.status_error(&response, revision, None));
        }
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            let url = redact_url(&url);
            self.protocol(format!("the hub's answer for {url} is not JSON ({e})"))
        })?;
        let sha = json["sha"].as_str().ok_or_else(|| {
            let url = redact_url(&url);
            self.protocol(format!("the hub's answer for {url} has no `sha`"))
        })?;
        let files = json["siblings"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|f| f["rfilename"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        // The commit names the snapshot folder: one plain folder name (the hub's are 40 hex).
        if !is_inside_path(sha) || sha.contains('/') {
            let url = redact_url(&url);
            return Err(self.protocol(format!(
                "the hub's answer for {url} names the commit `{sha}`, which is not a folder name"
            )));
        }
        Ok(RepoInfo {
            sha: sha.to_string(),
            files,
        })
    }

    fn file_url(&self, commit: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            self.repo,
            encode(commit, false),
            encode(file, true)
        )
    }

    /// ETag and size of one file, following only same-host (relative) redirects, as
    /// huggingface_hub does: a redirect to the storage host carries the LFS headers itself.
    pub fn file_meta(&self, commit: &str, file: &str) -> Result<FileMeta, ResolveError> {
        let mut url = self.file_url(commit, file);
        for _ in 0..10 {
            let request = self
                .head_agent
                .head(&url)
                .header("Accept-Encoding", "identity");
            let response = self.call(request)?;
            let status = response.status();
            if status.is_redirection() {
                let location = header(response.headers(), "location").unwrap_or_default();
                if location.starts_with('/') {
                    url = format!("{}{location}", self.endpoint);
                    continue;
                }
            } else if !status.is_success() {
                return Err(self.status_error(&response, commit, Some(file)));
            }
            let headers = response.headers();
            let etag = header(headers, "x-linked-etag")
                .or_else(|| header(headers, "etag"))
                .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
                .filter(|e| !e.is_empty() && !e.contains(['/', '\\', '.']))
                .ok_or_else(|| {
                    let url = redact_url(&url);
                    self.protocol(format!("no usable ETag for `{file}` at {url}"))
                })?;
            let size = header(headers, "x-linked-size")
                .or_else(|| header(headers, "content-length"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    let url = redact_url(&url);
                    self.protocol(format!("no size for `{file}` at {url}"))
                })?;
            return Ok(FileMeta { etag, size });
        }
        Err(self.protocol(format!("too many redirects for `{file}`")))
    }

    /// Downloads `file` into `partial`, resuming from what it already holds, until it has
    /// `meta.size` bytes. `progress` hears every chunk (bytes of this file so far).
    pub fn download(
        &self,
        commit: &str,
        file: &str,
        meta: &FileMeta,
        partial: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), ResolveError> {
        let io_error =
            |what: &str, e: std::io::Error| ResolveError::io(&self.model, what, partial, &e);
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(partial)
            .map_err(|e| io_error("create", e))?;
        let mut have = out.metadata().map_err(|e| io_error("read", e))?.len();
        if have > meta.size {
            out.set_len(0).map_err(|e| io_error("truncate", e))?;
            have = 0;
        }
        progress(have);
        if have == meta.size {
            return Ok(());
        }
        let mut request = self.get_agent.get(self.file_url(commit, file));
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = self.call(request)?;
        match response.status().as_u16() {
            206 if have > 0 => {}
            200 => {
                // The server sent the whole file (no resume): start the partial file over.
                if have > 0 {
                    out.set_len(0).map_err(|e| io_error("truncate", e))?;
                    have = 0;
                    progress(0);
                }
            }
            _ => return Err(self.status_error(&response, commit, Some(file))),
        }
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        while have < meta.size {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.network(format!("downloading `{file}` failed: {e}"))),
            };
            out.write_all(&buf[..n]).map_err(|e| io_error("write", e))?;
            have += n as u64;
            progress(have);
        }
        out.sync_all().map_err(|e| io_error("write", e))?;
        if have != meta.size {
            return Err(self.network(format!(
                "downloading `{file}` ended after {have} of {} bytes",
                meta.size
            )));
        }
        Ok(())
    }

    fn call(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    ) -> Result<Response<ureq::Body>, ResolveError> {
        let request = match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        };
        request.call().map_err(|e| self.transport_error(e))
    }

    fn transport_error(&self, e: ureq::Error) -> ResolveError {
        use ureq::Error as E;
        match e {
            E::Io(_)
            | E::Timeout(_)
            | E::HostNotFound
            | E::ConnectionFailed
            | E::ConnectProxyFailed(_)
            | E::Tls(_)
            | E::Rustls(_)
            | E::BodyStalled => self.network(e.to_string()),
            // The endpoint's `user:password@`, if any, stays out of the message.
            E::BadUri(uri) => self.protocol(format!("invalid URL {}", redact_url(&uri))),
            other => self.protocol(other.to_string()),
        }
    }

    fn network(&self, detail: String) -> ResolveError {
        ResolveError::new(
            Kind::Network,
            &self.model,
            format!(
                "cannot download model `{}` from {}: {detail}. Without network, use a model \
                 already in the cache with HF_HUB_OFFLINE=1, or give the path of a local \
                 snapshot folder",
                self.model, self.shown
            ),
        )
    }

    fn protocol(&self, detail: String) -> ResolveError {
        ResolveError::new(
            Kind::Protocol,
            &self.model,
            format!(
                "downloading model `{}` from {}: {detail}",
                self.model, self.shown
            ),
        )
    }

    /// Turns a 4xx/5xx answer into an error that says what to do, using the hub's
    /// `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).
    fn status_error(
        &self,
        response: &Response<ureq::Body>,
        revision: &str,
        file: Option<&str>,
    ) -> ResolveError {
        let status = response.status().as_u16();
        let code = header(response.headers(), "x-error-code").unwrap_or_default();
        let model = &self.model;
        let login = "log in with `huggingface-cli login` (or `hf auth login`), or set HF_TOKEN";
        let (kind, message) = match (status, code.as_str()) {
            (401 | 403, "GatedRepo") if self.token.is_none() => (
                Kind::Unauthorized,
                format!("model `{model}` is gated: accept its terms on the hub, then {login}"),
            ),
            (401 | 403, "GatedRepo") => (
                Kind::Unauthorized,
                format!(
                    "model `{model}` is gated and your token has no access yet: accept its \
                     terms on the model's hub page with the account of that token"
                ),
            ),
            (_, "RevisionNotFound") => (
                Kind::NotFound,
                format!(
                    "model `{model}` has no revision `{revision}` on {}",
                    self.shown
                ),
            ),
            (_, "EntryNotFound") => (
                Kind::MissingFile,
                format!(
                    "model `{model}` has no file `{}` at revision `{revision}`",
                    file.unwrap_or("?")
                ),
            ),
            (401, _) if self.token.is_none() => (
                Kind::NotFound,
                format!(
                    "model `{model}` was not found on {} (if it is private, {login}); check \
                     the id",
                    self.shown
                ),
            ),
            (401 | 403, "RepoNotFound") | (404, _) => (
                Kind::NotFound,
                format!(
                    "model `{model}` was not found on {} (or your token cannot see it); \
                     check the id",
                    self.shown
                ),
            ),
            (401, _) => (
                Kind::Unauthorized,
                format!("the hub refused the token for model `{model}` (401): {login} again"),
            ),
            (403, _) => (
                Kind::Unauthorized,
                format!(
                    "model `{model}` is private or restricted and your token has no access (403)"
                ),
            ),
            _ => (
                Kind::Protocol,
                format!(
                    "downloading model `{model}` from {}: the hub answered {status}{}",
                    self.shown,
                    if code.is_empty() {
                        String::new()
                    } else {
                        format!(" ({code})")
                    }
                ),
            ),
        };
        ResolveError::new(kind, model, message)
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

/// Percent-encodes a URL path part; `keep_slash` for file paths inside the repository
/// (huggingface_hub quotes revisions with `safe=""` and file names with `safe="/"`).
fn encode(part: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
