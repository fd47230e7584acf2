"""YAML with line numbers: load a document and remember where every key came from.

PyYAML's constructors forget positions and silently keep the last of two duplicate keys;
operators need `FILE:LINE` in every error and a duplicate key is almost always a mistake,
so the node tree is walked here and both are handled.
"""

from __future__ import annotations

import re
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


# Aliases expand by copying: a small file can describe a huge document ("billion
# laughs"). services.yaml never needs anywhere near this many values.
MAX_NODES = 100_000


def load(path: Path, text: str) -> YamlDocument:
    """Parse one YAML document, rejecting duplicate and non-string keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(mark.line + 1 if mark else 1, (), f"not valid YAML: {_explain(exc)}") from None
    except yaml.YAMLError as exc:
        raise YamlError(1, (), f"not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise YamlError(1, (), "nested too deeply") from None
    doc = YamlDocument(path=path, data=None)
    if node is None:
        return doc
    doc.lines[()] = node.start_mark.line + 1
    try:
        doc.data = _Walker(doc).value(node, ())
    except RecursionError:
        raise YamlError(1, (), "nested too deeply") from None
    return doc


def _explain(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's context and problem as one sentence, without its caret drawing."""
    problem = exc.problem or str(exc).splitlines()[0]
    if not exc.context:
        return problem
    where = ""
    if exc.context_mark and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line:
        where = f" (line {exc.context_mark.line + 1})"
    return f"{exc.context}{where}, {problem}"


class _Walker:
    """Turns a composed node tree into plain data, recording lines on the way."""

    def __init__(self, doc: YamlDocument):
        self.doc = doc
        self.constructor = yaml.SafeLoader("")  # only its scalar and merge logic is used
        self.active: set[int] = set()  # collections being walked, to catch recursive aliases
        self.count = 0

    def value(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise YamlError(self.doc.line_of(path), path, f"too large: more than {MAX_NODES} values "
                            "(aliases are expanded); simplify the file")
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self.active:
                raise YamlError(node.start_mark.line + 1, path, "this alias refers to itself (a recursive alias)")
            self.active.add(id(node))
            try:
                if isinstance(node, yaml.MappingNode):
                    return self.mapping(node, path)
                return self.sequence(node, path)
            finally:
                self.active.discard(id(node))
        return self.scalar(node, path)

    def scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        line = node.start_mark.line + 1
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise YamlError(line, path, f"bad value: {exc.problem}") from None
        except (yaml.YAMLError, ValueError) as exc:
            kind = node.tag.rsplit(":", 1)[-1]
            raise YamlError(line, path, f"{node.value!r} is not a valid {kind} ({exc}); "
                            "quote it to make a string") from None

    def sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.doc.lines[path + (index,)] = item.start_mark.line + 1
            items.append(self.value(item, path + (index,)))
        return items

    def mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        written = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
        try:
            self.constructor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            raise YamlError(mark.line + 1, path, f"merge key '<<': {exc.problem}") from None
        # flatten_mapping puts merged pairs first: keys written here may override them,
        # but a key written twice here is a mistake.
        first_written = len(node.value) - written
        result: dict[str, Any] = {}
        seen: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            line = key_node.start_mark.line + 1
            key = self.value(key_node, path)
            if not isinstance(key, str):
                raise YamlError(line, path, f"key {key!r} must be a string (quote it)")
            if index >= first_written:
                if key in seen:
                    first = self.doc.lines[path + (key,)]
                    raise YamlError(line, path + (key,), f"duplicate key {key!r} (first defined at line {first})")
                seen.add(key)
            self.doc.lines[path + (key,)] = line
            result[key] = self.value(value_node, path + (key,))
        return result


_PLAIN = re.compile(r"[\w:@/+=,-]+")


def plain(part: object) -> bool:
    """A key that can stand in a dotted path as it is."""
    return isinstance(part, int) or bool(_PLAIN.fullmatch(str(part)))


def format_path(key_path: KeyPath) -> str:
    """`services.web.env.0` style, or `(top)` for the document itself. Keys come from
    the file (untrusted): anything unusual is quoted and escaped, so an error line stays
    one line with no spaces in its key path."""
    if not key_path:
        return "(top)"
    return ".".join(str(p) if plain(p) else repr(str(p)).replace(" ", "\\x20") for p in key_path)
