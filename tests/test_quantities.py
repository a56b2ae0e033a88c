"""The canonical vocabulary and every protocol's mapping into it (issue 18, item 6)."""

from __future__ import annotations

from decimal import Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concentrator.polling.bus_worker import BLOCK_PARTS
from contract import quantities
from drivers import dlt645, dlt645_1997, modbus_rtu
from drivers.dlt698 import objects as dlt698
from drivers.quantity_map import Mapped, shift_decimal


def _check(table: dict[object, Mapped]) -> None:
    assert table
    for key, mapped in table.items():
        assert mapped.name in quantities.BY_NAME, f"{key}: {mapped.name} is not in the vocabulary"
        q = quantities.BY_NAME[mapped.name]
        assert mapped.unit == q.unit, f"{key} -> {mapped.name}: {mapped.unit!r}, not {q.unit!r}"


def test_dlt645_2007_names_are_canonical_and_so_are_their_units() -> None:
    # The DI table is DL/T 645-2007's mapping: its names are the stored names.
    _check({d.code: Mapped(d.name, d.unit) for d in dlt645.DATA_IDS.values()})
    # an energy block is stored as its parts, which the vocabulary lists as the block's
    block = dlt645.lookup("frozen_daily_energy_fwd")
    assert quantities.get(block.name).parts == tuple(f"{block.name}_{p}" for p in BLOCK_PARTS)


def test_sdm_modbus_registers_map_into_the_vocabulary() -> None:
    _check(dict(modbus_rtu.CANONICAL.items()))
    for model, registers in modbus_rtu.METER_MODELS.items():
        assert set(registers) <= set(modbus_rtu.CANONICAL), model
    assert modbus_rtu.CANONICAL["energy_import"] == Mapped("energy_fwd_total", "kWh")
    assert modbus_rtu.CANONICAL["power_l2"] == Mapped("power_b", "kW", -3)


def test_dlt698_oads_and_dlt645_1997_dis_map_into_the_vocabulary() -> None:
    _check(dict(dlt698.CANONICAL.items()))
    _check(dict(dlt645_1997.CANONICAL.items()))
    # the same quantity gets the same name whichever protocol read it
    assert dlt698.CANONICAL[dlt698.lookup("energy_fwd_total").oad].name == "energy_fwd_total"
    assert dlt645_1997.CANONICAL[0x9010].name == dlt645.lookup(0x00010000).name
    assert dlt645_1997.CANONICAL[0xB650].name == dlt645.lookup(0x02060000).name
    assert dlt698.CANONICAL[dlt698.lookup("power_a").oad] == Mapped("power_a", "kW", -3)


def test_the_legacy_renames_land_in_the_vocabulary_with_its_units() -> None:
    for r in quantities.LEGACY_RENAMES:
        assert quantities.get(r.new).unit == r.new_unit
        assert r.old not in quantities.BY_NAME or r.old == r.new


def test_an_unknown_name_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(quantities.UnknownQuantity) as info:
        quantities.get("energy_import")
    assert "unknown quantity 'energy_import' (renamed energy_fwd_total" in str(info.value)
    assert "energy_fwd_total, energy_fwd_t1" in str(info.value)


def test_canonical_renames_and_rescales_only_the_old_names_in_their_old_units() -> None:
    assert quantities.canonical("power_l1", "W", "1234.5") == ("power_a", "kW", "1.2345")
    assert quantities.canonical("power_total", "W", "-20") == ("power_total", "kW", "-0.020")
    # a DL/T 645 power_total is already in kW: untouched
    assert quantities.canonical("power_total", "kW", "1.5") == ("power_total", "kW", "1.5")
    assert quantities.canonical("energy_import", "kWh", "7.25") == (
        "energy_fwd_total",
        "kWh",
        "7.25",
    )
    assert quantities.canonical("voltage_a", "V", "230.1") == ("voltage_a", "V", "230.1")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4), st.integers(-6, 6))
def test_shift_decimal_is_exact(value: Decimal, shift: int) -> None:
    text = format(value, "f")
    out = shift_decimal(text, shift)
    assert "E" not in out and "e" not in out
    with localcontext() as exact:
        exact.prec = 200  # the comparison itself must not round
        assert Decimal(out) == value * Decimal(10) ** shift


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "garbage"])
def test_shift_decimal_keeps_what_is_not_a_finite_number(text: str) -> None:
    assert shift_decimal(text, -3) == text


def test_docs_list_every_name_with_its_unit_and_every_rename() -> None:
    text = (Path(__file__).parent.parent / "docs" / "quantities.md").read_text(encoding="utf-8")
    for q in quantities.VOCABULARY:
        assert f"| `{q.name}` | {q.unit or '—'} | {q.decimals} | {q.kind} |" in text, q.name
    for r in quantities.LEGACY_RENAMES:
        assert f"| `{r.old}` ({r.old_unit}) | `{r.new}` ({r.new_unit}) |" in text, r.old
    for table in (
        "modbus_rtu/registers.py` `CANONICAL",
        "dlt645_1997.py` `CANONICAL",
        "objects.py` `CANONICAL",
    ):
        assert table in text
