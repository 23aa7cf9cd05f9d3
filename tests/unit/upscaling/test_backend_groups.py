"""upscaling.backends: groups and `Backends.resolve` (one endpoint, a list, a group; clear errors)."""

from __future__ import annotations

import pytest

from upscaling.backends import Backends, parse_backend

A = "https://a.example/openeo/1.2"
B = "https://b.example/openeo/1.2"
C = "https://c.example/openeo/1.2"


@pytest.fixture
def backends() -> Backends:
    return Backends([parse_backend({"endpoint": A, "aliases": ["https://a.example"], "groups": ["eu", "all"]}),
                     parse_backend({"endpoint": B, "groups": ["eu", "all"]}),
                     parse_backend({"endpoint": C, "groups": ["all"]})])


def _resolve(backends: Backends, endpoint: object) -> list[str]:
    return [b.endpoint for b in backends.resolve(endpoint)]


def test_one_endpoint_any_spelling(backends: Backends) -> None:
    assert _resolve(backends, "HTTPS://A.example/") == [A]
    assert _resolve(backends, B) == [B]


def test_lists_and_groups(backends: Backends) -> None:
    assert _resolve(backends, [B, "https://a.example"]) == [B, A]
    assert _resolve(backends, "eu") == [A, B]
    assert _resolve(backends, ["eu", C]) == [A, B, C]
    assert backends.group_names() == ["all", "eu"]


@pytest.mark.parametrize(("endpoint", "message"), [
    ([], "empty list"),
    ([A, 3], "service.endpoint[1] must be a non-empty string"),
    ([A, ""], "service.endpoint[1] must be a non-empty string"),
    ("https://nowhere.example", "is not a configured backend or group"),
    (["asia"], "'asia' is not a configured backend or group"),
    ([A, "https://a.example"], "names backend https://a.example/openeo/1.2 a second time"),
    (["eu", B], "names backend https://b.example/openeo/1.2 a second time"),
])
def test_bad_lists_are_refused(backends: Backends, endpoint: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        backends.resolve(endpoint)


def test_error_lists_the_groups(backends: Backends) -> None:
    with pytest.raises(ValueError, match="groups: all, eu"):
        backends.resolve("asia")


@pytest.mark.parametrize("groups", ["eu", [""], ["https://x"], [1]])
def test_bad_groups_in_the_configuration(groups: object) -> None:
    with pytest.raises(ValueError, match="group"):
        parse_backend({"endpoint": A, "groups": groups})
