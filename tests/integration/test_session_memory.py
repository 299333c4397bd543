"""The listener's memory of its MQTT session in Redis: one key per broker and client id, recalled at start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from listener.session import RedisSessionMemory, session_key
from tests.conftest import fresh_redis_db
from tests.support import REDIS_HOST

pytestmark = pytest.mark.integration


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=6379, db=fresh_redis_db())
    yield client
    client.flushdb()
    client.close()


def test_a_remembered_session_is_recalled_for_its_broker_and_client_id_only(client: redis.Redis) -> None:
    memory = RedisSessionMemory(client, "broker-a", 1883, "cid")
    assert memory.recall() is False
    assert memory.remember() is True
    assert memory.recall() is True
    assert client.exists(session_key("broker-a", 1883, "cid"))
    assert RedisSessionMemory(client, "broker-a", 1884, "cid").recall() is False
    assert RedisSessionMemory(client, "broker-a", 1883, "other").recall() is False


def test_an_unreachable_redis_cannot_tell_and_cannot_record() -> None:
    # Nothing listens on that port; no retries, so the refusal comes at once.
    unreachable = redis.Redis(host=REDIS_HOST, port=15299, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    memory = RedisSessionMemory(unreachable, "broker-a", 1883, "cid")
    assert memory.recall() is None
    assert memory.remember() is False
