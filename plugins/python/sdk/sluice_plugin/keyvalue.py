"""Key-value state in buckets the stage grants (``wasi:keyvalue``), for
handlers that count, remember or cache.

The handler must be built against a world that imports the store: put
``world = "message-handler-keyvalue"`` (or ``"message-handler-io"``) under
``[tool.sluice]`` in its ``pyproject.toml``, and its stage must grant
``[plugin.capabilities.keyvalue]``. Every failure (the stage's Redis is
down, a timeout, a value over the grant's size cap, a bucket not granted)
raises :class:`StoreError`; act on it, typically with a ``Retry`` verdict::

    from sluice_plugin import keyvalue

    bucket = keyvalue.open("default")
    seen = bucket.increment("seen", 1)
"""

from typing import List, Optional, Tuple

try:
    from componentize_py_types import Err
    from wit_world.imports import atomics as _atomics
    from wit_world.imports import batch as _batch
    from wit_world.imports import store as _store
except ImportError as error:
    raise ImportError(
        "sluice_plugin.keyvalue needs the world message-handler-keyvalue or "
        "message-handler-io: set `world` under [tool.sluice] in pyproject.toml"
    ) from error


class StoreError(Exception):
    """A store operation failed.

    ``kind`` is ``"no-such-store"``, ``"access-denied"`` (a bucket the
    stage does not grant) or ``"other"``, with the host's ``reason``.
    """

    def __init__(self, kind: str, reason: str = ""):
        super().__init__(f"{kind}: {reason}" if reason else kind)
        self.kind = kind
        self.reason = reason


def _raised(error: Err) -> StoreError:
    value = error.value
    if isinstance(value, _store.Error_NoSuchStore):
        return StoreError("no-such-store")
    if isinstance(value, _store.Error_AccessDenied):
        return StoreError("access-denied")
    return StoreError("other", value.value)


class Bucket:
    """A bucket the stage grants; open it with :func:`open`."""

    def __init__(self, handle: "_store.Bucket"):
        self._handle = handle

    def get(self, key: str) -> Optional[bytes]:
        """The value at ``key``, or ``None`` when there is none."""
        try:
            return self._handle.get(key)
        except Err as error:
            raise _raised(error) from None

    def set(self, key: str, value: bytes) -> None:
        try:
            self._handle.set(key, value)
        except Err as error:
            raise _raised(error) from None

    def delete(self, key: str) -> None:
        try:
            self._handle.delete(key)
        except Err as error:
            raise _raised(error) from None

    def exists(self, key: str) -> bool:
        try:
            return self._handle.exists(key)
        except Err as error:
            raise _raised(error) from None

    def keys(self) -> List[str]:
        """Every key in the bucket, over all pages (costly on a big one)."""
        keys: List[str] = []
        cursor = None
        try:
            while True:
                page = self._handle.list_keys(cursor)
                keys.extend(page.keys)
                cursor = page.cursor
                if cursor is None:
                    return keys
        except Err as error:
            raise _raised(error) from None

    def increment(self, key: str, delta: int) -> int:
        """Add ``delta`` to the counter at ``key`` (0 when absent) and
        return the new count; the counter is stored as decimal text."""
        try:
            return _atomics.increment(self._handle, key, delta)
        except Err as error:
            raise _raised(error) from None

    def get_many(self, keys: List[str]) -> List[Optional[Tuple[str, bytes]]]:
        try:
            return _batch.get_many(self._handle, keys)
        except Err as error:
            raise _raised(error) from None

    def set_many(self, pairs: List[Tuple[str, bytes]]) -> None:
        try:
            _batch.set_many(self._handle, pairs)
        except Err as error:
            raise _raised(error) from None

    def delete_many(self, keys: List[str]) -> None:
        try:
            _batch.delete_many(self._handle, keys)
        except Err as error:
            raise _raised(error) from None


def open(name: str) -> Bucket:  # noqa: A001 - the WIT's name
    """Open the bucket ``name``; :class:`StoreError` when not granted."""
    try:
        return Bucket(_store.open(name))
    except Err as error:
        raise _raised(error) from None
