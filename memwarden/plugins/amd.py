"""AMD GPUs on Linux through the amdgpu driver's sysfs files: one pool per card with VRAM.

``/sys/class/drm/card*/device/mem_info_vram_total`` and ``mem_info_vram_used`` hold bytes; the
card's marketing name comes from ``product_name`` where the driver exposes it. Which cards have
these files is found once per root (``[plugins.amd] root``, default "/"); a snapshot then reads
two small files per card.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import attrs

from memwarden.core.config import Config
from memwarden.core.types import DeviceUnavailable, MemoryPool, PoolKind
from memwarden.hookspecs import hookimpl

NAME = "amd"
DRM = "sys/class/drm"
_CARD = re.compile(r"^card\d+$")  # not the connectors (card0-DP-1) nor render nodes


@attrs.frozen
class AmdOptions:
    """``[plugins.amd]``."""

    root: str = "/"


OPTIONS = AmdOptions


@attrs.frozen
class Card:
    name: str  # "card1"
    device: Path
    product: str


def _read(path: Path) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode("utf-8", "replace").strip()


def find_cards(root: Path) -> list[Card]:
    drm = root / DRM
    cards = []
    try:
        entries = sorted(
            drm.iterdir(), key=lambda p: int(p.name[4:]) if _CARD.match(p.name) else -1
        )
    except OSError:
        return []
    for entry in entries:
        device = entry / "device"
        if not _CARD.match(entry.name) or not (device / "mem_info_vram_total").is_file():
            continue
        try:
            product = _read(device / "product_name") or f"AMD GPU ({entry.name})"
        except OSError:
            product = f"AMD GPU ({entry.name})"
        cards.append(Card(entry.name, device, product))
    return cards


_cards: dict[Path, list[Card]] = {}


def cards_for(root: Path) -> list[Card]:
    if root not in _cards:
        _cards[root] = find_cards(root)
    return _cards[root]


def forget_cards() -> None:
    _cards.clear()


def measure(root: Path) -> list[MemoryPool] | DeviceUnavailable:
    cards = cards_for(root)
    if not cards:
        return DeviceUnavailable(
            source=NAME,
            reason=f"no amdgpu card with VRAM: no {root / DRM}/card*/device/mem_info_vram_total",
        )
    pools = []
    problems = []
    for card in cards:
        try:
            total = int(_read(card.device / "mem_info_vram_total"))
            used = int(_read(card.device / "mem_info_vram_used"))
        except (OSError, ValueError) as exc:
            problems.append(f"{card.name}: cannot read {card.device}/mem_info_vram_*: {exc}")
            continue
        pools.append(
            MemoryPool(
                id=f"rocm:{card.name}",
                kind=PoolKind.GPU,
                name=card.product,
                total_bytes=total,
                available_bytes=max(0, total - used),
                used_bytes=used,
                source=NAME,
            )
        )
    if not pools:
        forget_cards()  # the driver was unbound or the card removed: look again next time
        return DeviceUnavailable(source=NAME, reason="; ".join(problems))
    return pools


@hookimpl
def detect_device(config: Config) -> list[MemoryPool] | DeviceUnavailable:
    options = config.plugin_options(NAME, AmdOptions)
    if options.root == "/" and not sys.platform.startswith("linux"):
        return DeviceUnavailable(source=NAME, reason=f"reads Linux sysfs; this is {sys.platform}")
    return measure(Path(options.root))
