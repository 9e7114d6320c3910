"""``PromptCacheLangChainCache``: a LangChain ``BaseCache`` over any promptcache store.

Entries are keyed on LangChain's ``(prompt, llm_string)`` pair through
:func:`promptcache.keys.langchain_key` and hold the generations serialised
exactly as ``langchain_core.load.dumps`` writes them, so ``ChatGeneration``/
``AIMessage`` round-trip identically and the values stay readable by LangChain
itself.

Both directions have a fast path for the generation and message classes chat
models return. Writing does what ``Serializable.to_json`` and ``dumps`` do
(same fields kept, same order, same escaping of user dicts holding an ``"lc"``
key, byte-for-byte the same JSON) with each class's fields, defaults, id and
``lc_attributes`` worked out once instead of on every call; anything else
(other classes, secrets, values JSON cannot hold) goes through ``dumps``
itself. Reading performs the same ``cls(**kwargs)`` LangChain's reviver does,
without its per-call allow-list set-up; anything else falls back to
``langchain_core.load.loads`` restricted to langchain-core classes.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from promptcache._extras import needs_extra

with needs_extra("langchain"):  # names pip install 'promptcache[langchain]' when missing
    from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
    from langchain_core.load import dumps, loads
    from langchain_core.load.serializable import Serializable
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.outputs import (
        ChatGeneration,
        ChatGenerationChunk,
        Generation,
        GenerationChunk,
    )
    from pydantic.fields import FieldInfo
    from pydantic_core import PydanticUndefined

from promptcache.keys import langchain_key
from promptcache.store import ResponseStore, StoredEntry, open_store
from promptcache.store.base import validate_ttl

logger = logging.getLogger(__name__)

_FAST_CLASSES: dict[tuple[str, ...], type[Serializable]] = {
    tuple(cls.lc_id()): cls
    for cls in (
        Generation,
        GenerationChunk,
        ChatGeneration,
        ChatGenerationChunk,
        AIMessage,
        AIMessageChunk,
        HumanMessage,
        SystemMessage,
        ToolMessage,
        FunctionMessage,
        ChatMessage,
    )
}


class PromptCacheLangChainCache(BaseCache):
    """LangChain's LLM cache interface over a promptcache store (sync and async).

    ``store`` is a :class:`~promptcache.store.ResponseStore` or a store URL
    (``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``).
    ``namespace`` partitions one store between several caches; ``ttl``
    (seconds) overrides the store's own default.
    """

    def __init__(
        self, store: ResponseStore | str, *, namespace: str = "", ttl: float | None = None
    ) -> None:
        self.store = open_store(store) if isinstance(store, str) else store
        self.namespace = namespace
        self.ttl = validate_ttl(ttl)

    def _key(self, prompt: str, llm_string: str) -> str:
        return langchain_key(prompt, llm_string, namespace=self.namespace)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self._decode(self.store.get(self._key(prompt, llm_string)))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value = _encode(return_val)
        if value is not None:
            self.store.put(self._key(prompt, llm_string), value, ttl=self.ttl)

    def clear(self, **kwargs: Any) -> None:
        """Remove every entry of the underlying store (not only this namespace's)."""
        self.store.clear()

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self._decode(await self.store.aget(self._key(prompt, llm_string)))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        value = _encode(return_val)
        if value is not None:
            await self.store.aput(self._key(prompt, llm_string), value, ttl=self.ttl)

    async def aclear(self, **kwargs: Any) -> None:
        await self.store.aclear()

    def close(self) -> None:
        self.store.close()

    def _decode(self, entry: StoredEntry | None) -> RETURN_VAL_TYPE | None:
        if entry is None:
            return None
        try:
            return decode_generations(entry.value)
        except Exception as exc:  # an entry we cannot read is a miss, never an error
            logger.warning("promptcache: ignoring unreadable LangChain cache entry: %s", exc)
            return None


def encode_generations(generations: Sequence[Generation]) -> bytes:
    """The stored form: ``langchain_core.load.dumps`` of the list, UTF-8."""
    try:
        serialized = _serialize(list(generations))
    except _NotFast:
        return dumps(list(generations)).encode("utf-8")
    return json.dumps(serialized).encode("utf-8")


def decode_generations(value: bytes) -> list[Generation]:
    """Inverse of :func:`encode_generations`."""
    text = value.decode("utf-8")
    try:
        revived = _FAST_DECODER.decode(text)
    except Exception:  # _NotFast, or anything the general loader may handle differently
        revived = loads(text, allowed_objects="core")
    if not isinstance(revived, list) or not all(isinstance(g, Generation) for g in revived):
        raise ValueError("the entry does not hold a list of LangChain generations")
    return revived


def _encode(return_val: RETURN_VAL_TYPE) -> bytes | None:
    value = encode_generations(return_val)
    # dumps() marks what it cannot serialise instead of failing; such an entry
    # could never be read back, so it is not stored (like LangChain's Redis cache).
    if b'"type": "not_implemented"' in value or b'"type":"not_implemented"' in value:
        logger.warning("promptcache: LangChain generation is not serialisable; not cached")
        return None
    return value


class _NotFast(Exception):
    """The value needs LangChain's general serialiser or reviver."""


# -- writing: Serializable.to_json + dumps, with the per-class work done once ----------

_JSON_SCALARS = (str, int, float, bool, type(None))
_LC_ESCAPED = "__lc_escaped__"
_UNKNOWN_DEFAULT = object()
"""A field default LangChain cannot compute: any falsy value then counts as set."""


@dataclass(frozen=True, slots=True)
class _FieldPlan:
    required: bool
    empty_factory: type | None
    """``dict`` or ``list`` when the field's default factory is that type."""
    default: Any


@dataclass(frozen=True, slots=True)
class _ClassPlan:
    lc_id: list[str]
    fields: dict[str, _FieldPlan]
    """The serialisable fields (not ``exclude``-d), by name."""
    attribute_getters: tuple[Callable[[Any], dict[str, Any]], ...]
    """The ``lc_attributes`` properties ``to_json`` merges in, in its order."""


def _class_plan(cls: type[Serializable]) -> _ClassPlan | None:
    """What ``cls.to_json`` depends on besides the instance's values; None: use ``dumps``."""
    mro = cls.mro()
    own = mro[: mro.index(Serializable)]
    if (
        not cls.is_lc_serializable()
        # to_json raises for these, and secrets need its _replace_secrets: leave both to it.
        or any(hasattr(c, "lc_namespace") or hasattr(c, "lc_serializable") for c in own)
        or any("lc_secrets" in vars(c) for c in own)
    ):
        return None
    getters: list[Callable[[Any], dict[str, Any]]] = []
    # to_json reads self.lc_attributes, then super(c, self).lc_attributes for each
    # class c before Serializable: the lookup starting at each MRO position in turn.
    for start in range(len(own) + 1):
        owner = next(c for c in mro[start:] if "lc_attributes" in vars(c))
        prop = vars(owner)["lc_attributes"]
        if not isinstance(prop, property) or prop.fget is None:
            return None
        if owner is not Serializable and (not getters or getters[-1] is not prop.fget):
            getters.append(prop.fget)
    fields = {
        name: _field_plan(field) for name, field in cls.model_fields.items() if not field.exclude
    }
    # to_json writes getattr(self, name): the stored value unless a data descriptor hides it.
    if any(_is_data_descriptor(inspect.getattr_static(cls, name, None)) for name in fields):
        return None
    return _ClassPlan(list(cls.lc_id()), fields, tuple(getters))


def _is_data_descriptor(attribute: object) -> bool:
    return hasattr(type(attribute), "__set__") or hasattr(type(attribute), "__delete__")


def _field_plan(field: FieldInfo) -> _FieldPlan:
    try:  # as langchain_core.load.serializable._get_field_default
        default = field.get_default()
        if default is PydanticUndefined and field.default_factory is not None:
            default = None
    except Exception:
        default = _UNKNOWN_DEFAULT
    factory = field.default_factory if field.default_factory in (dict, list) else None
    return _FieldPlan(field.is_required(), factory, default)


_CLASS_PLANS: dict[type, _ClassPlan] = {
    cls: plan for cls in _FAST_CLASSES.values() if (plan := _class_plan(cls)) is not None
}


def _serialize(value: Any) -> Any:
    """``langchain_core.load._validation._serialize_value``, raising _NotFast where it
    would write a "not implemented" marker or needs the class's own ``to_json``."""
    if type(value) is str:
        return value
    if isinstance(value, Serializable):
        return _serialize_object(value)
    if isinstance(value, dict):
        if not all(isinstance(k, _JSON_SCALARS) for k in value):
            raise _NotFast
        if "lc" in value or (len(value) == 1 and _LC_ESCAPED in value):
            return {_LC_ESCAPED: value}  # user data that looks like a LangChain object
        return {k: _serialize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialize(item) for item in value]
    if isinstance(value, _JSON_SCALARS):
        return value
    raise _NotFast


def _serialize_object(obj: Serializable) -> dict[str, Any]:
    plan = _CLASS_PLANS.get(type(obj))
    if plan is None:
        raise _NotFast
    kwargs: dict[str, Any] = {}
    for name, value in obj.__dict__.items():
        field = plan.fields.get(name)
        if field is not None and (field.required or _is_useful(field, value)):
            kwargs[name] = value
    for getter in plan.attribute_getters:
        kwargs.update(getter(obj))
    return {
        "lc": 1,
        "type": "constructor",
        "id": plan.lc_id,
        "kwargs": {name: _serialize(value) for name, value in kwargs.items()},
    }


def _is_useful(field: _FieldPlan, value: Any) -> bool:
    """``langchain_core.load.serializable._is_field_useful`` for a field that is not required."""
    try:
        if value:
            return True
    except Exception:
        pass
    if field.empty_factory is not None and isinstance(value, field.empty_factory):
        return False
    if field.default is _UNKNOWN_DEFAULT:
        return True
    try:
        return bool(field.default != value)
    except Exception:  # LangChain retries with all(...): leave such values to it
        raise _NotFast from None


def _agrees_with_dumps() -> bool:
    """Does the fast writer match this langchain-core's ``dumps`` on typical values?

    It mirrors one version's ``to_json``/``dumps`` (for instance the escaping of user
    dicts holding an ``"lc"`` key, which older versions neither write nor read);
    should the installed one write anything differently, every value goes to ``dumps``.
    """
    probe = [
        ChatGeneration(
            message=AIMessage(
                content=[{"type": "text", "text": "hi"}],
                name="",
                id="run-1",
                additional_kwargs={"user": {"lc": 1, "id": ["x"]}},
                response_metadata={"finish_reason": "stop"},
                tool_calls=[{"name": "f", "args": {"q": (1, 2.5)}, "id": "c1"}],
                usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
            ),
            generation_info={},
        ),
        ChatGenerationChunk(message=AIMessageChunk(content="", chunk_position="last")),
        Generation(text="", generation_info={"__lc_escaped__": None, "n": None}),
    ]
    try:
        return json.dumps(_serialize(probe)) == dumps(probe)
    except Exception:
        return False


if not _agrees_with_dumps():  # pragma: no cover - depends on the installed langchain-core
    _CLASS_PLANS.clear()


# -- reading -----------------------------------------------------------------------


def _revive_node(node: dict[str, Any]) -> Any:
    """``json.loads`` object hook: called children-first, the order LangChain's loader uses."""
    if _LC_ESCAPED in node:
        # User data that merely looks like a LangChain object; its inside was
        # already (wrongly) revived by this bottom-up hook, so start over.
        raise _NotFast
    if "lc" not in node:
        return node
    if node.get("lc") != 1 or node.get("type") != "constructor":
        raise _NotFast
    cls = _FAST_CLASSES.get(tuple(node.get("id") or ()))
    if cls is None:
        raise _NotFast
    return cls(**node.get("kwargs", {}))


# One decoder for every read (like json.loads' own default one) instead of one per call.
_FAST_DECODER = json.JSONDecoder(object_hook=_revive_node)


__all__ = ["PromptCacheLangChainCache", "decode_generations", "encode_generations"]
