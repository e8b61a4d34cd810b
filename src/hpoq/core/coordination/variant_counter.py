"""Atomic variant numbers: K producers asking at once get K different numbers.

The counter is raised to a floor (the highest variant found in the study storage, the
study folders and MLflow) and incremented in one Lua script, so deleting Redis never
re-issues a number that is in use.
"""

from __future__ import annotations

import redis

from hpoq.core.coordination.keys import RedisKeys

# KEYS[1] = variant counter; ARGV[1] = floor (highest number known to exist elsewhere).
# Returns the newly allocated number (> floor, > every number issued before).
_ALLOCATE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], floor)
end
return redis.call('INCR', KEYS[1])
"""


class VariantCounter:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._client = client
        self._keys = keys
        self._allocate = client.register_script(_ALLOCATE)

    def allocate(self, backbone: str, base: str, floor: int) -> int:
        """A variant number above `floor` that no caller has received before."""
        return int(self._allocate(keys=[self._keys.variant_counter(backbone, base)], args=[floor]))

    def peek(self, backbone: str, base: str) -> int:
        value = self._client.get(self._keys.variant_counter(backbone, base))
        return int(value) if value else 0
