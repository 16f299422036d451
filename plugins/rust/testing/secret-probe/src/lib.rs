//! Tries every way a plugin has to learn the secret its stage adds to
//! requests, and outputs everything it found, so a test can assert the
//! secret is nowhere in it:
//! - its environment variables and its `[plugin.config]`;
//! - setting the secret's header itself (to overwrite or read it back);
//! - the headers of the request it builds, as the host hands them back;
//! - the answer to a real request, headers and body.
//!
//! Plugin config: `url`, an origin the stage grants with a secret header
//! `authorization`.

use sluice_plugin::{Handler, Message, Output, Verdict, config};
use wstd::http::{Client, Request};

struct SecretProbe;

impl Handler for SecretProbe {
    fn handle(message: &Message) -> Verdict {
        let Some(url) = config::get("url") else {
            return Verdict::dead_letter("secret-probe: set `url`");
        };
        let mut found = Vec::new();
        found.push(format!("environment: {:?}", std::env::vars().collect::<Vec<_>>()));
        found.push(format!("config: {:?}", config::entries()));

        let own = url.clone();
        let attempt = wstd::runtime::block_on(async move {
            let request = Request::get(own).header("authorization", "Bearer guessed").body(())?;
            Client::new().send(request).await.map(|response| response.status())
        });
        found.push(format!("own authorization header: {attempt:?}"));

        let answer = wstd::runtime::block_on(async move {
            let request = Request::post(url).body(message.value.clone().unwrap_or_default())?;
            found.push(format!("request headers: {:?}", request.headers()));
            let mut response = Client::new().send(request).await?;
            found.push(format!("response headers: {:?}", response.headers()));
            let body = response.body_mut().contents().await?.to_vec();
            found.push(format!("response body: {}", String::from_utf8_lossy(&body)));
            Ok::<_, wstd::http::Error>(found)
        });
        match answer {
            Ok(found) => Verdict::success([Output::replacing_value(message, found.join("\n"))]),
            Err(error) => Verdict::dead_letter(format!("secret-probe: {error:#}")),
        }
    }
}

sluice_plugin::export_handler!(SecretProbe);
