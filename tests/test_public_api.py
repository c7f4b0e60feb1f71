"""``import memwarden`` gives a plugin author everything they need, and stays cheap."""

from __future__ import annotations

import enum
import inspect
import subprocess
import sys

import attrs

import memwarden
from memwarden.core import errors, types


def test_every_name_in_all_resolves():
    missing = [name for name in memwarden.__all__ if getattr(memwarden, name, None) is None]
    assert missing == []


def test_every_data_type_is_exported():
    public = {
        name
        for name, value in vars(types).items()
        if inspect.isclass(value)
        and value.__module__ == types.__name__
        and (attrs.has(value) or issubclass(value, enum.Enum))
    }
    assert public - set(memwarden.__all__) == set()


def test_every_error_is_exported():
    public = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.MemwardenError)
    }
    assert public - set(memwarden.__all__) == set()


def test_exports_are_the_objects_their_modules_define():
    from memwarden.core.config import Config
    from memwarden.core.providers import Provider
    from memwarden.core.serialize import to_data
    from memwarden.hookspecs import hookimpl

    assert (memwarden.Config, memwarden.Provider, memwarden.to_data, memwarden.hookimpl) == (
        Config,
        Provider,
        to_data,
        hookimpl,
    )


def test_an_unknown_name_is_an_attribute_error_naming_it():
    try:
        memwarden.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert str(exc) == "module 'memwarden' has no attribute 'NoSuchThing'"
    else:
        raise AssertionError("memwarden.NoSuchThing resolved")


def test_import_memwarden_loads_neither_the_types_nor_the_config():
    code = (
        "import sys, memwarden; "
        "print(sorted(m for m in ('memwarden.core.types', 'memwarden.core.config', 'cattrs') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_method_internals_md_calls_stable_exists():
    import re
    from pathlib import Path

    from memwarden.core.warden import Warden

    text = (Path(__file__).parent.parent / "docs" / "internals.md").read_text()
    owners = {
        "Config": memwarden.Config,
        "Provider": memwarden.Provider,
        "StrategyContext": memwarden.StrategyContext,
        "Warden": Warden,
    }
    named = set(re.findall(r"`(Config|Provider|StrategyContext|Warden)\.(\w+)", text))
    instance_fields = {
        (owner, f.name)
        for owner in ("Config", "StrategyContext")
        for f in attrs.fields(owners[owner])
    }
    missing = sorted(
        f"{owner}.{name}"
        for owner, name in named
        if (owner, name) not in instance_fields
        and not hasattr(owners[owner], name)
        and name not in _set_in_init(owners[owner])
        and name not in owners[owner].__annotations__
    )
    assert missing == []


def _set_in_init(cls) -> set[str]:
    import re

    if cls.__init__ is object.__init__:
        return set()
    return set(re.findall(r"self\.(\w+) = ", inspect.getsource(cls.__init__)))
