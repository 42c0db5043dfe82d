"""The contracted columns of the ``customer_facts`` mart: the only names a rule may read.

This mirrors the enforced dbt contract in ``dbt_project/models/marts``; a test checks the two
agree, so a rule can never name a column the warehouse does not guarantee.
"""

from __future__ import annotations

from typing import Literal

FactType = Literal["text", "integer", "boolean", "date", "numeric"]

FACT_COLUMNS: dict[str, FactType] = {
    "customer_id": "text",
    "club_id": "text",
    "first_name": "text",
    "email": "text",
    "phone": "text",
    "email_valid": "boolean",
    "phone_valid": "boolean",
    "sms_consent": "boolean",
    "email_consent": "boolean",
    "sms_contactable": "boolean",
    "email_contactable": "boolean",
    "timezone": "text",
    "as_of_date": "date",
    "customer_since": "date",
    "tenure_days": "integer",
    "membership_id": "text",
    "product": "text",
    "purchased_on": "date",
    "starts_on": "date",
    "ends_on": "date",
    "membership_status": "text",
    "has_active_membership": "boolean",
    "days_since_purchase": "integer",
    "days_until_end": "integer",
    "days_since_end": "integer",
    "has_renewal": "boolean",
    "memberships_total": "integer",
    "visits_total": "integer",
    "visits_since_purchase": "integer",
    "visits_last_7d": "integer",
    "visits_last_30d": "integer",
    "visits_last_90d": "integer",
    "last_visit_date": "date",
    "addon_purchases_since_purchase": "integer",
    "cross_sell_purchases_since_purchase": "integer",
    "addon_purchases_last_30d": "integer",
    "cross_sell_purchases_last_90d": "integer",
    "lifetime_revenue": "numeric",
    "renewal_membership_id": "text",
    "gap_days_before_current": "integer",
    "days_since_last_visit": "integer",
    "addon_purchases_last_90d": "integer",
    "cross_sell_purchases_last_30d": "integer",
    "last_addon_purchase_on": "date",
    "last_cross_sell_purchase_on": "date",
    "lifetime_purchases": "integer",
    "rfm_recency_days": "integer",
    "rfm_frequency": "integer",
    "rfm_monetary": "numeric",
    "r_score": "integer",
    "f_score": "integer",
    "m_score": "integer",
    "rfm_segment": "text",
}

# Text columns whose values are a fixed set (accepted_values of customer_facts' checks test; a
# test checks the two agree): a rule comparing one with anything else is an error.
FACT_VALUES: dict[str, tuple[str, ...]] = {
    "rfm_segment": (
        "champions", "loyal", "potential_loyalists", "recent", "promising", "need_attention",
        "about_to_sleep", "at_risk", "cant_lose_them", "hibernating", "lost",
        "first_time_buyer", "guest", "loyal_guest",
    ),
}

# Contact columns are never offered to templates or conditions' samples in logs.
PERSONAL_COLUMNS = frozenset({"email", "phone"})

# What a message template may print: facts minus contact data.
TEMPLATE_FIELDS = frozenset(FACT_COLUMNS) - PERSONAL_COLUMNS

FACTS_RELATION = "customer_facts"
