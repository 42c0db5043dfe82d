"""One normalised phone: dbt's stg_club__customers (SQL) and phonenumbers (Python) agree.

The phones clubs store are loaded into raw.customers, the real staging model is built by dbt
with the club's region from the settings (its calling code reaches dbt as
default_country_code), and every staged phone must equal what
``lifecycle.delivery.webhooks.events.normalise_phone`` makes of the same text: that is how an
inbound STOP (Twilio's E.164 ``From``) finds the customer and how a suppressed number is
recognised in the outbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import phonenumbers
import psycopg
import pytest

from lifecycle.delivery.webhooks.events import normalise_phone
from lifecycle.settings import Settings
from lifecycle.transform.dbt import run_dbt

pytestmark = pytest.mark.slow

# (as the club stored it, E.164) for a club in Ukraine
UA = [
    ("0671234567", "+380671234567"),  # national, trunk 0
    ("067 123 45 67", "+380671234567"),
    ("067-123-45-67", "+380671234567"),
    ("(067) 123-45-67", "+380671234567"),
    ("067.123.45.67", "+380671234567"),
    ("0 67 123 45 67", "+380671234567"),
    ("00380671234567", "+380671234567"),  # 00 international
    ("00 380 67 123 45 67", "+380671234567"),
    ("00380.67.123.45.67", "+380671234567"),
    ("+380671234567", "+380671234567"),
    ("+380 (0) 67 123 45 67", "+380671234567"),  # +CC (0)...
    ("+380(0)671234567", "+380671234567"),
    ("+38 (067) 123-45-67", "+380671234567"),  # how Ukrainians often write it
    ("+380-67-123-45-67", "+380671234567"),
    ("380671234567", "+380671234567"),  # digits with the country code
    ("671234567", "+380671234567"),  # a spreadsheet dropped the trunk 0
    (" tel: 067 123 45 67", "+380671234567"),  # text around the number
    ("Tel. 067-123-45-67", "+380671234567"),
    ("тел. 067 123 45 67", "+380671234567"),
    ("mob:+380671234567", "+380671234567"),
    ("0671234567;", "+380671234567"),
    ("+380 67 123 45 67.", "+380671234567"),
    ("+380671234567 (mob)", "+380671234567"),
    ("067 123 45 67 мобільний", "+380671234567"),
    ("\t+380 67 123 45 67\n", "+380671234567"),
    ("+44 20 7946 0958", "+442079460958"),  # other countries with +
    ("+44 (0)20 7946 0958", "+442079460958"),
    ("0044 (0)20 7946 0958", "+442079460958"),
    ("00 44 (0)20 7946 0958", "+442079460958"),
    ("+48 601 234 567", "+48601234567"),
    ("+1 (415) 555-2671", "+14155552671"),
    ("+49 (0)30 1234567", "+49301234567"),
    ("+33 (0)6 12 34 56 78", "+33612345678"),
    ("+420 601 123 456", "+420601123456"),
]
# a club in Poland: no trunk 0, national numbers are written bare
PL = [
    ("601 234 567", "+48601234567"),
    ("601-234-567", "+48601234567"),
    ("48601234567", "+48601234567"),
    ("0048 601 234 567", "+48601234567"),
    ("+48 (601) 234 567", "+48601234567"),
    ("tel. 601 234 567", "+48601234567"),
    ("+380 (0)67 123 45 67", "+380671234567"),
]
# not a phone: the staged row is marked invalid whatever its text
NOT_PHONES = ["12345", "n/a", "-", "+0123456789", "none given"]


def _stage(url: str, settings: Settings, phones: list[str], target: Path) -> dict[str, tuple]:
    """raw.customers with these phones, staged by dbt: {raw phone: (phone, phone_valid)}."""
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
            "copy raw.customers (customer_id, phone, created_at) from stdin"
        ) as copy:
            for i, phone in enumerate(phones):
                copy.write_row((f"C{i:03d}", phone, datetime(2024, 1, 1, tzinfo=UTC)))
    run_dbt(url, ["run", "--select", "stg_club__customers"], settings=settings,
            target_path=target)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"select phone_raw, phone, phone_valid from {settings.dbt_schema}.stg_club__customers"
        ).fetchall()
    return {raw: (phone, valid) for raw, phone, valid in rows}


@pytest.mark.parametrize(("region", "corpus"), [("UA", UA), ("PL", PL)])
def test_dbt_and_phonenumbers_normalise_stored_phones_alike(
    fresh_db: str, tmp_path: Path, region: str, corpus: list[tuple[str, str]]
) -> None:
    settings = Settings(default_region=region)
    staged = _stage(fresh_db, settings, [raw for raw, _ in corpus] + NOT_PHONES, tmp_path)

    python = {raw: normalise_phone(raw, region) for raw, _ in corpus}
    sql = {raw: staged[raw] for raw, _ in corpus}
    assert python == {raw: e164 for raw, e164 in corpus}
    assert sql == {raw: (e164, True) for raw, e164 in corpus}
    # and each is a number phonenumbers itself calls valid
    for raw, e164 in corpus:
        assert phonenumbers.is_valid_number(phonenumbers.parse(e164)), raw
    # what is not a phone is invalid on both sides
    for raw in NOT_PHONES:
        assert staged[raw][1] is False, raw
        normalised = normalise_phone(raw, region)
        assert normalised is None or not phonenumbers.is_valid_number(
            phonenumbers.parse(normalised)), raw


def test_the_country_code_dbt_uses_follows_the_region_setting() -> None:
    from lifecycle.transform.dbt import dbt_env

    assert dbt_env("postgresql://u@h/db", Settings(default_region="PL"))[
        "LIFECYCLE_DEFAULT_COUNTRY_CODE"] == "48"
    assert Settings().default_country_code == "380"
    with pytest.raises(ValueError, match="LIFECYCLE_DEFAULT_REGION: 'XX' is not a region"):
        Settings(default_region="XX")
