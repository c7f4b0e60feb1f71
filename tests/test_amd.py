"""The amd plugin against an amdgpu sysfs tree (values from published readings, see README)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memwarden.core.config import parse_config_data
from memwarden.core.types import DeviceUnavailable, PoolKind
from memwarden.plugins import amd

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def fresh_cards():
    amd.forget_cards()
    yield
    amd.forget_cards()


def detect(root: Path):
    return amd.detect_device(
        config=parse_config_data({"plugins": {"amd": {"root": str(root)}}}, None)
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    return Path(shutil.copytree(FIXTURES / "amd_sysfs", tmp_path / "root"))


def test_each_card_with_vram_is_a_pool_in_card_order():
    pools = detect(FIXTURES / "amd_sysfs")
    assert [p.id for p in pools] == ["rocm:card0", "rocm:card1"]
    assert {p.kind for p in pools} == {PoolKind.GPU}


def test_vram_total_used_and_available_come_from_sysfs():
    card0 = detect(FIXTURES / "amd_sysfs")[0]
    assert (card0.total_bytes, card0.used_bytes) == (17163091968, 692142080)
    assert card0.available_bytes == 17163091968 - 692142080


def test_card_without_product_name_is_named_after_its_card():
    assert detect(FIXTURES / "amd_sysfs")[0].name == "AMD GPU (card0)"


def test_product_name_is_used_where_the_driver_exposes_it(tree):
    product = tree / "sys/class/drm/card0/device/product_name"
    product.write_text("AMD Radeon RX 6800 XT\n")
    assert detect(tree)[0].name == "AMD Radeon RX 6800 XT"


def test_card_numbers_sort_numerically(tree):
    card10 = tree / "sys/class/drm/card10/device"
    card10.mkdir(parents=True)
    (card10 / "mem_info_vram_total").write_text("1024\n")
    (card10 / "mem_info_vram_used").write_text("0\n")
    assert [p.id for p in detect(tree)] == ["rocm:card0", "rocm:card1", "rocm:card10"]


def test_no_amdgpu_card_is_unavailable_naming_the_files_it_looked_for(tmp_path):
    result = detect(tmp_path)
    assert isinstance(result, DeviceUnavailable)
    assert result.reason == (
        f"no amdgpu card with VRAM: no {tmp_path}/sys/class/drm/card*/device/mem_info_vram_total"
    )


def test_unreadable_usage_file_is_unavailable_with_the_reason(tree):
    for card in ("card0", "card1"):
        (tree / f"sys/class/drm/{card}/device/mem_info_vram_used").unlink()
    result = detect(tree)
    assert isinstance(result, DeviceUnavailable)
    assert "card0: cannot read" in result.reason


def test_usage_changes_are_seen_by_the_next_snapshot(tree):
    detect(tree)
    (tree / "sys/class/drm/card0/device/mem_info_vram_used").write_text("1073741824\n")
    assert detect(tree)[0].used_bytes == 1073741824
