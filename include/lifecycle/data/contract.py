"""The data contract: the CSV files a club hands over, defined once as data.

The loader validates against it, the generator writes to it and docs/data-contract.md renders
it with ``contract_markdown()``. Files are UTF-8 with a header row, comma-separated, standard
quoting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ColumnType(StrEnum):
    """How a column's value is written; ``expected`` says it to a person."""

    ID = "id"
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    TIMEZONE = "timezone"
    DATE = "date"
    TIMESTAMP = "timestamp"
    DATE_OR_TIMESTAMP = "date_or_timestamp"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    ENUM = "enum"


# What a valid value looks like, worded for the person fixing the file.
EXPECTED: dict[ColumnType, str] = {
    ColumnType.ID: "any non-empty text",
    ColumnType.TEXT: "any text",
    ColumnType.EMAIL: "an email address (checked downstream, not at load)",
    ColumnType.PHONE: "an E.164 number like +380671234567 (checked downstream, not at load)",
    ColumnType.TIMEZONE: "an IANA time zone name like Europe/Kyiv, or empty for the club's zone",
    ColumnType.DATE: "a date like 2024-03-01 (YYYY-MM-DD)",
    ColumnType.TIMESTAMP: "a timestamp with its UTC offset like 2024-03-01T18:30:00+02:00",
    ColumnType.DATE_OR_TIMESTAMP: (
        "a timestamp with its UTC offset like 2024-03-01T18:30:00+02:00, "
        "or a date like 2024-03-01 (read in the club's time zone)"
    ),
    ColumnType.DECIMAL: "a number >= 0 with at most 2 decimals, like 1200 or 1200.50",
    ColumnType.BOOLEAN: "true or false",
    ColumnType.ENUM: "one of the listed values",
}

# The PostgreSQL type a staged text value is cast to on upsert.
SQL_TYPE: dict[ColumnType, str] = {
    ColumnType.DATE: "date",
    ColumnType.TIMESTAMP: "timestamptz",
    ColumnType.DATE_OR_TIMESTAMP: "timestamptz",
    ColumnType.DECIMAL: "numeric",
    ColumnType.BOOLEAN: "boolean",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    description: str
    nullable: bool = False  # the value may be empty
    required: bool = True  # the column must be in the header
    choices: tuple[str, ...] = ()  # for ENUM
    references: str | None = None  # "customers.customer_id"
    default: str | None = None  # used when the column is absent or the value is empty

    @property
    def expected(self) -> str:
        if self.type is ColumnType.ENUM:
            return "one of " + ", ".join(self.choices)
        return EXPECTED[self.type]

    @property
    def sql_type(self) -> str:
        return SQL_TYPE.get(self.type, "text")


@dataclass(frozen=True)
class FileSpec:
    name: str
    table: str
    required: bool
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


def _customer_ref(description: str = "the customer") -> Column:
    return Column(
        "customer_id", ColumnType.ID, description, references="customers.customer_id"
    )


CONTRACT: tuple[FileSpec, ...] = (
    FileSpec(
        name="customers.csv",
        table="raw.customers",
        required=True,
        key=("customer_id",),
        description="One row per customer.",
        columns=(
            Column("customer_id", ColumnType.ID, "the club's customer id"),
            Column("first_name", ColumnType.TEXT, "used to greet in messages", nullable=True),
            Column("email", ColumnType.EMAIL, "email address", nullable=True),
            Column("phone", ColumnType.PHONE, "mobile number in E.164", nullable=True),
            Column(
                "timezone", ColumnType.TIMEZONE, "the customer's time zone", nullable=True
            ),
            Column("created_at", ColumnType.DATE_OR_TIMESTAMP, "when the customer was created"),
            Column(
                "club_id",
                ColumnType.TEXT,
                "the club the customer belongs to",
                nullable=True,
                required=False,
                default="main",
            ),
            Column(
                "contact_updated_at",
                ColumnType.DATE_OR_TIMESTAMP,
                "when the customer last gave or confirmed their phone or email at the club "
                "(contact health counts it as proof both are alive); empty or absent: "
                "created_at",
                nullable=True,
                required=False,
            ),
        ),
    ),
    FileSpec(
        name="memberships.csv",
        table="raw.memberships",
        required=True,
        key=("membership_id",),
        description="One row per membership sold (renewals are new rows).",
        columns=(
            Column("membership_id", ColumnType.ID, "the membership's id"),
            _customer_ref(),
            Column("product", ColumnType.TEXT, "the membership product, e.g. gym_12m"),
            Column("purchased_on", ColumnType.DATE, "day of sale (day 0 of the lifecycle)"),
            Column("starts_on", ColumnType.DATE, "first day the membership is valid"),
            Column("ends_on", ColumnType.DATE, "last day it is valid; not before starts_on"),
            Column("price", ColumnType.DECIMAL, "price paid, in the club's currency"),
            Column(
                "status",
                ColumnType.ENUM,
                "the membership's state as the club's system records it",
                choices=("active", "frozen", "cancelled"),
            ),
        ),
    ),
    FileSpec(
        name="visits.csv",
        table="raw.visits",
        required=True,
        key=("visit_id",),
        description="One row per check-in at the club.",
        columns=(
            Column("visit_id", ColumnType.ID, "the visit's id"),
            _customer_ref(),
            Column("visited_at", ColumnType.TIMESTAMP, "check-in time"),
        ),
    ),
    FileSpec(
        name="purchases.csv",
        table="raw.purchases",
        required=False,
        key=("purchase_id",),
        description="One row per service bought (add-ons, personal training, spa...).",
        columns=(
            Column("purchase_id", ColumnType.ID, "the purchase's id"),
            _customer_ref(),
            Column("service", ColumnType.TEXT, "service code, see services.csv"),
            Column("purchased_at", ColumnType.TIMESTAMP, "time of sale"),
            Column("amount", ColumnType.DECIMAL, "amount paid"),
        ),
    ),
    FileSpec(
        name="consents.csv",
        table="raw.consents",
        required=False,
        key=("customer_id", "channel"),
        description="The latest marketing consent per customer and channel.",
        columns=(
            _customer_ref(),
            Column("channel", ColumnType.ENUM, "the channel", choices=("sms", "email")),
            Column("opted_in", ColumnType.BOOLEAN, "whether marketing messages are allowed"),
            Column("updated_at", ColumnType.TIMESTAMP, "when the customer last said so"),
        ),
    ),
    FileSpec(
        name="services.csv",
        table="raw.services",
        required=False,
        key=("service",),
        description="The service catalog; absent = the catalog shipped with the project.",
        columns=(
            Column("service", ColumnType.ID, "service code as used in purchases.csv"),
            Column(
                "category",
                ColumnType.ENUM,
                "addon = small extra (stimulation), cross_sell = complementary service",
                choices=("addon", "cross_sell"),
            ),
        ),
    ),
)

FILES: dict[str, FileSpec] = {f.name: f for f in CONTRACT}


def file_spec(name: str) -> FileSpec:
    """The spec of one contract file by its file name, e.g. ``visits.csv``."""
    try:
        return FILES[name]
    except KeyError:
        raise KeyError(
            f"{name!r} is not a contract file; expected one of {', '.join(FILES)}"
        ) from None


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def contract_markdown() -> str:
    """The contract as one Markdown table (a row per column), for docs/data-contract.md."""
    lines = [
        "| File | Column | Type | May be empty | Valid values | Meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in CONTRACT:
        for i, col in enumerate(spec.columns):
            if i == 0:
                need = "required" if spec.required else "optional"
                key = ", ".join(spec.key)
                file_cell = f"`{spec.name}` ({need}; key: {key})"
            else:
                file_cell = ""
            name = f"`{col.name}`"
            if not col.required:
                name += " (optional column)"
            empty = "yes" if col.nullable else "no"
            valid = col.expected
            if col.default is not None:
                valid += f"; default `{col.default}`"
            if col.references:
                ref_file, ref_col = col.references.split(".")
                valid = f"a {ref_col} from {ref_file}.csv or already loaded"
            if spec.key == (col.name,):
                valid += "; unique in the file"
            elif col.name == spec.key[-1]:
                valid += f"; {' + '.join(spec.key)} unique in the file"
            lines.append(
                f"| {file_cell} | {name} | {col.type.value} | {empty} | {_md(valid)} "
                f"| {_md(col.description)} |"
            )
    return "\n".join(lines) + "\n"
