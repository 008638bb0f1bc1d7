//! A loopback stand-in for the Hugging Face hub's file API, serving the fixture snapshots.
//!
//! - `GET /api/models/{org}/{name}/revision/{rev}`: `sha` and `siblings`, as the hub answers.
//! - `HEAD|GET /{org}/{name}/resolve/{rev}/{file}`: small files answer directly with `ETag`,
//!   `X-Repo-Commit`, `Content-Length`; `*.safetensors` answer `302` to `/cdn/{etag}` on
//!   another loopback address (the storage host) with
//!   `X-Linked-Etag`/`X-Linked-Size`, like LFS files on the hub. `Range` is honoured (`206`).
//! - Errors carry `X-Error-Code`: `RepoNotFound` (401 without a token, 404 with one),
//!   `RevisionNotFound` (404), `EntryNotFound` (404), `GatedRepo` (401/403).
//!
//! Written by hand rather than with a server crate because the tests need to misbehave on
//! purpose: cut a body half way, slow it down, count every request per file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const TOKEN: &str = "hf_test_token";

#[derive(Clone)]
pub struct File {
    pub bytes: Arc<Vec<u8>>,
    pub etag: String,
}

#[derive(Clone, Default)]
pub struct Repo {
    pub commit: String,
    /// Branches and tags besides `main`, each naming `commit`.
    pub tags: Vec<String>,
    pub files: HashMap<String, File>,
    /// Downloads need a token; without one the hub answers 401 `GatedRepo`.
    pub gated: bool,
}

impl Repo {
    /// Every file of a fixture snapshot folder, plus a `.bin` duplicate of the weights and a
    /// README that a BLIP-2 download must leave alone.
    pub fn from_folder(dir: &Path, seed: &str) -> Self {
        let mut repo = Repo {
            commit: hex40(seed),
            ..Default::default()
        };
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().to_string();
            repo.add(&name, std::fs::read(entry.path()).unwrap());
        }
        repo.add("pytorch_model.bin", vec![7u8; 1000]);
        repo.add("README.md", b"# a tiny BLIP-2\n".to_vec());
        repo
    }

    pub fn add(&mut self, name: &str, bytes: Vec<u8>) {
        let etag = format!("{:016x}{:08x}", fnv(&bytes), bytes.len());
        self.files.insert(
            name.to_string(),
            File {
                bytes: Arc::new(bytes),
                etag,
            },
        );
    }
}

/// Misbehaviour for the next request(s) of a file.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers of the whole file but only this many body bytes, then hang up.
    CutAfter(usize),
    /// Pause this long after every 16 kB of body.
    Slow(Duration),
    /// Claim this size in the metadata (to test the free-space check).
    ClaimSize(u64),
    /// Send the headers and this many bytes, then stall (connection open, nothing sent).
    Stall(usize),
    /// Listed, but the file URL answers 404 `EntryNotFound`.
    Gone,
}

#[derive(Default)]
pub struct Log {
    /// Body GETs per file name (`/cdn/` downloads are counted under their file name).
    pub gets: HashMap<String, usize>,
    pub heads: HashMap<String, usize>,
    pub listings: usize,
    /// `Authorization` headers seen, per path.
    pub auth: Vec<(String, Option<String>)>,
    pub ranges: Vec<(String, String)>,
}

struct Shared {
    repos: Mutex<HashMap<String, Repo>>,
    faults: Mutex<HashMap<String, Fault>>,
    log: Mutex<Log>,
    stop: AtomicBool,
}

pub struct HubServer {
    pub port: u16,
    shared: Arc<Shared>,
    threads: Vec<(u16, &'static str, JoinHandle<()>)>,
}

/// The storage host LFS files redirect to: another loopback address, so the client must treat
/// it as another host (and not send it the token).
const CDN_HOST: &str = "127.0.0.2";

fn accept_loop(listener: TcpListener, cdn_port: u16, s: Arc<Shared>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if s.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, cdn_port, &s);
            });
        }
    })
}

impl HubServer {
    pub fn start(repos: HashMap<String, Repo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cdn = TcpListener::bind((CDN_HOST, 0)).unwrap();
        let cdn_port = cdn.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            repos: Mutex::new(repos),
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Log::default()),
            stop: AtomicBool::new(false),
        });
        let threads = vec![
            (
                port,
                "127.0.0.1",
                accept_loop(listener, cdn_port, shared.clone()),
            ),
            (
                cdn_port,
                CDN_HOST,
                accept_loop(cdn, cdn_port, shared.clone()),
            ),
        ];
        Self {
            port,
            shared,
            threads,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn fault(&self, file: &str, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .insert(file.to_string(), fault);
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    pub fn log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        f(&self.shared.log.lock().unwrap())
    }

    pub fn gets(&self, file: &str) -> usize {
        self.log(|l| l.gets.get(file).copied().unwrap_or(0))
    }

    /// Closes the port: later connections are refused.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (port, host, thread) in self.threads.drain(..) {
            let _ = TcpStream::connect((host, port));
            thread.join().unwrap();
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    Ok(Request {
        method,
        path,
        headers,
    })
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)
}

fn error(stream: &mut TcpStream, status: u16, code: &str) -> std::io::Result<()> {
    let body = format!("{{\"error\": \"{code}\"}}");
    respond(
        stream,
        status,
        &[
            ("X-Error-Code", code.to_string()),
            ("Content-Length", body.len().to_string()),
        ],
        body.as_bytes(),
    )
}

fn serve(mut stream: TcpStream, cdn_port: u16, s: &Shared) -> std::io::Result<()> {
    let req = read_request(&stream)?;
    let authorized = req.headers.get("authorization").map(String::as_str)
        == Some(format!("Bearer {TOKEN}").as_str());
    s.log
        .lock()
        .unwrap()
        .auth
        .push((req.path.clone(), req.headers.get("authorization").cloned()));
    let path = req.path.split('?').next().unwrap_or_default().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();

    if let ["cdn", etag] = parts.as_slice() {
        let repos = s.repos.lock().unwrap();
        let found = repos
            .values()
            .flat_map(|r| r.files.iter())
            .find(|(_, f)| f.etag == *etag)
            .map(|(n, f)| (n.clone(), f.clone()));
        drop(repos);
        return match found {
            Some((name, file)) => send_file(&mut stream, &req, s, &name, &file, &[]),
            None => error(&mut stream, 404, "EntryNotFound"),
        };
    }
    let (repo_id, rest) = match parts.as_slice() {
        ["api", "models", org, name, "revision", rev] => {
            (format!("{org}/{name}"), Some(decode(rev)))
        }
        [org, name, "resolve", ..] => (format!("{org}/{name}"), None),
        _ => return error(&mut stream, 404, "NotFound"),
    };
    let repo = s.repos.lock().unwrap().get(&repo_id).cloned();
    let Some(repo) = repo else {
        return error(
            &mut stream,
            if authorized { 404 } else { 401 },
            "RepoNotFound",
        );
    };
    let known =
        |rev: &str| rev == "main" || rev == repo.commit || repo.tags.iter().any(|t| t == rev);

    if let Some(rev) = rest {
        s.log.lock().unwrap().listings += 1;
        if !known(&rev) {
            return error(&mut stream, 404, "RevisionNotFound");
        }
        let mut names: Vec<&String> = repo.files.keys().collect();
        names.sort();
        let siblings: Vec<String> = names
            .iter()
            .map(|n| format!("{{\"rfilename\": \"{n}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\": \"{repo_id}\", \"sha\": \"{}\", \"gated\": {}, \"siblings\": [{}]}}",
            repo.commit,
            if repo.gated { "\"manual\"" } else { "false" },
            siblings.join(", ")
        );
        return respond(
            &mut stream,
            200,
            &[
                ("Content-Type", "application/json".into()),
                ("Content-Length", body.len().to_string()),
            ],
            body.as_bytes(),
        );
    }

    // /{org}/{name}/resolve/{rev}/{file...}
    let rev = decode(parts[3]);
    let file_name = parts[4..].join("/");
    if !known(&rev) {
        return error(&mut stream, 404, "RevisionNotFound");
    }
    if repo.gated && !authorized {
        return error(&mut stream, 401, "GatedRepo");
    }
    let gone = matches!(s.faults.lock().unwrap().get(&file_name), Some(Fault::Gone));
    let Some(file) = repo.files.get(&file_name).cloned().filter(|_| !gone) else {
        return error(&mut stream, 404, "EntryNotFound");
    };
    let commit = ("X-Repo-Commit", repo.commit.clone());
    if file_name.ends_with(".safetensors") {
        if req.method == "HEAD" {
            *s.log
                .lock()
                .unwrap()
                .heads
                .entry(file_name.clone())
                .or_default() += 1;
        }
        let size = match s.faults.lock().unwrap().get(&file_name) {
            Some(Fault::ClaimSize(n)) => *n,
            _ => file.bytes.len() as u64,
        };
        return respond(
            &mut stream,
            302,
            &[
                commit,
                ("X-Linked-Etag", format!("\"{}\"", file.etag)),
                ("X-Linked-Size", size.to_string()),
                ("ETag", "\"pointer-etag\"".into()),
                (
                    "Location",
                    format!("http://{CDN_HOST}:{cdn_port}/cdn/{}", file.etag),
                ),
                ("Content-Length", "0".into()),
            ],
            b"",
        );
    }
    send_file(&mut stream, &req, s, &file_name, &file, &[commit])
}

fn send_file(
    stream: &mut TcpStream,
    req: &Request,
    s: &Shared,
    name: &str,
    file: &File,
    extra: &[(&str, String)],
) -> std::io::Result<()> {
    let len = file.bytes.len();
    let start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n < len);
    {
        let mut log = s.log.lock().unwrap();
        if req.method == "HEAD" {
            *log.heads.entry(name.to_string()).or_default() += 1;
        } else {
            *log.gets.entry(name.to_string()).or_default() += 1;
            if let Some(r) = req.headers.get("range") {
                log.ranges.push((name.to_string(), r.clone()));
            }
        }
    }
    let mut headers: Vec<(&str, String)> = extra.to_vec();
    headers.push(("ETag", format!("\"{}\"", file.etag)));
    let from = start.unwrap_or(0);
    headers.push(("Content-Length", (len - from).to_string()));
    if start.is_some() {
        headers.push(("Content-Range", format!("bytes {from}-{}/{len}", len - 1)));
    }
    let status = if start.is_some() { 206 } else { 200 };
    if req.method == "HEAD" {
        return respond(stream, status, &headers, b"");
    }
    let fault = s.faults.lock().unwrap().get(name).cloned();
    let body = &file.bytes[from..];
    match fault {
        Some(Fault::CutAfter(n)) => {
            // One-shot: the next try gets the whole file.
            s.faults.lock().unwrap().remove(name);
            respond(stream, status, &headers, &body[..n.min(body.len())])?;
            stream.flush()?;
            stream.shutdown(std::net::Shutdown::Both)
        }
        Some(Fault::Slow(pause)) => {
            respond(stream, status, &headers, b"")?;
            for chunk in body.chunks(16 * 1024) {
                stream.write_all(chunk)?;
                stream.flush()?;
                std::thread::sleep(pause);
            }
            Ok(())
        }
        Some(Fault::Stall(n)) => {
            respond(stream, status, &headers, &body[..n.min(body.len())])?;
            stream.flush()?;
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        _ => respond(stream, status, &headers, body),
    }
}

fn decode(part: &str) -> String {
    let mut out = Vec::new();
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&part[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// A 40-hex "commit" derived from `seed`.
pub fn hex40(seed: &str) -> String {
    let h = fnv(seed.as_bytes());
    format!("{h:016x}{:016x}{:08x}", h.rotate_left(17), (h >> 7) as u32)
}

/// Drains a reader (for tests that read a child's output).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}
