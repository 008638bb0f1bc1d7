//! The JSON of a chat completion request and answer, and the image as a `data:` URL.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::engine::RemoteErrorKind;
use crate::model::{Caption, GenerationParams, RgbImage};

/// How a frame travels to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ImageFormat {
    /// Lossless: a server on the same weights sees the exact RGB and answers with the local
    /// backend's tokens.
    #[default]
    Png,
    /// Smaller; `quality` 1–100.
    Jpeg { quality: u8 },
}

/// `data:image/...;base64,...` for `image`.
pub fn data_url(image: &RgbImage, format: ImageFormat) -> Result<String, String> {
    let mut bytes = Vec::new();
    let (w, h) = (image.width as u32, image.height as u32);
    let mime = match format {
        ImageFormat::Png => {
            use image::ImageEncoder as _;
            // Fast compression: a 1080p frame encodes in tens of milliseconds instead of
            // hundreds, for a somewhat larger request.
            image::codecs::png::PngEncoder::new_with_quality(
                &mut bytes,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            )
            .write_image(&image.data, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| format!("cannot encode the frame as PNG: {e}"))?;
            "image/png"
        }
        ImageFormat::Jpeg { quality } => {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality.clamp(1, 100))
                .encode(&image.data, w, h, image::ExtendedColorType::Rgb8)
                .map_err(|e| format!("cannot encode the frame as JPEG: {e}"))?;
            "image/jpeg"
        }
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    Ok(format!("data:{mime};base64,{b64}"))
}

/// The request body. Greedy decoding is `temperature` 0; beam search uses vLLM's
/// `use_beam_search` with `n` beams (its best answer comes first). `min_tokens`,
/// `repetition_penalty` and `return_token_ids` are vLLM extensions that other servers ignore
/// or refuse.
pub fn request_body(
    model: &str,
    image_url: &str,
    prompt: &str,
    params: &GenerationParams,
) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": prompt},
            ],
        }],
        "max_tokens": params.max_new_tokens,
        "return_token_ids": true,
    });
    let obj = body.as_object_mut().expect("a JSON object");
    match &params.sampling {
        Some(s) => {
            obj.insert("temperature".into(), json!(s.temperature));
            obj.insert("top_p".into(), json!(s.top_p));
            if s.top_k > 0 {
                obj.insert("top_k".into(), json!(s.top_k));
            }
            obj.insert("seed".into(), json!(s.seed));
        }
        None => {
            obj.insert("temperature".into(), json!(0.0));
        }
    }
    if params.min_new_tokens > 0 {
        obj.insert("min_tokens".into(), json!(params.min_new_tokens));
    }
    if params.repetition_penalty != 1.0 {
        obj.insert(
            "repetition_penalty".into(),
            json!(params.repetition_penalty),
        );
    }
    if params.num_beams > 1 {
        obj.insert("use_beam_search".into(), json!(true));
        obj.insert("n".into(), json!(params.num_beams));
        obj.insert("length_penalty".into(), json!(params.length_penalty));
    }
    body
}

/// `choices[0].message.content` (and `choices[0].token_ids` when the server returns them).
pub fn parse_answer(body: &str) -> Result<Caption, RemoteErrorKind> {
    let malformed = |what: &str| RemoteErrorKind::Malformed(what.to_owned());
    let value: Value = serde_json::from_str(body)
        .map_err(|e| RemoteErrorKind::Malformed(format!("not JSON ({e}): {}", excerpt(body))))?;
    let choice = value
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| malformed("no choices[0]"))?;
    let text = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("choices[0].message.content is missing or not a string"))?;
    let token_ids = match choice.get("token_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(ids) => serde_json::from_value::<Vec<u32>>(ids.clone())
            .map_err(|_| malformed("choices[0].token_ids is not a list of token ids"))?,
    };
    Ok(Caption {
        token_ids,
        text: text.to_owned(),
    })
}

/// The server's own words for an error status: `error.message` (OpenAI, recent vLLM) or
/// `message` (older vLLM), else the start of the body.
pub fn error_message(body: &str) -> String {
    let value: Option<Value> = serde_json::from_str(body).ok();
    let message = value.as_ref().and_then(|v| {
        v.get("error")
            .and_then(|e| e.get("message").or(Some(e)))
            .and_then(Value::as_str)
            .or_else(|| v.get("message").and_then(Value::as_str))
    });
    match message {
        Some(m) => m.to_owned(),
        None if body.trim().is_empty() => "(empty body)".to_owned(),
        None => excerpt(body),
    }
}

/// At most 200 characters of `text`, for messages.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_the_generation_settings() {
        let params = GenerationParams {
            max_new_tokens: 30,
            min_new_tokens: 5,
            repetition_penalty: 1.5,
            ..GenerationParams::default()
        };
        let body = request_body(
            "blip2",
            "data:image/png;base64,AA==",
            "Question: x? Answer:",
            &params,
        );
        assert_eq!(body["model"], "blip2");
        assert_eq!(body["max_tokens"], 30);
        assert_eq!(body["min_tokens"], 5);
        assert_eq!(body["repetition_penalty"], 1.5);
        assert_eq!(body["temperature"], 0.0);
        assert!(body.get("use_beam_search").is_none());
        let content = &body["messages"][0]["content"];
        assert_eq!(content[0]["image_url"]["url"], "data:image/png;base64,AA==");
        assert_eq!(content[1]["text"], "Question: x? Answer:");

        let beams = GenerationParams {
            num_beams: 4,
            ..GenerationParams::default()
        };
        let body = request_body("m", "u", "", &beams);
        assert_eq!(body["use_beam_search"], true);
        assert_eq!(body["n"], 4);
        assert!(body.get("min_tokens").is_none());
    }

    #[test]
    fn png_round_trips_exactly() {
        let data: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let image = RgbImage::new(5, 3, data.clone()).unwrap();
        let url = data_url(&image, ImageFormat::Png).unwrap();
        let b64 = url.strip_prefix("data:image/png;base64,").unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let back = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((back.width(), back.height()), (5, 3));
        assert_eq!(back.into_raw(), data);
        let jpeg = data_url(&image, ImageFormat::Jpeg { quality: 80 }).unwrap();
        assert!(jpeg.starts_with("data:image/jpeg;base64,/9j/"), "{jpeg}");
    }

    #[test]
    fn answers_parse_or_say_what_is_wrong() {
        let ok = r#"{"choices":[{"message":{"role":"assistant","content":" a cat"},"token_ids":[4,5,2]}]}"#;
        let c = parse_answer(ok).unwrap();
        assert_eq!((c.text.as_str(), c.token_ids), (" a cat", vec![4, 5, 2]));
        let plain = r#"{"choices":[{"message":{"content":"dog"}}]}"#;
        assert_eq!(parse_answer(plain).unwrap().token_ids, Vec::<u32>::new());
        for (body, says) in [
            ("<html>oops", "not JSON"),
            (r#"{"choices":[]}"#, "no choices[0]"),
            (
                r#"{"choices":[{"message":{"content":null}}]}"#,
                "content is missing",
            ),
            (
                r#"{"choices":[{"message":{"content":"x"},"token_ids":"?"}]}"#,
                "token ids",
            ),
        ] {
            match parse_answer(body) {
                Err(RemoteErrorKind::Malformed(m)) => assert!(m.contains(says), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_messages_are_quoted() {
        let vllm = r#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError","code":404}}"#;
        assert_eq!(error_message(vllm), "The model `x` does not exist.");
        let old = r#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#;
        assert_eq!(error_message(old), "bad");
        assert_eq!(error_message("Service Unavailable"), "Service Unavailable");
        assert_eq!(error_message(""), "(empty body)");
    }
}
