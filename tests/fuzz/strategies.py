"""What the fuzz suite generates, seeded by captured traffic (``tests/fixtures``): mutated
xml_curl bodies, stored values of every JSON shape (deep nesting, every type, control and
non-character code points, bytes that are not UTF-8) and hostile API inputs."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

from hypothesis import strategies as st

from tests.support import SEED_DIR, decode_form, xml_curl_fixtures

CASES: Counter[str] = Counter()
"""Examples run per property (each property's body counts itself once per call)."""

BODIES = [body for _, body in xml_curl_fixtures()]
SEED_VALUE: dict[str, Any] = json.loads((SEED_DIR / "extension-value.json").read_text())

# Text with what breaks parsers and documents: controls, non-characters, surrogates'
# neighbours, XML specials, long runs.
NASTY_CHARS = st.sampled_from(
    ["\x00", "\x01", "\x08", "\x0b", "\x1f", "\x7f", "\x85", "\ufffe", "\uffff", "\ud7ff",
     "\ue000", "<", ">", "&", '"', "'", "%", "+", "=", "&", "\n", "\r", "\t", " ", "é",
     "😀", "/", "\\", "*", "[", "{"]
)  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=NASTY_CHARS, max_size=10),
    st.lists(st.one_of(st.text(max_size=5), NASTY_CHARS), max_size=8).map("".join),
)
NAMES = st.one_of(st.sampled_from(["password", "a1-hash", "number-alias", "cidr", "callgroup",
                                   "id", "dial-string", "cacheable", "mailbox"]), TEXT)  # fmt: skip


def _deep(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(NAMES, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def stored_documents(draw: st.DrawFn) -> bytes:
    """A value as it may sit in a ``cti_exten@`` / ``cti_template`` / ``cti_domain`` field."""
    kind = draw(st.integers(0, 6))
    if kind == 0:  # any JSON at all
        return json.dumps(draw(JSON_VALUES), allow_nan=True).encode()
    if kind == 1:  # deep nesting, alone or inside an otherwise good entry
        depth = draw(st.one_of(st.integers(900, 5000), st.just(100_000)))
        deep = _deep(depth, *draw(st.sampled_from(["[]", "{}"])))
        if deep.startswith("{"):
            deep = '{"a":' * 2000 + "1" + "}" * 2000
        return ('{"template": "t", "attribute": {"number-alias": "9"}, "x": ' + deep + "}").encode()
    if kind == 2:  # raw bytes, likely not UTF-8 and not JSON
        return draw(st.binary(max_size=60))
    # the seed's own shape with mutated sections
    document: dict[str, Any] = json.loads(json.dumps(SEED_VALUE))
    for section in draw(st.lists(st.sampled_from(["param", "variable", "attribute"]), max_size=3)):
        document[section] = draw(
            st.one_of(
                st.dictionaries(NAMES, JSON_SCALARS, max_size=4),
                JSON_VALUES,
            )
        )
    if draw(st.booleans()):
        document["template"] = draw(st.one_of(st.just("t"), JSON_VALUES))
    text = json.dumps(document, allow_nan=True, ensure_ascii=draw(st.booleans()))
    try:
        return text.encode("utf-8", "surrogatepass")
    except UnicodeEncodeError:  # pragma: no cover - surrogatepass encodes everything
        return text.encode("utf-8", "replace")


STORED_IDS = st.one_of(
    st.from_regex(r"[0-9]{4}", fullmatch=True),
    TEXT.filter(bool),
    st.binary(min_size=1, max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


@st.composite
def xml_curl_bodies(draw: st.DrawFn) -> bytes:
    """A captured mod_xml_curl body, mutated: fields replaced, dropped, repeated or
    garbled, bytes inserted or cut."""
    pairs = decode_form(draw(st.sampled_from(BODIES)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 4))
        if not pairs:
            break
        index = draw(st.integers(0, len(pairs) - 1))
        name = pairs[index][0]
        if op == 0:
            pairs[index] = (name, draw(TEXT))
        elif op == 1:
            del pairs[index]
        elif op == 2:
            pairs.insert(0, (name, draw(TEXT)))  # a duplicate ahead of the original
        elif op == 3:
            users = st.sampled_from(["1000", "1001", "1002", "AL1001", "al1001", "9"])
            pairs[index] = (name, draw(st.one_of(users, TEXT)))
        else:
            pairs.append((draw(NAMES), draw(TEXT)))
    body = "&".join(f"{quote_plus(n)}={quote_plus(v)}" for n, v in pairs).encode(
        "utf-8", "surrogatepass"
    )
    if draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=20)) + body[cut:]
    return body
