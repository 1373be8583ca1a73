"""A table of hostile and careless requests (issue 15): each gets its 4xx naming the problem,
never a 5xx, and never fails a well-formed request running beside it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api.schemas import MAX_REQUEST_PREFIXES, check_prefix_list
from service.errors import InvalidInput
from tests.http_helpers import assert_error, fake_app, fill_folder


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = fill_folder(tmp_path_factory.mktemp("prefixes"))
    (folder / "state.json").write_text('{"version": 1, "disabled": ["gamma"]}')
    with fake_app(folder) as (c, _, _):
        yield c


def test_a_huge_prefix_list_is_refused_at_its_length(client: TestClient) -> None:
    # 15.2: 40,000 names once took 22 s (a quadratic duplicate check on the event loop).
    names = [f"p{i}" for i in range(40_000)]
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": names}),
        422,
        "validation_error",
        "40000 names",
        f"limit of {MAX_REQUEST_PREFIXES}",
        "MAX_REQUEST_PREFIXES",
    )
    # Refused before the items are looked at: 40,000 non-strings give one error, not 40,000.
    message = assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": list(range(40_000))}), 422, "validation_error"
    )
    assert message.count(";") == 0
    assert "40000 names" in message


def test_a_list_at_the_cap_is_checked_item_by_item(client: TestClient) -> None:
    names = [f"p{i}" for i in range(MAX_REQUEST_PREFIXES)]
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": names}), 404, "prefix_not_found", "'p0'"
    )
    assert_error(
        client.post("/embed", json={"inputs": "x", "prefixes": ["alpha"] * MAX_REQUEST_PREFIXES}),
        400,
        "invalid_input",
        "'alpha' more than once",
    )


def test_duplicates_are_all_found_and_the_message_stays_short() -> None:
    names = [f"p{i % 500}" for i in range(MAX_REQUEST_PREFIXES)]
    with pytest.raises(InvalidInput) as err:
        check_prefix_list(names)
    assert "(and 490 more)" in err.value.message
    assert len(err.value.message) < 300
    assert check_prefix_list(["b", "a"]) == ["b", "a"]


@pytest.mark.parametrize("route", ["/health", "/ready"])
def test_head_on_probes_is_200_without_a_body(client: TestClient, route: str) -> None:
    # 15.13: load balancers probe with HEAD; it was 405.
    r = client.head(route)
    assert r.status_code == 200, r.text
    assert r.content == b""
    assert client.get(route).status_code == 200
