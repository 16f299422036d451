//! Validates orders and shows all three verdicts in one handler.
//!
//! An order is a JSON object with a string `id` and a positive `amount`.
//! - Malformed orders are dead-lettered: retrying cannot fix them.
//! - Orders whose `payment` is `"pending"` ask for a retry in 100 ms: the
//!   payment may settle. A real handler would look the payment up; this
//!   example treats it as settled from attempt `settles-on-attempt`
//!   (plugin config, default 3). If the stage's `retry.max_attempts` is
//!   lower, the order is dead-lettered with "retries exhausted".
//! - Valid, paid orders pass through with an `order-status: accepted` header.

use std::time::Duration;

use serde_json::Value;
use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct Orders;

impl Handler for Orders {
    fn handle(message: &Message) -> Verdict {
        let order = match message.value.as_deref().map(serde_json::from_slice::<Value>) {
            None => return Verdict::dead_letter("not an order: the record has no value"),
            Some(Err(error)) => return Verdict::dead_letter(format!("not an order: invalid JSON: {error}")),
            Some(Ok(order)) => order,
        };
        if !order.get("id").is_some_and(Value::is_string) {
            return Verdict::dead_letter("not an order: `id` must be a string");
        }
        if !order
            .get("amount")
            .and_then(Value::as_f64)
            .is_some_and(|amount| amount > 0.0)
        {
            return Verdict::dead_letter("not an order: `amount` must be a positive number");
        }
        let settles_on: u32 = match config::parse_or("settles-on-attempt", 3) {
            Ok(attempt) => attempt,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        if order.get("payment").and_then(Value::as_str) == Some("pending") && message.attempt < settles_on {
            return Verdict::retry_after("payment pending", Duration::from_millis(100));
        }
        Verdict::success([Output::from_message(message).with_header("order-status", "accepted")])
    }
}

sluice_plugin::export_handler!(Orders);
