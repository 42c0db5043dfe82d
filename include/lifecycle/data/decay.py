"""How a synthetic club's contacts die: the CLM article's decay curve, for the demo and the
simulation.

An unused base decays: about 30% of contacts are dead after 2-3 years without contact, 50-60%
after 3-5 years, about 90% after 5 years or more (dbt seed ``contact_decay_reference``, which
the contact-health metrics show beside the measured shares; read from there, one copy). The
article says nothing under 2 years: there the share grows evenly from 0 to the 2-3 year
share. The time is counted from the customer's last contact with the club: their last visit,
or the day they were created when they never came.

Whether one address is dead is a draw fixed by (seed, kind, address): the same club is the
same on every run, and the share only grows with time, so an address found dead stays dead
until the customer comes back.
"""

from __future__ import annotations

import csv
import hashlib
from functools import cache
from pathlib import Path

from lifecycle.settings import Settings, get_settings

REFERENCE_SEED = Path("seeds") / "contact_decay_reference.csv"
Curve = tuple[tuple[float, float], ...]  # ((start years, dead share), ...), by start


@cache
def _curve(path: Path) -> Curve:
    """(years the bucket starts, its dead share) of every bucket with a reference, by age."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    points = []
    for row in rows:
        low, high = row["reference_dead_share_low"], row["reference_dead_share_high"]
        if low and high:
            points.append((float(row["min_years"]), (float(low) + float(high)) / 2))
    return tuple(sorted(points))


def curve(settings: Settings | None = None) -> Curve:
    """The reference curve of the dbt project in use: ((start years, dead share), ...).
    A caller drawing many addresses reads it once and passes it on: settings are read from
    the environment on every get_settings() (milliseconds each)."""
    return _curve((settings or get_settings()).dbt_project_dir / REFERENCE_SEED)


def dead_share(years: float, points: Curve | None = None) -> float:
    """The share of contacts dead after ``years`` without contact (0 at 0 years), on
    ``points`` (default: ``curve()``)."""
    points = curve() if points is None else points
    if years <= 0 or not points:
        return 0.0
    first_years, first_share = points[0]
    if years < first_years:
        return first_share * years / first_years
    return next(share for start, share in reversed(points) if years >= start)


def is_dead(seed: int, kind: str, address: str, years: float,
            points: Curve | None = None) -> bool:
    """Whether the club's ``kind`` contact ``address`` is dead after ``years`` without contact
    (on ``points``, default ``curve()``)."""
    digest = hashlib.sha256(f"{seed}|decay|{kind}|{address}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dead_share(years, points)
