//! What the process tells its operators. For now: logs, through `tracing`.

mod logging;

pub use logging::{LogFormat, init_logging};
