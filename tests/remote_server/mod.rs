//! Loopback OpenAI-compatible servers for the `openai` backend's tests, on 127.0.0.1 and a free
//! port: one answering chat completions with the project's own engine on the fixture snapshots
//! (as vLLM would with the same weights), and handlers that fail on a schedule.
//!
//! Hand-written on `std::net` rather than with an HTTP server crate: the fault cases must cut a
//! connection in the middle of an answer and stall at the transport level, which server crates
//! do not allow (tiny_http, for one, answers a dropped request with a 500).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use gstblip2::engine::Captioner;
use gstblip2::model::{GenerationParams, RgbImage};
use serde_json::{Value, json};

/// One HTTP request as the server read it.
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the client sends JSON")
    }

    pub fn is_chat(&self) -> bool {
        self.method == "POST" && self.path == "/v1/chat/completions"
    }
}

/// What the server does with a request.
pub enum Reply {
    Json(u16, String),
    /// Bytes written as they are, then the connection is closed.
    Raw(Vec<u8>),
    /// Close the connection without a word.
    Cut,
    /// Wait, then reply.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::Json(200, body.to_string())
    }

    /// An error as vLLM sends it.
    pub fn error(code: u16, message: &str) -> Reply {
        let body = json!({"error": {"message": message, "type": "Error", "code": code}});
        Reply::Json(code, body.to_string())
    }

    pub fn caption(text: &str, token_ids: &[u32]) -> Reply {
        Reply::ok(json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "token_ids": token_ids,
            }],
        }))
    }

    pub fn models(ids: &[&str]) -> Reply {
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "object": "model"}))
            .collect();
        Reply::ok(json!({"object": "list", "data": data}))
    }
}

/// How many of the latest requests [`Server::seen`] keeps.
pub const KEEP_REQUESTS: usize = 64;

type Handler = dyn Fn(usize, &HttpRequest) -> Reply + Send + Sync;

/// A server running until dropped. The handler gets the index of each chat completion request
/// (0, 1, 2, ... in arrival order; other paths get `usize::MAX`).
pub struct Server {
    pub addr: SocketAddr,
    chats: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// The latest [`KEEP_REQUESTS`] requests, oldest first.
    pub seen: Arc<Mutex<Vec<HttpRequest>>>,
}

impl Server {
    pub fn start(handler: impl Fn(usize, &HttpRequest) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let chats = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        {
            let (chats, answered, stop, seen) =
                (chats.clone(), answered.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (handler, chats, answered, seen) = (
                        handler.clone(),
                        chats.clone(),
                        answered.clone(),
                        seen.clone(),
                    );
                    std::thread::spawn(move || {
                        serve(stream, &*handler, &chats, &answered, &seen);
                    });
                }
            });
        }
        Self {
            addr,
            chats,
            answered,
            stop,
            seen,
        }
    }

    /// `server-url` for this server.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat completion requests received so far.
    pub fn chats(&self) -> usize {
        self.chats.load(Ordering::SeqCst)
    }

    /// Chat completions answered (or being answered) with a 200 so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

/// A URL on which nothing listens (a port just freed).
pub fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/v1")
}

fn serve(
    mut stream: TcpStream,
    handler: &Handler,
    chats: &AtomicUsize,
    answered: &AtomicUsize,
    seen: &Mutex<Vec<HttpRequest>>,
) {
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    let index = if request.is_chat() {
        chats.fetch_add(1, Ordering::SeqCst)
    } else {
        usize::MAX
    };
    let mut reply = handler(index, &request);
    let is_chat = request.is_chat();
    {
        // The latest requests only, so a long run does not grow the test's own memory.
        let mut seen = seen.lock().unwrap();
        if seen.len() == KEEP_REQUESTS {
            seen.remove(0);
        }
        seen.push(request);
    }
    while let Reply::After(wait, next) = reply {
        std::thread::sleep(wait);
        reply = *next;
    }
    match reply {
        Reply::Json(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            // Counted before writing: the client may act on the answer before this thread
            // runs again.
            if status == 200 && is_chat {
                answered.fetch_add(1, Ordering::SeqCst);
            }
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|_| stream.write_all(body.as_bytes()));
        }
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Reply::Cut | Reply::After(..) => {}
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn read_request(stream: &mut TcpStream) -> Option<HttpRequest> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(HttpRequest {
        method,
        path,
        headers,
        body,
    })
}

/// What a request asked for, read back as the server side of vLLM would: the frame decoded
/// from its `data:` URL, the prompt, and the generation settings.
pub struct ChatCall {
    pub model: String,
    pub image: RgbImage,
    pub prompt: String,
    pub params: GenerationParams,
}

pub fn parse_chat(request: &HttpRequest) -> Result<ChatCall, String> {
    let body = request.json();
    let content = &body["messages"][0]["content"];
    let url = content[0]["image_url"]["url"]
        .as_str()
        .ok_or("no image_url part")?;
    let b64 = url
        .strip_prefix("data:image/png;base64,")
        .or_else(|| url.strip_prefix("data:image/jpeg;base64,"))
        .ok_or("not a data URL")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    let rgb = image::load_from_memory(&bytes)
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let image = RgbImage::new(w, h, rgb.into_raw()).map_err(|e| e.to_string())?;
    let prompt = content[1]["text"]
        .as_str()
        .ok_or("no text part")?
        .to_owned();
    if body["temperature"].as_f64() != Some(0.0) {
        return Err("this test server decodes greedily only (temperature 0)".into());
    }
    let defaults = GenerationParams::default();
    let beams = body["use_beam_search"].as_bool() == Some(true);
    let params = GenerationParams {
        max_new_tokens: body["max_tokens"].as_u64().ok_or("no max_tokens")? as usize,
        min_new_tokens: body["min_tokens"].as_u64().unwrap_or(0) as usize,
        repetition_penalty: body["repetition_penalty"].as_f64().unwrap_or(1.0),
        num_beams: if beams {
            body["n"].as_u64().unwrap_or(1) as usize
        } else {
            1
        },
        length_penalty: body["length_penalty"].as_f64().unwrap_or(1.0),
        ..defaults
    };
    Ok(ChatCall {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        image,
        prompt,
        params,
    })
}

/// A handler serving `captioner` under the name `served`, like `vllm serve` on the same
/// weights: model listing, unknown model → 404, and an optional bearer key (401 otherwise).
pub fn engine_handler(
    captioner: Arc<dyn Captioner>,
    served: &str,
    key: Option<&str>,
) -> impl Fn(usize, &HttpRequest) -> Reply + Send + Sync + 'static {
    let served = served.to_owned();
    let key = key.map(str::to_owned);
    move |_, request| {
        if let Some(key) = &key
            && request.header("authorization") != Some(&format!("Bearer {key}"))
        {
            return Reply::error(401, "Unauthorized");
        }
        if request.method == "GET" && request.path == "/v1/models" {
            return Reply::models(&[&served]);
        }
        if !request.is_chat() {
            return Reply::error(404, "Not Found");
        }
        let call = match parse_chat(request) {
            Ok(call) => call,
            Err(e) => return Reply::error(400, &e),
        };
        if call.model != served {
            return Reply::error(404, &format!("The model `{}` does not exist.", call.model));
        }
        match captioner.caption(&[call.image], &call.prompt, &call.params) {
            Ok(captions) => Reply::caption(&captions[0].text, &captions[0].token_ids),
            Err(e) => Reply::error(500, &e.to_string()),
        }
    }
}

/// Starts `pipeline`, which must fail to start, and returns its ERROR messages (text and
/// debug) and the WARNINGs before them.
pub fn failed_start(pipeline: &gst::Pipeline) -> (Vec<String>, Vec<String>) {
    use gst::prelude::*;
    assert!(
        pipeline.set_state(gst::State::Playing).is_err(),
        "the pipeline was expected not to start"
    );
    let bus = pipeline.bus().unwrap();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    while let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) {
        match msg.view() {
            gst::MessageView::Error(e) => errors.push(format!("{} ({:?})", e.error(), e.debug())),
            gst::MessageView::Warning(w) => warnings.push(w.error().to_string()),
            _ => (),
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    (errors, warnings)
}
