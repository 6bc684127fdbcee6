"""Specification: declaration mistakes fail early, with messages that name the model,
the field and the column, and say how to fix them."""

from __future__ import annotations

import sys
import types
import uuid
from typing import Any

import pytest
from tortoise import Tortoise, fields
from tortoise.models import Model

from tortoise_counter_cache import (
    CounterCacheMixin,
    CounterDeclarationError,
    async_counter_cache,
)


async def init_with(*models: type[Model]) -> None:
    """Initialise Tortoise in memory with just these models."""
    name = f"declared_models_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    module.__models__ = list(models)  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        await Tortoise.init(db_url="sqlite://:memory:", modules={"declared": [name]})
    finally:
        del sys.modules[name]
        await Tortoise.close_connections()


def parent(**columns: Any) -> type[Model]:
    attrs: dict[str, Any] = {"id": fields.IntField(primary_key=True), **columns}
    attrs["Meta"] = type("Meta", (), {"app": "declared"})
    return type("Parent", (CounterCacheMixin, Model), attrs)


def child(fk: Any, base: tuple[type, ...] = (CounterCacheMixin, Model)) -> type[Model]:
    meta = type("Meta", (), {"app": "declared"})
    return type(
        "Child",
        base,
        {"id": fields.IntField(primary_key=True), "parent": fk, "Meta": meta},
    )


def test_async_counter_cache_rejects_a_field_that_is_not_a_foreign_key() -> None:
    """Wrapping anything but a ForeignKeyField fails at class creation."""
    with pytest.raises(
        CounterDeclarationError, match="needs a ForeignKeyField, got CharField"
    ):
        async_counter_cache(fields.CharField(max_length=5))


def test_async_counter_cache_rejects_a_column_that_is_not_a_name() -> None:
    """A column that is not an identifier is refused with the value shown."""
    with pytest.raises(CounterDeclarationError, match=r"column='bad column'"):
        async_counter_cache(fields.ForeignKeyField("declared.Parent"), "bad column")


def test_async_counter_cache_returns_the_same_field() -> None:
    """The wrapper marks the field and hands back the very same object."""
    field = fields.ForeignKeyField("declared.Parent")
    assert async_counter_cache(field) is field


async def test_init_rejects_a_missing_column() -> None:
    """A parent without the counter column fails Tortoise.init, naming both sides."""
    fk = async_counter_cache(
        fields.ForeignKeyField("declared.Parent", related_name="children")
    )
    with pytest.raises(
        CounterDeclarationError,
        match=r"Parent has no column 'children_count' for the counter declared on "
        r"Child.parent; add children_count = fields.IntField\(default=0\)",
    ):
        await init_with(parent(), child(fk))


async def test_init_rejects_a_column_that_is_not_an_integer() -> None:
    """A counter column that is not an integer field fails Tortoise.init."""
    fk = async_counter_cache(fields.ForeignKeyField("declared.Parent"), "label")
    with pytest.raises(
        CounterDeclarationError,
        match=r"Parent.label is a CharField, not an integer column, so it cannot hold "
        r"the counter declared on Child.parent",
    ):
        await init_with(parent(label=fields.CharField(max_length=10)), child(fk))


async def test_init_rejects_the_same_column_declared_twice() -> None:
    """Two foreign keys counted into one column fail Tortoise.init, naming both."""
    meta = type("Meta", (), {"app": "declared"})
    twice = type(
        "Child",
        (CounterCacheMixin, Model),
        {
            "id": fields.IntField(primary_key=True),
            "author": async_counter_cache(
                fields.ForeignKeyField("declared.Parent", related_name="a"), "n"
            ),
            "editor": async_counter_cache(
                fields.ForeignKeyField("declared.Parent", related_name="b"), "n"
            ),
            "Meta": meta,
        },
    )
    with pytest.raises(
        CounterDeclarationError,
        match=r"Parent.n is declared as a counter twice, by Child.author and "
        r"Child.editor",
    ):
        await init_with(parent(n=fields.IntField(default=0)), twice)


async def test_init_rejects_a_counted_child_without_the_mixin() -> None:
    """A counted foreign key on a model without the mixin fails Tortoise.init."""
    fk = async_counter_cache(fields.ForeignKeyField("declared.Parent"), "n")
    with pytest.raises(
        CounterDeclarationError,
        match=r"Child.parent is declared with "
        r"async_counter_cache but Child does not inherit CounterCacheMixin",
    ):
        await init_with(parent(n=fields.IntField(default=0)), child(fk, (Model,)))


async def test_init_rejects_a_parent_without_the_mixin() -> None:
    """A parent without the mixin would write stale counts back, so it is refused."""
    fk = async_counter_cache(fields.ForeignKeyField("declared.Parent"), "n")
    meta = type("Meta", (), {"app": "declared"})
    bare_parent = type(
        "Parent",
        (Model,),
        {
            "id": fields.IntField(primary_key=True),
            "n": fields.IntField(default=0),
            "Meta": meta,
        },
    )
    with pytest.raises(
        CounterDeclarationError,
        match=r"Parent holds the counter declared on Child.parent but does not "
        r"inherit CounterCacheMixin",
    ):
        await init_with(bare_parent, child(fk))


async def test_init_defaults_the_column_to_the_related_name() -> None:
    """Without a column, `<related_name>_count` is used, and Tortoise's own default
    related name when none is given."""
    fk = async_counter_cache(fields.ForeignKeyField("declared.Parent"))
    parent_model = parent(childs_count=fields.IntField(default=0))
    child_model = child(fk)
    await init_with(parent_model, child_model)
    (spec,) = child_model._cc_specs  # type: ignore[attr-defined]
    assert (spec.parent, spec.column) == (parent_model, "childs_count")
    assert parent_model._cc_counter_columns == {"childs_count"}  # type: ignore[attr-defined]
