//! A perfectly valid component of a different world (`example:greeter`).
//! The host must refuse it with an error naming what is missing.

wit_bindgen::generate!({ world: "greeter", path: "wit" });

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
