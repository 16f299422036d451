//! The `wasi:keyvalue` imports (store, atomics, batch) of one plugin
//! instance: buckets the stage grants, over its backend, each operation
//! bounded by the grant's timeout and the call's deadline, counted, and
//! every failure an `error` value the guest handles, never a trap.

use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, histogram};
use tokio::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

use super::backend::BackendError;
use super::grant::KeyValueGrant;
use crate::observe::LogThrottle;
use crate::observe::metrics::{PLUGIN_KEYVALUE_OPERATIONS, PLUGIN_KEYVALUE_SECONDS};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::OpenBucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => super::KeyValueError,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};

/// How often one instance may log a failed operation.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// A bucket the plugin opened: a name its grant allows.
pub struct OpenBucket {
    name: String,
}

/// What an operation ends in, before it becomes the WIT `error`.
#[doc(hidden)]
pub enum KeyValueError {
    AccessDenied,
    Other(String),
    /// A handle the guest does not own: a bug in its bindings, not a store
    /// failure, so it traps.
    Trap(wasmtime::Error),
}

impl From<ResourceTableError> for KeyValueError {
    fn from(error: ResourceTableError) -> Self {
        KeyValueError::Trap(error.into())
    }
}

/// One instance's key-value access: the grant (none: every `open` is
/// denied) and the call under way.
pub struct KeyValueAccess {
    grant: Option<Arc<KeyValueGrant>>,
    plugin: Arc<str>,
    deadline: Option<Instant>,
    warnings: LogThrottle,
}

impl KeyValueAccess {
    pub fn new(grant: Option<Arc<KeyValueGrant>>, plugin: Arc<str>) -> Self {
        KeyValueAccess {
            grant,
            plugin,
            deadline: None,
            warnings: LogThrottle::new(WARNING_INTERVAL),
        }
    }

    /// A call into the plugin begins: its operations end by `deadline`.
    pub fn begin_call(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    fn count(&self, operation: &'static str, outcome: &'static str) {
        counter!(PLUGIN_KEYVALUE_OPERATIONS, "plugin" => self.plugin.to_string(), "operation" => operation, "outcome" => outcome)
            .increment(1);
    }

    fn warn(&mut self, operation: &'static str, reason: &str) {
        if let Some(suppressed) = self.warnings.allow() {
            tracing::warn!(
                plugin = &*self.plugin,
                operation,
                suppressed,
                "key-value operation failed: {reason}"
            );
        }
    }

    /// Run one backend operation, bounded by the grant's timeout and what
    /// is left of the call's deadline. The call awaits it: an instance
    /// waiting on the store holds no thread.
    async fn run<T>(
        &mut self,
        operation: &'static str,
        timeout: Duration,
        work: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, KeyValueError> {
        let now = Instant::now();
        let budget = self
            .deadline
            .map_or(timeout, |deadline| deadline.saturating_duration_since(now).min(timeout));
        let outcome = if budget.is_zero() {
            Err(BackendError::Timeout(budget))
        } else {
            tokio::time::timeout(budget, work)
                .await
                .unwrap_or(Err(BackendError::Timeout(budget)))
        };
        histogram!(PLUGIN_KEYVALUE_SECONDS, "operation" => operation).record(now.elapsed().as_secs_f64());
        match outcome {
            Ok(value) => {
                self.count(operation, "ok");
                Ok(value)
            }
            Err(error) => {
                let outcome = match error {
                    BackendError::Timeout(_) => "timeout",
                    BackendError::Unavailable(_) => "unavailable",
                    BackendError::Full(_) => "full",
                    BackendError::NotACounter(_) | BackendError::Overflow(_) => "invalid",
                };
                self.count(operation, outcome);
                let reason = error.to_string();
                self.warn(operation, &reason);
                Err(KeyValueError::Other(reason))
            }
        }
    }

    fn grant(&self) -> Result<Arc<KeyValueGrant>, KeyValueError> {
        self.grant.clone().ok_or(KeyValueError::AccessDenied)
    }

    /// Refuse values over the grant's cap before anything is sent.
    fn check_sizes<'v>(
        &mut self,
        operation: &'static str,
        grant: &KeyValueGrant,
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Result<(), KeyValueError> {
        let cap = grant.max_value_bytes();
        let Some(size) = values
            .into_iter()
            .map(|value| value.len() as u64)
            .find(|size| *size > cap)
        else {
            return Ok(());
        };
        self.count(operation, "too_large");
        Err(KeyValueError::Other(format!(
            "a value of {size} bytes is over plugin.capabilities.keyvalue.max_value_bytes ({cap})"
        )))
    }
}

/// The plugin's view for the generated host traits.
pub struct KeyValueView<'a> {
    pub access: &'a mut KeyValueAccess,
    pub table: &'a mut ResourceTable,
}

impl KeyValueView<'_> {
    /// The open bucket's name and the grant an operation on it runs under
    /// (only a grant lets the plugin hold a bucket).
    fn bucket(&self, bucket: &Resource<OpenBucket>) -> Result<(String, Arc<KeyValueGrant>), KeyValueError> {
        let name = self.table.get(bucket)?.name.clone();
        Ok((name, self.access.grant()?))
    }
}

impl store::Host for KeyValueView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<OpenBucket>, KeyValueError> {
        let allowed = self
            .access
            .grant
            .as_ref()
            .is_some_and(|grant| grant.allows_bucket(&identifier));
        if !allowed {
            self.access.count("open", "denied");
            let reason = format!("bucket `{identifier}` is not in plugin.capabilities.keyvalue.buckets");
            self.access.warn("open", &reason);
            return Err(KeyValueError::AccessDenied);
        }
        self.access.count("open", "ok");
        Ok(self.table.push(OpenBucket { name: identifier })?)
    }

    fn convert_error(&mut self, error: KeyValueError) -> wasmtime::Result<store::Error> {
        match error {
            KeyValueError::AccessDenied => Ok(store::Error::AccessDenied),
            KeyValueError::Other(reason) => Ok(store::Error::Other(reason)),
            KeyValueError::Trap(trap) => Err(trap),
        }
    }
}

impl store::HostBucket for KeyValueView<'_> {
    async fn get(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<Option<Vec<u8>>, KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .run("get", grant.timeout(), grant.backend().get(&name, &key))
            .await
    }

    async fn set(&mut self, bucket: Resource<OpenBucket>, key: String, value: Vec<u8>) -> Result<(), KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access.check_sizes("set", &grant, [value.as_slice()])?;
        self.access
            .run(
                "set",
                grant.timeout(),
                grant.backend().set(&name, &key, value, grant.ttl()),
            )
            .await
    }

    async fn delete(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<(), KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .run("delete", grant.timeout(), grant.backend().delete(&name, &key))
            .await
    }

    async fn exists(&mut self, bucket: Resource<OpenBucket>, key: String) -> Result<bool, KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .run("exists", grant.timeout(), grant.backend().exists(&name, &key))
            .await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<OpenBucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        let page = self
            .access
            .run("list_keys", grant.timeout(), grant.backend().list_keys(&name, cursor))
            .await?;
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, bucket: Resource<OpenBucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KeyValueView<'_> {
    async fn increment(&mut self, bucket: Resource<OpenBucket>, key: String, delta: u64) -> Result<u64, KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .run(
                "increment",
                grant.timeout(),
                grant.backend().increment(&name, &key, delta, grant.ttl()),
            )
            .await
    }
}

impl batch::Host for KeyValueView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        let values = self
            .access
            .run("get_many", grant.timeout(), grant.backend().get_many(&name, &keys))
            .await?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenBucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .check_sizes("set_many", &grant, key_values.iter().map(|(_, value)| value.as_slice()))?;
        self.access
            .run(
                "set_many",
                grant.timeout(),
                grant.backend().set_many(&name, key_values, grant.ttl()),
            )
            .await
    }

    async fn delete_many(&mut self, bucket: Resource<OpenBucket>, keys: Vec<String>) -> Result<(), KeyValueError> {
        let (name, grant) = self.bucket(&bucket)?;
        self.access
            .run(
                "delete_many",
                grant.timeout(),
                grant.backend().delete_many(&name, &keys),
            )
            .await
    }
}

struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = KeyValueView<'a>;
}

/// Link `wasi:keyvalue` store, atomics and batch, reached through `view`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KeyValueView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<_, HasKeyValue>(linker, view)?;
    atomics::add_to_linker::<_, HasKeyValue>(linker, view)?;
    batch::add_to_linker::<_, HasKeyValue>(linker, view)?;
    Ok(())
}
