"""Declaring counters: `async_counter_cache()` on a foreign key, and the registry
that resolves every declaration once Tortoise knows the related models.

Declarations are checked twice: what can be seen on the field is checked when the
model class is created; the parent and its column are checked at `Tortoise.init`,
which calls `resolve_counters()` right after it links the models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from tortoise import fields
from tortoise.fields.relational import ForeignKeyFieldInstance
from tortoise.models import Model

from .exceptions import CounterDeclarationError, UnknownCounterError
from .keys import CounterRef

__all__ = [
    "CounterSpec",
    "async_counter_cache",
    "counter_ref",
    "model_label",
    "resolve_counters",
]

logger = logging.getLogger(__name__)

_MARK = "_counter_cache_column"
_UNSET = object()
INTEGER_FIELDS = (fields.IntField, fields.BigIntField, fields.SmallIntField)

FieldT = TypeVar("FieldT")


def async_counter_cache(field: FieldT, column: str | None = None) -> FieldT:
    """Count the rows of this model on the parent the foreign key points to.

    The parent's `column` (default `<related_name>_count`) is kept equal to the
    number of children: saves and deletes record a delta in Redis, and a worker
    applies the sum later with one UPDATE.

    Args:
        field: A `fields.ForeignKeyField(...)`; it is returned unchanged, marked.
        column: Integer column on the parent model that holds the count.

    Raises:
        CounterDeclarationError: `field` is not a ForeignKeyField, or `column` is not
            a valid column name.
    """
    if not isinstance(field, ForeignKeyFieldInstance):
        raise CounterDeclarationError(
            f"async_counter_cache() needs a ForeignKeyField, got "
            f"{type(field).__name__}; wrap fields.ForeignKeyField(...) instead."
        )
    if column is not None and (
        not isinstance(column, str) or not column.isidentifier()
    ):
        raise CounterDeclarationError(
            f"async_counter_cache() got column={column!r}; pass the name of an integer "
            "field of the parent model, or None for <related_name>_count."
        )
    setattr(field, _MARK, column)
    return field


def declared_column(field: Any) -> Any:
    """The column given to `async_counter_cache`, None for the default, or `_UNSET`."""
    return getattr(field, _MARK, _UNSET)


@dataclass(frozen=True, slots=True)
class CounterSpec:
    """One counter cache: `child.fk_name` counted in `parent.column`."""

    child: type[Model]
    fk_name: str
    source_field: str
    """The child's `<fk>_id` attribute."""
    parent: type[Model]
    column: str
    lookup: str | None
    """Parent field the foreign key targets, None when it is the primary key."""

    def ref(self, value: Any) -> CounterRef:
        label = model_label(self.parent)
        return CounterRef(label, self.column, _key_value(value), self.lookup)


def model_label(model: type[Model]) -> str:
    """`app.Model`, the name under which Tortoise registers a model."""
    return f"{model._meta.app}.{model.__name__}"


def connection_name(model: type[Model]) -> str | None:
    """The name of the connection `model` writes through (None before init)."""
    name = model._meta.default_connection
    return name if isinstance(name, str) else None


def counter_ref(model: type[Model], column: str, value: Any) -> CounterRef:
    return CounterRef(model_label(model), column, _key_value(value))


def _key_value(value: Any) -> int | str:
    """Keys travel as int or str: a UUID or other key type is sent as its text, which
    Tortoise converts back when it filters on the key."""
    return value if type(value) is int or type(value) is str else str(value)


def resolve_counters(models: Iterable[type[Model]]) -> None:
    """Check every declaration and attach the resolved specs to the models.

    Called by `Tortoise.init` (through the hook in `hooks.py`) after relations are
    linked. Sets `_cc_specs` on each counted child and `_cc_counter_columns` on each
    parent.
    """
    from .mixin import CounterCacheMixin

    models = list(models)
    specs: list[CounterSpec] = []
    for model in models:
        for fk_name in sorted(model._meta.fk_fields):
            field = model._meta.fields_map[fk_name]
            column = declared_column(field)
            if column is _UNSET:
                continue
            spec = _resolve_one(model, fk_name, field, column)
            if not issubclass(model, CounterCacheMixin):
                raise CounterDeclarationError(
                    f"{model.__name__}.{fk_name} is declared with async_counter_cache "
                    f"but {model.__name__} does not inherit CounterCacheMixin; declare "
                    f"it as class {model.__name__}(CounterCacheMixin, Model)."
                )
            specs.append(spec)
    _reject_duplicates(specs)
    for model in models:
        if issubclass(model, CounterCacheMixin):
            model._cc_specs = tuple(s for s in specs if s.child is model)
            model._cc_counter_columns = frozenset(
                s.column for s in specs if s.parent is model
            )
    logger.debug("counters resolved count=%d", len(specs))


def _resolve_one(
    model: type[Model], fk_name: str, field: Any, column: Any
) -> CounterSpec:
    parent = field.related_model
    if column is None:
        if field.related_name is False:
            raise CounterDeclarationError(
                f"{model.__name__}.{fk_name} has related_name=False, so its counter "
                "has no default column; pass one: "
                "async_counter_cache(field, 'children_count')."
            )
        column = f"{field.related_name or model._meta.db_table + 's'}_count"
    target = parent._meta.fields_map.get(column)
    where = f"the counter declared on {model.__name__}.{fk_name}"
    if target is None:
        raise CounterDeclarationError(
            f"{parent.__name__} has no column '{column}' for {where}; add "
            f"{column} = fields.IntField(default=0) to {parent.__name__} or pass "
            "another column name."
        )
    if not isinstance(target, INTEGER_FIELDS) or target.pk:
        raise CounterDeclarationError(
            f"{parent.__name__}.{column} is a {type(target).__name__}, not an integer "
            f"column, so it cannot hold {where}; make it fields.IntField(default=0)."
        )
    if not issubclass(parent, _mixin()):
        raise CounterDeclarationError(
            f"{parent.__name__} holds {where} but does not inherit "
            "CounterCacheMixin, so its own save() would write stale counts back; "
            "declare it as "
            f"class {parent.__name__}(CounterCacheMixin, Model)."
        )
    lookup = None if field.to_field == parent._meta.pk_attr else field.to_field
    return CounterSpec(model, fk_name, field.source_field, parent, column, lookup)


def _reject_duplicates(specs: list[CounterSpec]) -> None:
    seen: dict[tuple[type[Model], str], CounterSpec] = {}
    for spec in specs:
        other = seen.setdefault((spec.parent, spec.column), spec)
        if other is not spec:
            raise CounterDeclarationError(
                f"{spec.parent.__name__}.{spec.column} is declared as a counter "
                "twice, by "
                f"{other.child.__name__}.{other.fk_name} and {spec.child.__name__}."
                f"{spec.fk_name}; give one of them another column."
            )


def _mixin() -> type:
    from .mixin import CounterCacheMixin

    return CounterCacheMixin


def integer_column(model: type[Model], column: str) -> None:
    """Raise UnknownCounterError unless `column` is an integer column of `model`."""
    field = model._meta.fields_map.get(column)
    if field is None or not isinstance(field, INTEGER_FIELDS) or field.pk:
        valid = sorted(
            name
            for name, f in model._meta.fields_map.items()
            if isinstance(f, INTEGER_FIELDS) and not f.pk
        )
        what = "no column" if field is None else "no integer column"
        raise UnknownCounterError(
            f"{model.__name__} has {what} '{column}'; integer columns are: "
            f"{', '.join(valid) or 'none'}."
        )
