"""The shared cache's Redis client, one per process."""

from django.core.cache.backends.redis import RedisCache
from django.utils.functional import cached_property

_clients: dict = {}


class ProcessRedisCache(RedisCache):
    """Django's Redis cache, with one client (and so one connection pool) per process. Django makes
    a cache object per request context, which under ASGI is every request, and each made a pool of
    its own: every request that checked a throttle opened a new connection to Redis."""

    @cached_property
    def _cache(self):
        key = (tuple(self._servers), repr(sorted(self._options.items())))
        if key not in _clients:
            _clients[key] = self._class(self._servers, **self._options)
        return _clients[key]
