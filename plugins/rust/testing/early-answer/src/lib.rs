//! POSTs to a service and waits for its answer before writing the
//! request's body, then writes and finishes the body, and outputs what each
//! step returned. A server may answer on the head alone and close (a
//! refused upload, a GET answered before its empty body is finished): the
//! plugin must then still get that answer, and finishing its body must not
//! fail because nobody reads it any more.
//!
//! Plugin config: `authority` (`host:port`) and `path`, over plain HTTP.

use sluice_plugin::{Handler, Message, Output, Verdict, config};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

struct EarlyAnswer;

impl Handler for EarlyAnswer {
    fn handle(message: &Message) -> Verdict {
        let (Some(authority), Some(path)) = (config::get("authority"), config::get("path")) else {
            return Verdict::dead_letter("early-answer: set `authority` and `path`");
        };
        let request = OutgoingRequest::new(Fields::new());
        let set = [
            request.set_method(&Method::Post),
            request.set_scheme(Some(&Scheme::Http)),
            request.set_authority(Some(&authority)),
            request.set_path_with_query(Some(&path)),
        ];
        if set.iter().any(Result::is_err) {
            return Verdict::dead_letter("early-answer: the request cannot be built");
        }
        let Ok(body) = request.body() else {
            return Verdict::dead_letter("early-answer: no request body");
        };
        let answer = match outgoing_handler::handle(request, None) {
            Ok(future) => {
                future.subscribe().block();
                match future.get() {
                    Some(Ok(Ok(response))) => format!("status {}, {}", response.status(), read_body(response)),
                    Some(Ok(Err(code))) => format!("error {code:?}"),
                    other => format!("no answer: {other:?}"),
                }
            }
            Err(code) => format!("refused {code:?}"),
        };
        let written = match body.write() {
            Ok(stream) => {
                let written = stream.blocking_write_and_flush(message.value.as_deref().unwrap_or_default());
                drop(stream);
                format!("{written:?}")
            }
            Err(()) => "no stream".to_owned(),
        };
        let finished = OutgoingBody::finish(body, None);
        Verdict::success([Output::replacing_value(
            message,
            format!("answer: {answer}; body written: {written}; body finished: {finished:?}"),
        )])
    }
}

/// The answer's body as text, or how reading it failed.
fn read_body(response: wasip2::http::types::IncomingResponse) -> String {
    let Ok(body) = response.consume() else {
        return "no body".to_owned();
    };
    let Ok(stream) = body.stream() else {
        return "no body stream".to_owned();
    };
    let mut read = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => read.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(error) => return format!("body failed after {} bytes: {error:?}", read.len()),
        }
    }
    format!("body {:?}", String::from_utf8_lossy(&read))
}

sluice_plugin::export_handler!(EarlyAnswer);
