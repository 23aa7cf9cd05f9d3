"""Markdown API reference of the protos, built from their comments (`make api-docs`; `--check` for CI).

protoc (grpc_tools) compiles the .proto files into descriptors with source info; every service, method, message,
field, enum and value is written with its leading comment (and trailing comment, when there is one) in
declaration order, file by file. The output is deterministic, so a stale page is a diff.

    python scripts/proto_docs.py protos docs/api/upscaling.md [--check]
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

FieldType = descriptor_pb2.FieldDescriptorProto
# Paths of source locations (descriptor.proto field numbers).
MESSAGE, ENUM, SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE, SERVICE_METHOD = 2, 2
SCALARS = {value: name.removeprefix("TYPE_").lower() for name, value in FieldType.Type.items()}


def compile_protos(root: Path) -> tuple[list[descriptor_pb2.FileDescriptorProto], str]:
    """The descriptors (with source info) of every .proto file under `root`, and the package they share."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.proto"))
    if not files:
        raise SystemExit(f"no .proto files under {root}")
    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{root}", f"-I{include}", "--include_source_info",
                            f"--descriptor_set_out={out}", *files])
        if code != 0:
            raise SystemExit(f"protoc failed ({code})")
        descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    packages = {f.package for f in descriptors.file}
    return sorted(descriptors.file, key=lambda f: f.name), ", ".join(sorted(packages))


class Comments:
    """The comments of one file's elements by source path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self.by_path: dict[tuple[int, ...], str] = {}
        for location in file.source_code_info.location:
            text = " ".join(part.strip() for part in (location.leading_comments, location.trailing_comments)
                            if part.strip())
            if text:
                self.by_path[tuple(location.path)] = text

    def paragraph(self, path: tuple[int, ...]) -> str:
        """The comment as Markdown paragraphs (blank comment lines separate paragraphs)."""
        text = self.by_path.get(path, "")
        paragraphs = [" ".join(line.strip() for line in block.splitlines()) for block in text.split("\n\n")]
        return "\n\n".join(p for p in paragraphs if p)

    def cell(self, path: tuple[int, ...]) -> str:
        """The comment on one table line."""
        return " ".join(self.by_path.get(path, "").split()).replace("|", "\\|")


def anchor(full_name: str) -> str:
    return full_name.lstrip(".")


def link(full_name: str, local: dict[str, str]) -> str:
    """A link to a type of these files (its name without the package), else the full name."""
    name = anchor(full_name)
    return f"[`{local[name]}`](#{name})" if name in local else f"`{name}`"


def heading(kind: str, full: str) -> list[str]:
    return [f'<a id="{full}"></a>', "", f"### {kind} `{full}`", ""]


MapTypes = dict[str, tuple[descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto]]


def field_type(field: descriptor_pb2.FieldDescriptorProto, maps: MapTypes, local: dict[str, str]) -> str:
    if field.type_name and anchor(field.type_name) in maps:
        key, value = maps[anchor(field.type_name)]
        return f"map<{field_type(key, maps, local)}, {field_type(value, maps, local)}>"
    if field.type_name:
        return link(field.type_name, local)
    return f"`{SCALARS[field.type]}`"


def field_label(field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto,
                maps: MapTypes) -> str:
    if field.label == FieldType.LABEL_REPEATED and anchor(field.type_name) not in maps:
        return "repeated"
    if field.HasField("oneof_index") and not field.proto3_optional:
        return f"oneof `{message.oneof_decl[field.oneof_index].name}`"
    if field.proto3_optional:
        return "optional"
    return ""


def walk_messages(messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str, path: tuple[int, ...]
                  ) -> Iterable[tuple[str, descriptor_pb2.DescriptorProto, tuple[int, ...]]]:
    for index, message in enumerate(messages):
        full = f"{prefix}.{message.name}"
        here = (*path, index)
        yield full, message, here
        yield from walk_messages(message.nested_type, full, (*here, MESSAGE_NESTED))


def render(root: Path) -> str:
    files, packages = compile_protos(root)
    local: dict[str, str] = {}  # full name -> name inside its package
    maps: MapTypes = {}
    for file in files:
        for full, message, _ in walk_messages(file.message_type, file.package, (MESSAGE,)):
            if message.options.map_entry:
                maps[full] = (message.field[0], message.field[1])
            else:
                names = [full, *(f"{full}.{e.name}" for e in message.enum_type)]
                local.update({n: n.removeprefix(f"{file.package}.") for n in names})
        local.update({f"{file.package}.{e.name}": e.name for e in file.enum_type})
        local.update({f"{file.package}.{s.name}": s.name for s in file.service})

    out = [f"# API reference: `{packages}`", "",
           f"Generated by `make api-docs` (`scripts/proto_docs.py`) from the comments of the `.proto` files in "
           f"`{root.name}/`; `make test` fails when it is stale. Do not edit by hand.", "",
           "Services: " + ", ".join(link(f".{f.package}.{s.name}", local) for f in files for s in f.service) + ".",
           ""]
    for file in files:
        comments = Comments(file)
        out += [f"## `{file.name}`", ""]
        for s_index, service in enumerate(file.service):
            full = f"{file.package}.{service.name}"
            out += heading("Service", full)
            if text := comments.paragraph((SERVICE, s_index)):
                out += [text, ""]
            out += ["| method | request | response | description |", "|---|---|---|---|"]
            for m_index, method in enumerate(service.method):
                request = ("stream " if method.client_streaming else "") + link(method.input_type, local)
                response = ("stream " if method.server_streaming else "") + link(method.output_type, local)
                description = comments.cell((SERVICE, s_index, SERVICE_METHOD, m_index))
                out.append(f"| `{method.name}` | {request} | {response} | {description} |")
            out.append("")
        for full, message, path in walk_messages(file.message_type, file.package, (MESSAGE,)):
            if message.options.map_entry:
                continue
            out += heading("Message", full)
            if text := comments.paragraph(path):
                out += [text, ""]
            if message.field:
                out += ["| field | number | type | label | description |", "|---|---|---|---|---|"]
                for f_index, field in enumerate(message.field):
                    out.append(f"| `{field.name}` | {field.number} | {field_type(field, maps, local)} | "
                               f"{field_label(field, message, maps)} | "
                               f"{comments.cell((*path, MESSAGE_FIELD, f_index))} |")
            else:
                out.append("No fields.")
            out.append("")
            for e_index, enum in enumerate(message.enum_type):
                out += render_enum(f"{full}.{enum.name}", enum, comments, (*path, MESSAGE_ENUM, e_index))
        for e_index, enum in enumerate(file.enum_type):
            out += render_enum(f"{file.package}.{enum.name}", enum, comments, (ENUM, e_index))
    return "\n".join(out).rstrip() + "\n"


def render_enum(full: str, enum: descriptor_pb2.EnumDescriptorProto, comments: Comments, path: tuple[int, ...]
                ) -> list[str]:
    out = heading("Enum", full)
    if text := comments.paragraph(path):
        out += [text, ""]
    out += ["| name | number | description |", "|---|---|---|"]
    for v_index, value in enumerate(enum.value):
        out.append(f"| `{value.name}` | {value.number} | {comments.cell((*path, ENUM_VALUE, v_index))} |")
    return [*out, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protos", type=Path, help="folder of the .proto files (the import root)")
    parser.add_argument("output", type=Path, help="the Markdown page to write")
    parser.add_argument("--check", action="store_true", help="fail if the page differs instead of writing it")
    args = parser.parse_args(argv)
    page = render(args.protos)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != page:
            diff = difflib.unified_diff(current.splitlines(), page.splitlines(), str(args.output), "generated",
                                        lineterm="", n=1)
            print("\n".join(list(diff)[:40]), file=sys.stderr)
            print(f"{args.output} is stale: run `make api-docs` and commit it", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
