"""A read-mostly view of the stored configuration for the hot paths (callback intake,
Chain Matcher, sender), reloaded from the database at most every `ttl` seconds.

Loading the configuration means decrypting every secret, which is far too slow to do per
callback. A change made through this process's admin API is visible at once
(`invalidate`); a change made on another node is visible within `ttl` seconds (2 s by
default), which docs/architecture.md states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from convodesk.domain.config_model import (
    CHANNEL_TO_SUBCHANNEL,
    ChatSettings,
    MessagingService,
    Queue,
    SystemConfig,
)
from convodesk.runtime import Runtime
from convodesk.storage import config_store


@dataclass(frozen=True)
class Directory:
    config: SystemConfig
    loaded_at: float
    _services: dict[str, MessagingService] = field(default_factory=dict)
    _service_by_app: dict[str, MessagingService] = field(default_factory=dict)
    _queue_by_address: dict[tuple[str, str], Queue] = field(default_factory=dict)

    @classmethod
    def build(cls, config: SystemConfig, loaded_at: float) -> Directory:
        return cls(
            config=config,
            loaded_at=loaded_at,
            _services={s.name: s for s in config.messaging_services},
            _service_by_app={a: s for s in config.messaging_services for a in s.app_ids},
            _queue_by_address={
                (a.app_id, a.subchannel): q for q in config.queues for a in q.addresses
            },
        )

    @property
    def chat_settings(self) -> ChatSettings:
        return self.config.chat_settings

    def service(self, name: str) -> MessagingService | None:
        return self._services.get(name)

    def service_for_app(self, app_id: str) -> MessagingService | None:
        return self._service_by_app.get(app_id)

    def queue_for(self, app_id: str, channel: str) -> Queue | None:
        """The queue whose address is ``APPID@subchannel`` for this channel, if any."""
        subchannel = CHANNEL_TO_SUBCHANNEL.get(channel)
        if subchannel is None:
            return None
        return self._queue_by_address.get((app_id, subchannel))

    def queue(self, name: str) -> Queue | None:
        return next((q for q in self.config.queues if q.name == name), None)


class DirectoryCache:
    def __init__(
        self, runtime: Runtime, *, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._runtime = runtime
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Directory | None = None

    def get(self) -> Directory:
        current = self._current
        if current is not None and self._clock() - current.loaded_at < self._ttl:
            return current
        with self._lock:
            current = self._current
            if current is None or self._clock() - current.loaded_at >= self._ttl:
                current = self._load()
                self._current = current
            return current

    def invalidate(self) -> None:
        self._current = None

    def _load(self) -> Directory:
        with self._runtime.sessions() as session:
            config = config_store.load(session, self._runtime.box, self._runtime.config)
        return Directory.build(config, self._clock())
