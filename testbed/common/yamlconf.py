"""Load YAML with line numbers and validate it against a pydantic model.

Every failure becomes a `Problem` that names file, field path and line, so any schema in the project
(topologies now, experiments later) reports bad input the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypeVar

import pydantic
import yaml

from testbed.common.errors import ConfigError, Problem, UnreadableInput, read_text

M = TypeVar("M", bound=pydantic.BaseModel)
Loc = tuple[Any, ...]


def format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_map(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    """Record the 1-based line of every mapping key / sequence item, keyed by its field path."""
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = loc + (key.value,)
            lines[sub] = key.start_mark.line + 1
            _line_map(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, loc + (i,), lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys: silently keeping the last one hides typos."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class Document:
    """A parsed YAML file plus where each field came from."""

    def __init__(self, file: str, data: Any, lines: dict[Loc, int]):
        self.file, self.data, self.lines = file, data, lines

    def line_of(self, loc: Loc) -> int | None:
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.file, format_loc(loc), message, self.line_of(loc))


MAX_DOCUMENT_BYTES = 16 << 20      # a topology or experiment file; pools and traces keep real ones far smaller
MAX_EXPANDED_VALUES = 1_000_000    # values the document holds once its aliases are expanded (an alias bomb: 10^9)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values `node` stands for with every alias expanded, computed once per node (so the count itself
    stays linear in the document, however far its aliases would expand)."""
    size = memo.get(id(node))
    if size is None:
        memo[id(node)] = 1                    # a node reached again while counting it (a cycle) counts once
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(v, memo) for v in node.value)
        else:
            size = 1
        memo[id(node)] = size = min(size, MAX_EXPANDED_VALUES + 1)
    return size


def _unparsable(e: Exception) -> str:
    """What a RecursionError or a ValueError out of PyYAML means: nesting past Python's stack, or an integer
    past Python's 4300-digit conversion limit (others, e.g. a date like 2024-13-01, say what they are)."""
    if isinstance(e, RecursionError):     # block-style (indented) nesting, which _too_deep does not count
        return "nested too deeply (mappings or lists hundreds of levels inside each other)"
    if "integer string conversion" in str(e):
        return "a number has more than 4300 digits"
    return str(e)


MAX_FLOW_DEPTH = 100          # [ and { inside each other; real files nest a handful of levels
_BRACKETS = str.maketrans({c: None for c in map(chr, range(128)) if c not in "[]{}"})


def _too_deep(text: str) -> bool:
    """Whether flow brackets nest past MAX_FLOW_DEPTH. PyYAML's scanner is quadratic in flow depth (10,000
    `[` take seconds) before its recursion fails, so this is checked first; brackets inside quoted strings
    count too, which only makes the bound stricter for an absurd value."""
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return False
    depth = 0
    for c in text.translate(_BRACKETS):
        if c in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return True
        elif c in "]}" and depth:
            depth -= 1
    return False


_DEEP = f"nested too deeply (lists or mappings more than {MAX_FLOW_DEPTH} levels inside each other)"
MAX_VALUE_CHARS = 64 << 10    # one --set value; a whole inline topology fits in far less


def load_value(text: str) -> Any:
    """One YAML value given on the command line (`--set PATH=VALUE`), bounded like a file: at most
    MAX_VALUE_CHARS, text (not bytes the shell passed through undecoded), no alias bomb, not nested past the
    stack, no number of thousands of digits. Raises ValueError with a one-line message."""
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(f"value is {len(text):,} characters: expected at most {MAX_VALUE_CHARS:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:      # argv bytes that were not UTF-8 arrive as lone surrogates
        raise ValueError(f"not text: character {e.start} is not UTF-8") from None
    if _too_deep(text):
        raise ValueError(f"invalid YAML value: {_DEEP}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            raise ValueError(f"invalid YAML value: its aliases expand to more than {MAX_EXPANDED_VALUES:,} values "
                             f"(an alias bomb?)")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"invalid YAML value: {getattr(e, 'problem', None) or e}") from None
    except RecursionError as e:
        raise ValueError(f"invalid YAML value: {_unparsable(e)}") from None
    except ValueError as e:
        if str(e).startswith("invalid YAML value"):
            raise
        raise ValueError(f"invalid YAML value: {_unparsable(e)}") from None


def load_document(path: str | Path) -> Document:
    file = str(path)
    try:
        text = read_text(path, MAX_DOCUMENT_BYTES, "a YAML file of fields")
    except UnreadableInput as e:
        why = str(e)
        if why.startswith("not a text file"):   # the wording every bad-file message has used for a binary one
            why = why.replace("expected a YAML file of fields", "expected YAML")
        raise ConfigError([Problem(file, "", why)]) from None
    if _too_deep(text):
        raise ConfigError([Problem(file, "", f"invalid YAML: {_DEEP}")])
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        if node is not None and _expanded_size(node, {}) > MAX_EXPANDED_VALUES:
            raise ConfigError([Problem(file, "", f"invalid YAML: its aliases expand to more than "
                                                 f"{MAX_EXPANDED_VALUES:,} values (an alias bomb?)")])
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        what = e.problem or str(e)
        if e.context and e.context_mark and e.context_mark.line + 1 != line:   # e.g. where an unclosed { began
            what += f" ({e.context} that starts on line {e.context_mark.line + 1})"
        raise ConfigError([Problem(file, "", f"invalid YAML: {what}", line)]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(file, "", f"invalid YAML: {e}")]) from None
    except (RecursionError, ValueError) as e:
        raise ConfigError([Problem(file, "", f"invalid YAML: {_unparsable(e)}")]) from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    if data is None:
        raise ConfigError([Problem(file, "", "file is empty: expected a mapping of fields")])
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "", f"expected a mapping of fields at the top level, "
                                             f"got {type(data).__name__}", lines.get((), 1))])
    return Document(file, data, lines)


def _describe(err: dict) -> str:
    """Turn one pydantic error into 'expected …, got …' wording."""
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see the schema in the docs)"
    if kind == "literal_error":
        expected = msg.removeprefix("Input should be ")
        return f"expected one of {expected}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        expected = msg.removeprefix("Input should be ")
        return f"expected a number {expected}, got {value!r}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = msg.removeprefix("Input should be ")
        return f"expected {expected}, got {value!r}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx") or {}
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return (f"expected {'at least' if kind == 'too_short' else 'at most'} {bound} "
                f"item{'' if bound == 1 else 's'}, got {ctx.get('actual_length')}")
    if kind == "int_from_float":
        return f"expected a whole number, got {value!r}"
    for prefix in ("Input should be ", "Input is not "):   # e.g. "Input is not a valid IPv4 address"
        if msg.startswith(prefix):
            return f"expected {msg.removeprefix(prefix)}, got {value!r}"
    return f"{msg}, got {value!r}"


def validate(doc: Document, model: type[M], checks: Callable[[M], list[tuple[Loc, str]]] | None = None) -> M:
    """Validate `doc` against `model`, then run cross-field `checks`; raise ConfigError with every problem."""
    try:
        obj = model.model_validate(doc.data)
    except pydantic.ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            problems.append(doc.problem(loc, _describe(err)))
        raise ConfigError(problems) from None
    if checks:
        found = checks(obj)
        if found:
            raise ConfigError([doc.problem(loc, msg) for loc, msg in found])
    return obj
