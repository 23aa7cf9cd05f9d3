"""scripts/proto_docs.py: the Markdown API reference built from proto comments, and its staleness check."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.infra import ROOT

spec = importlib.util.spec_from_file_location("proto_docs", ROOT / "scripts" / "proto_docs.py")
assert spec is not None and spec.loader is not None
proto_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proto_docs)

SAMPLE = """syntax = "proto3";
package demo.v1;
import "google/protobuf/timestamp.proto";

// Feeds things.
// Second line of the same paragraph.
service FeedService {
  // Streams the feed | with a pipe.
  rpc Follow(FollowRequest) returns (stream Item);
  rpc Push(stream Item) returns (Ack);
}

// Request of Follow.
message FollowRequest {
  int64 after = 1;  // resume point
  map<string, Item> by_name = 2;
  optional string filter = 3;
}

message Item {
  // What it is.
  enum Kind {
    KIND_UNSPECIFIED = 0;
    // A big one.
    KIND_BIG = 1;
  }
  oneof body {
    string text = 1;
    bytes data = 2;
  }
  repeated Kind kinds = 3;
  google.protobuf.Timestamp time = 4;
  message Part { string name = 1; }
  repeated Part parts = 5;
}

message Ack {}
"""


@pytest.fixture
def protos(tmp_path: Path) -> Path:
    folder = tmp_path / "protos" / "demo" / "v1"
    folder.mkdir(parents=True)
    (folder / "feed.proto").write_text(SAMPLE)
    return tmp_path / "protos"


def test_every_element_with_its_comment(protos: Path) -> None:
    page = proto_docs.render(protos)
    assert page.startswith("# API reference: `demo.v1`")
    assert "Feeds things. Second line of the same paragraph." in page
    assert ("| `Follow` | [`FollowRequest`](#demo.v1.FollowRequest) | stream [`Item`](#demo.v1.Item) | "
            "Streams the feed \\| with a pipe. |") in page
    assert "| `Push` | stream [`Item`](#demo.v1.Item) | [`Ack`](#demo.v1.Ack) |  |" in page
    assert "| `after` | 1 | `int64` |  | resume point |" in page
    assert "| `by_name` | 2 | map<`string`, [`Item`](#demo.v1.Item)> |  |  |" in page
    assert "| `filter` | 3 | `string` | optional |  |" in page
    assert "| `text` | 1 | `string` | oneof `body` |  |" in page
    assert "| `kinds` | 3 | [`Item.Kind`](#demo.v1.Item.Kind) | repeated |  |" in page
    assert "| `time` | 4 | `google.protobuf.Timestamp` |  |  |" in page
    assert "| `parts` | 5 | [`Item.Part`](#demo.v1.Item.Part) | repeated |  |" in page
    assert '<a id="demo.v1.Item.Part"></a>' in page and "### Message `demo.v1.Item.Part`" in page
    assert "### Enum `demo.v1.Item.Kind`" in page and "| `KIND_BIG` | 1 | A big one. |" in page
    assert "ByNameEntry" not in page  # map entries are shown as map<K, V>, not as messages
    assert "### Message `demo.v1.Ack`\n\nNo fields." in page


def test_check_fails_on_a_stale_page(protos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "docs" / "api.md"
    assert proto_docs.main([str(protos), str(page)]) == 0
    assert proto_docs.main([str(protos), str(page), "--check"]) == 0
    (protos / "demo" / "v1" / "feed.proto").write_text(SAMPLE.replace("// Request of Follow.", "// Changed."))
    assert proto_docs.main([str(protos), str(page), "--check"]) == 1
    assert "is stale: run `make api-docs`" in capsys.readouterr().err


def test_committed_reference_is_current() -> None:
    assert proto_docs.render(ROOT / "protos") == (ROOT / "docs" / "api" / "upscaling.md").read_text(), \
        "run `make api-docs`"
