"""Reading a suite file: a small UTF-8 YAML text, read by a safe loader that refuses what
PyYAML would quietly accept (a key given twice) and what would exhaust the machine (a file of
gigabytes, a "billion laughs" of aliases, nesting deeper than the stack). Each refusal is one
line naming the file and, where YAML knows it, the line and column."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import KdbenchError, first_line
from kdbench.spec.messages import show

MAX_SUITE_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
"""Nodes of a suite's YAML, an alias counted once for every use (a "billion laughs" suite
expands a few lines into billions of nodes)."""


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last),
    and turns a scalar that cannot be built (``2001-13-45``, an integer of 5000 digits) into a
    marked YAML error instead of a bare ``ValueError``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            shown = show(node.value) if isinstance(node, yaml.ScalarNode) else node.tag
            reason = (
                "too many digits for any setting"
                if node.tag == "tag:yaml.org,2002:int"
                else first_line(exc)
            )
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown}: {reason}", node.start_mark
            ) from None


def _mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "a list or a mapping cannot be a key", key_node.start_mark
            )
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {show(key)} is given twice", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_yaml(path: Path) -> Any:
    """A suite file's data; anything that is not a small YAML text is refused in one line."""
    text = _suite_text(path)
    try:
        loader = _StrictLoader(text)  # the reader refuses a control character here
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise KdbenchError(
                f"{path}: the suite expands to more than {MAX_YAML_NODES} YAML nodes (an alias "
                "counts once for every use); write it out without aliases that multiply"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KdbenchError(
            f"{path}: {where}YAML syntax error: {exc.problem or first_line(exc)}"
        ) from None
    except yaml.reader.ReaderError as exc:
        raise KdbenchError(
            f"{path}: character #x{exc.character:04x} at position {exc.position} is not "
            "allowed in YAML; a suite is a text file"
        ) from None
    except yaml.YAMLError as exc:
        raise KdbenchError(f"{path}: YAML syntax error: {first_line(exc)}") from None
    except RecursionError:
        raise KdbenchError(
            f"{path}: the suite nests lists or mappings too deeply to read"
        ) from None


def _suite_text(path: Path) -> str:
    """The file's text, refused before parsing when it is larger than any suite or not UTF-8."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)  # never more, whatever the file is
    except OSError as exc:
        raise KdbenchError(f"{path}: cannot read the suite ({exc.strerror or exc})") from None
    if len(data) > MAX_SUITE_BYTES:
        raise KdbenchError(
            f"{path}: larger than {MAX_SUITE_BYTES // 2**20} MiB; a suite is a short YAML "
            "text file (is this the right file?)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KdbenchError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "a suite is a YAML text file saved as UTF-8"
        ) from None


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the composed document, each alias counted as often as it is used, without
    building anything: an alias is the same node object each time it appears, so the sizes
    memoised by node make this linear in the distinct nodes. Counting stops once past
    ``MAX_YAML_NODES``; a node that contains itself is refused (it has no finite size)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an alias is used inside its own anchor", node.start_mark
            )
        open_nodes.add(id(node))
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_YAML_NODES:
                break
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value
