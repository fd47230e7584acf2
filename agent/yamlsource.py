"""YAML with line numbers: load a document and remember where every key came from.

PyYAML's constructors forget positions and silently keep the last of two duplicate keys;
operators need `FILE:LINE` in every error and a duplicate key is almost always a mistake,
so the node tree is walked here and both are handled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[Any, ...]


@dataclass
class YamlDocument:
    """Plain data plus the 1-based line of every key path in it."""

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int:
        """The line of `key_path`, or of its nearest ancestor that has one."""
        path = tuple(key_path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


class YamlError(Exception):
    """A document that cannot be turned into data: (line, key path, message)."""

    def __init__(self, line: int, key_path: KeyPath, message: str):
        super().__init__(message)
        self.line = line
        self.key_path = key_path
        self.message = message


def load(path: Path, text: str) -> YamlDocument:
    """Parse one YAML document, rejecting duplicate and non-string keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlError(line, (), f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise YamlError(1, (), f"not valid YAML: {exc}") from None
    doc = YamlDocument(path=path, data=None)
    if node is None:
        return doc
    doc.lines[()] = node.start_mark.line + 1
    doc.data = _Walker(doc).value(node, ())
    return doc


class _Walker:
    """Turns a composed node tree into plain data, recording lines on the way."""

    def __init__(self, doc: YamlDocument):
        self.doc = doc
        self.constructor = yaml.SafeLoader("")  # only its scalar and merge logic is used

    def value(self, node: yaml.Node, path: KeyPath) -> Any:
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self.doc.lines[path + (index,)] = item.start_mark.line + 1
                items.append(self.value(item, path + (index,)))
            return items
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise YamlError(node.start_mark.line + 1, path, f"bad value: {exc}") from None

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.value(key_node, path)
            if not isinstance(key, str):
                raise YamlError(line, path, f"key {key!r} must be a string (quote it)")
            if key in result:
                first = self.doc.lines[path + (key,)]
                raise YamlError(line, path + (key,), f"duplicate key {key!r} (first defined at line {first})")
            self.doc.lines[path + (key,)] = line
            result[key] = self.value(value_node, path + (key,))
        return result


def format_path(key_path: KeyPath) -> str:
    """`services.web.env.0` style, or `(top)` for the document itself."""
    return ".".join(str(part) for part in key_path) if key_path else "(top)"
