"""parse_topic: `traksense/{tenant}/{site}/{device}/{kind}` into a Route, or InvalidTopic."""

from __future__ import annotations

import pytest

from ingest_tasks.errors import InvalidTopic
from ingest_tasks.topics import KINDS, Route, parse_topic


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_routed_with_its_identifiers(kind: str) -> None:
    assert parse_topic(f"traksense/acme/plant-7/chiller.01/{kind}") == Route(
        "acme",
        "plant-7",
        "chiller.01",
        kind,  # type: ignore[arg-type]
    )


def test_identifiers_are_opaque_and_kept_verbatim() -> None:
    route = parse_topic("traksense/Ténant Ä/site 1/dev:02#x/telem")
    assert (route.tenant, route.site, route.device) == ("Ténant Ä", "site 1", "dev:02#x")


@pytest.mark.parametrize(
    ("topic", "detail"),
    [
        pytest.param("traksense/acme/site/telem", "must have 5 levels", id="four levels"),
        pytest.param("traksense/acme/site/dev/telem/extra", "must have 5 levels", id="six levels"),
        pytest.param("traksense/acme/site/dev/telem/", "must have 5 levels", id="trailing slash"),
        pytest.param("", "must have 5 levels", id="empty topic"),
        pytest.param("traksense//site/dev/telem", "level tenant is empty", id="empty tenant"),
        pytest.param("traksense/acme//dev/telem", "level site is empty", id="empty site"),
        pytest.param("traksense/acme/site//telem", "level device is empty", id="empty device"),
        pytest.param("/acme/site/dev/telem", "level prefix is empty", id="empty prefix"),
        pytest.param("traksense/acme/site/dev/", "kind must be one of telem, ack, event", id="empty kind"),
        pytest.param("traksense/acme/site/dev/status", "got 'status'", id="unknown kind"),
        pytest.param("traksense/acme/site/dev/TELEM", "got 'TELEM'", id="kind is case sensitive"),
        pytest.param("traksense/ac\x00me/site/dev/telem", "tenant contains NUL", id="NUL in tenant"),
        pytest.param("traksense/acme/si\x00te/dev/telem", "site contains NUL", id="NUL in site"),
        pytest.param("traksense/acme/site/\x00/telem", "device contains NUL", id="NUL in device"),
        pytest.param("traksense/acme/site/dev/telem\x00", "got 'telem\\x00'", id="NUL in kind"),
    ],
)
def test_a_malformed_topic_is_invalid_topic(topic: str, detail: str) -> None:
    with pytest.raises(InvalidTopic) as caught:
        parse_topic(topic)
    assert caught.value.reason == "invalid_topic"
    assert detail in caught.value.detail
    assert "\x00" not in caught.value.detail
