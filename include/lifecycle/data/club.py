"""The synthetic club's behaviour: who buys what, who comes when, and how contacts look.

The club opens on ``start`` (an opening rush, then steady sales). Customers follow one of four
behaviours (regulars, casual visitors, members who buy and never come, drop-offs); each
membership ends in an early renewal, a renewal after a short gap, a lapse followed by a return,
or a lapse for good. Contacts are imperfect on purpose (empty, malformed, mixed-case), some
customers opt out, and visits are stamped in each customer's own time zone during opening hours.
``ClubModel.chunk`` turns one seeded chunk of customers into CSV bytes per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

import numpy as np

from lifecycle.data.csv_bytes import csv_block, digits, ints, vocab

CHUNK = 20_000  # customers per chunk; part of the output's definition (the seeds are per chunk)
OPENING_RUSH_DAYS = 60

ZONES = ("Europe/Kyiv", "Europe/Warsaw", "Europe/Berlin", "America/New_York")
ZONE_P = (0.80, 0.05, 0.04, 0.03, 0.08)  # the last: empty, i.e. the club's zone

# name, months, price in UAH
PRODUCTS = (("gym_12m", 12, 14400), ("gym_6m", 6, 8400), ("gym_3m", 3, 4800), ("gym_1m", 1, 1800))
PRODUCT_P = (0.70, 0.10, 0.10, 0.10)
DISCOUNTS = np.array([1.0, 0.9, 0.85])
DISCOUNT_P = (0.75, 0.17, 0.08)

# service, category, amounts (single / package)
SERVICES = (
    ("solarium", "addon", (150, 1200)),
    ("group_class", "addon", (250, 2000)),
    ("personal_training", "cross_sell", (900, 8000)),
    ("massage", "cross_sell", (1200, 5500)),
    ("spa", "cross_sell", (1600, 1600)),
)
ADDON_P = (0.5, 0.5, 0, 0, 0)
CROSS_P = (0, 0, 0.5, 0.3, 0.2)
# Which cross-sell service a member buys depends on their product (PRODUCTS' order), so members
# alike buy alike: what customer_next_best_offer's look-alikes find.
CROSS_BY_PRODUCT = (
    (0, 0, 0.6, 0.25, 0.15),
    (0, 0, 0.3, 0.5, 0.2),
    (0, 0, 0.2, 0.3, 0.5),
    (0, 0, 0.5, 0.3, 0.2),
)
# Share of a member's visits at their own habit hour (the rest at any opening hour): what
# customer_send_hour reads back.
HABIT_SHARE = 0.7

REGULAR, CASUAL, NEVER, DROPOFF = range(4)
ARCHETYPE_P = (0.38, 0.27, 0.10, 0.25)
# Visits per day while the membership runs (low, high) per archetype.
VISIT_RATE = ((0.15, 0.40), (0.02, 0.10), (0.0, 0.0), (0.15, 0.35))
# After a membership: early renewal, renewal after a short gap, return after >= 30 days, lapse.
NEXT_P = (
    (0.45, 0.25, 0.10, 0.20),
    (0.20, 0.25, 0.15, 0.40),
    (0.05, 0.05, 0.10, 0.80),
    (0.10, 0.15, 0.20, 0.55),
)
ADDON_RATE = (0.012, 0.004, 0.0, 0.006)  # add-on purchases per active day (buyers only)
CROSS_RATE = (0.006, 0.001, 0.0, 0.0)  # cross-sell purchases per day after day 60 (buyers only)

# Check-in hours 07..21 (the club is open 07:00-22:00); morning and evening peaks.
HOUR_W = np.array([6, 8, 7, 4, 3, 3, 4, 4, 4, 5, 8, 10, 10, 8, 4], dtype=float)
HOURS = np.arange(7, 22)
HOUR_P = HOUR_W / HOUR_W.sum()

# Per zone: (first name as written, its Latin form for emails), surnames, email domains.
NAMES = {
    "Europe/Kyiv": (
        [("Олена", "olena"), ("Ірина", "iryna"), ("Наталія", "nataliia"), ("Тетяна", "tetiana"),
         ("Оксана", "oksana"), ("Марія", "mariia"), ("Юлія", "yuliia"), ("Анна", "anna"),
         ("Світлана", "svitlana"), ("Катерина", "kateryna"), ("Андрій", "andrii"),
         ("Олександр", "oleksandr"), ("Сергій", "serhii"), ("Дмитро", "dmytro"),
         ("Іван", "ivan"), ("Максим", "maksym"), ("Володимир", "volodymyr"),
         ("Микола", "mykola"), ("Богдан", "bohdan"), ("Тарас", "taras")],
        ["koval", "shevchenko", "bondarenko", "tkachenko", "kravchenko", "melnyk", "boiko",
         "oliinyk", "lysenko", "marchenko", "savchenko", "rudenko", "moroz", "pavlenko"],
        ["gmail.com", "ukr.net", "i.ua", "meta.ua"],
    ),
    "Europe/Warsaw": (
        [("Anna", "anna"), ("Katarzyna", "katarzyna"), ("Magdalena", "magdalena"),
         ("Agnieszka", "agnieszka"), ("Piotr", "piotr"), ("Krzysztof", "krzysztof"),
         ("Tomasz", "tomasz"), ("Paweł", "pawel"), ("Michał", "michal"), ("Marcin", "marcin")],
        ["nowak", "kowalski", "wisniewski", "wojcik", "kaminski", "lewandowski"],
        ["gmail.com", "wp.pl", "onet.pl"],
    ),
    "Europe/Berlin": (
        [("Anna", "anna"), ("Lena", "lena"), ("Julia", "julia"), ("Sophie", "sophie"),
         ("Lukas", "lukas"), ("Jonas", "jonas"), ("Felix", "felix"), ("Leon", "leon"),
         ("Maximilian", "maximilian"), ("Jürgen", "juergen")],
        ["mueller", "schmidt", "schneider", "fischer", "weber", "wagner"],
        ["gmail.com", "gmx.de", "web.de"],
    ),
    "America/New_York": (
        [("Emily", "emily"), ("Olivia", "olivia"), ("Emma", "emma"), ("Sarah", "sarah"),
         ("Michael", "michael"), ("James", "james"), ("David", "david"), ("John", "john"),
         ("Daniel", "daniel"), ("Chris", "chris")],
        ["smith", "johnson", "brown", "miller", "davis", "garcia"],
        ["gmail.com", "yahoo.com", "outlook.com"],
    ),
}
UA_OPERATORS = ["50", "63", "66", "67", "68", "73", "93", "95", "96", "97", "98", "99"]
US_AREAS = ["212", "646", "917", "347", "718"]

CONTACT_P = {
    "phone_empty": 0.02, "phone_short": 0.015, "phone_national": 0.015,
    "email_empty": 0.04, "email_malformed": 0.02, "email_mixed_case": 0.06,
    "first_name_empty": 0.01,
}
CONSENT_ROW_P = {"sms": 0.95, "email": 0.93}  # share of customers with a consents.csv row
OPT_OUT_P = {"sms": 0.04, "email": 0.06}
# Of the customers who never buy a membership, the share who walked in and left no phone or
# email (the RFM segment guest; the others, with a contact, are loyal guests).
WALK_IN_NO_CONTACT_P = 0.25


class _Calendar:
    """Day numbers (0 = start) to date strings, and each zone's UTC offset on each day."""

    MARGIN = 400  # days before start and after end covered by the tables

    def __init__(self, start: date, days: int, zones: list[str]) -> None:
        self.start = start
        n = days + 2 * self.MARGIN
        first = np.datetime64(start, "D") - self.MARGIN
        self.dates = np.datetime_as_string(first + np.arange(n), unit="D").astype("S10")
        offsets: list[str] = []
        codes = np.empty((len(zones), n), np.int64)
        for z, name in enumerate(zones):
            tz = ZoneInfo(name)
            for i in range(n):
                # Opening hours never straddle a DST switch (they happen at night): noon's
                # offset holds for every visit that day.
                d = start + timedelta(days=i - self.MARGIN)
                off = datetime.combine(d, dtime(12), tzinfo=tz).utcoffset()
                assert off is not None
                minutes = int(off.total_seconds()) // 60
                sign = "+" if minutes >= 0 else "-"
                text = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
                if text not in offsets:
                    offsets.append(text)
                codes[z, i] = offsets.index(text)
        self.offset_text = vocab(offsets)
        self.offset_code = codes

    def date(self, day: np.ndarray) -> np.ndarray:
        return self.dates[day + self.MARGIN]

    def timestamp(self, day: np.ndarray, seconds: np.ndarray, zone: np.ndarray) -> np.ndarray:
        """'YYYY-MM-DDTHH:MM:SS+HH:MM' for local ``day`` and ``seconds`` past midnight."""
        n = len(day)
        out = np.empty((n, 25), np.uint8)
        out[:, 0:10] = self.date(day).view(np.uint8).reshape(n, 10)
        out[:, 10] = ord("T")
        for pos, value in ((11, seconds // 3600), (14, seconds // 60 % 60), (17, seconds % 60)):
            out[:, pos] = value // 10 + 48
            out[:, pos + 1] = value % 10 + 48
        out[:, 13] = out[:, 16] = ord(":")
        off = self.offset_text[self.offset_code[zone, day + self.MARGIN]]
        out[:, 19:25] = off.view(np.uint8).reshape(n, 6)
        return out.view("S25").ravel()


def _add_months(base: np.datetime64, day: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Day numbers ``months`` after ``day`` (clamped to the month's end, like 31 Jan + 1m)."""
    d = base + day
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    target = m + months
    dim = ((target + 1).astype("datetime64[D]") - target.astype("datetime64[D]")).astype(np.int64)
    res = target.astype("datetime64[D]") + np.minimum(dom, dim - 1)
    return (res - base).astype(np.int64)


# -- one chunk of customers ---------------------------------------------------------------


@dataclass
class ClubModel:
    start: date
    days: int
    calendar: _Calendar
    zone_names: list[str]  # ZONES + the club's zone if it is not one of them
    club_zone: int
    id_extra: int  # extra id digits beyond the defaults for very large clubs

    def __post_init__(self) -> None:
        self.base = np.datetime64(self.start, "D")
        self.product_names = vocab([p[0] for p in PRODUCTS])
        self.product_months = np.array([p[1] for p in PRODUCTS])
        self.product_price = np.array([p[2] for p in PRODUCTS])
        self.service_names = vocab([s[0] for s in SERVICES])
        self.service_amounts = np.array([s[2] for s in SERVICES])
        self.statuses = vocab(["active", "frozen", "cancelled"])
        self.zone_text = vocab(list(ZONES) + [""])
        first, latin, surnames, domains = [], [], [], []
        self.name_range, self.surname_range, self.domain_range = [], [], []
        for zone in ZONES:
            names, sur, dom = NAMES[zone]
            self.name_range.append((len(first), len(names)))
            self.surname_range.append((len(surnames), len(sur)))
            self.domain_range.append((len(domains), len(dom)))
            first += [n for n, _ in names]
            latin += [lat for _, lat in names]
            surnames += sur
            domains += dom
        self.first_names = vocab(first)
        self.latin = vocab(latin)
        self.surnames = vocab(surnames)
        self.domains = vocab(domains)
        self.bare_domains = vocab([d.rsplit(".", 1)[0] for d in domains])
        self.ua_ops = vocab(UA_OPERATORS)
        self.us_areas = vocab(US_AREAS)

    def _pick(self, rng: np.random.Generator, ranges: list[tuple[int, int]], zone: np.ndarray):
        lo = np.array([r[0] for r in ranges])[zone]
        size = np.array([r[1] for r in ranges])[zone]
        return lo + (rng.random(len(zone)) * size).astype(np.int64)

    def chunk(self, index: int, first_id: int, n: int, seed: int, counters: dict[str, int]):
        """CSV bytes per file for customers ``first_id .. first_id + n - 1``."""
        rng = np.random.default_rng([seed, index])
        days = self.days
        ids = np.arange(first_id, first_id + n)
        zone_pick = rng.choice(len(ZONE_P), n, p=ZONE_P)
        has_zone = zone_pick < len(ZONES)
        vzone = np.where(has_zone, zone_pick, self.club_zone)  # the zone visits happen in
        people = np.where(has_zone, zone_pick, 0)  # names/phones: local for the club
        arch = rng.choice(4, n, p=ARCHETYPE_P)
        member = rng.random(n) >= 0.02
        rush = rng.random(n) < 0.3
        first = np.where(
            rush,
            rng.integers(0, min(OPENING_RUSH_DAYS, days), n),
            rng.integers(0, days, n),
        )

        m = self._memberships(rng, n, arch, member, first)
        visits = self._visits(rng, arch, m)
        purchases = self._purchases(rng, n, arch, m)
        created = np.where(member, first - rng.integers(0, 31, n), rng.integers(0, days, n))
        created_sec = self._seconds(rng, n)

        cw, mw, vw, pw = 7 + self.id_extra, 8 + self.id_extra, 9 + self.id_extra, 8 + self.id_extra
        cid = digits(ids, cw, b"C")
        out: dict[str, tuple[bytes, int]] = {}

        name_i = self._pick(rng, self.name_range, people)
        first_names = self._first_names(rng, name_i)
        emails = self._emails(rng, people, name_i)
        phones = self._phones(rng, people)

        k = len(m["cust"])
        mid = digits(counters["memberships.csv"] + np.arange(1, k + 1), mw, b"M")
        counters["memberships.csv"] += k
        out["memberships.csv"] = (csv_block([
            mid,
            cid[m["cust"]],
            self.product_names[m["product"]],
            self.calendar.date(m["purchase"]),
            self.calendar.date(m["start"]),
            self.calendar.date(m["end"]),
            ints(m["price"]),
            self.statuses[m["status"]],
        ]), k)

        cust, day, sec = visits
        k = len(cust)
        vid = digits(counters["visits.csv"] + np.arange(1, k + 1), vw, b"V")
        counters["visits.csv"] += k
        out["visits.csv"] = (csv_block([
            vid, cid[cust], self.calendar.timestamp(day, sec, vzone[cust])
        ]), k)

        cust, day, sec, service, amount = purchases
        k = len(cust)
        pid = digits(counters["purchases.csv"] + np.arange(1, k + 1), pw, b"P")
        counters["purchases.csv"] += k
        out["purchases.csv"] = (csv_block([
            pid,
            cid[cust],
            self.service_names[service],
            self.calendar.timestamp(day, sec, vzone[cust]),
            ints(amount),
        ]), k)

        out["consents.csv"] = self._consents(rng, n, cid, vzone, created, created_sec)
        # Drawn last, so every earlier draw (and the rows they make) stays what it was.
        walk_in = ~member & (rng.random(n) < WALK_IN_NO_CONTACT_P)
        out["customers.csv"] = (csv_block([
            cid,
            first_names,
            np.where(walk_in, b"", emails),
            np.where(walk_in, b"", phones),
            self.zone_text[zone_pick],
            self.calendar.timestamp(created, created_sec, vzone),
        ]), n)
        return out

    def _seconds(self, rng: np.random.Generator, n: int) -> np.ndarray:
        hour = HOURS[rng.choice(len(HOURS), n, p=HOUR_P)]
        return hour * 3600 + rng.integers(0, 3600, n)

    def _memberships(self, rng, n, arch, member, first) -> dict[str, np.ndarray]:
        days = self.days
        cur = first.copy()
        alive = member & (cur < days)
        prev_end = np.full(n, -(10**6))
        product = rng.choice(len(PRODUCTS), n, p=PRODUCT_P)
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("cust", "purchase", "start", "end", "product", "price", "status",
                            "cycle")
        }
        next_cum = np.cumsum(np.array(NEXT_P), axis=1)
        cycle = 0
        while alive.any():
            idx = np.flatnonzero(alive)
            k = len(idx)
            purchase = cur[idx]
            switch = rng.random(k) < (0.15 if cycle else 0.0)
            product[idx] = np.where(switch, rng.choice(len(PRODUCTS), k, p=PRODUCT_P),
                                    product[idx])
            prod = product[idx]
            months = self.product_months[prod]
            # The first membership often starts some days after the sale (the "freeze" the
            # activation phase is about); a renewal bought early starts when the old one ends.
            delay = np.where(rng.random(k) < 0.65, 0, rng.integers(1, 22, k))
            if cycle:
                delay = np.where(rng.random(k) < 0.8, 0, delay)
            start = np.maximum(purchase + delay, prev_end[idx] + 1)
            end = _add_months(self.base, start, months) - 1
            discount = DISCOUNTS[rng.choice(len(DISCOUNTS), k, p=DISCOUNT_P)]
            price = np.round(self.product_price[prod] * discount / 10) * 10
            r = rng.random(k)
            status = np.where(r < 0.02, 2, np.where((r < 0.04) & (end >= days - 1), 1, 0))
            for key, value in (("cust", idx), ("purchase", purchase), ("start", start),
                               ("end", end), ("product", prod), ("price", price),
                               ("status", status), ("cycle", np.full(k, cycle))):
                parts[key].append(value)
            u = rng.random(k)
            choice = (u[:, None] >= next_cum[arch[idx]]).sum(axis=1)
            choice = np.where(status == 2, np.where(u < 0.3, 2, 3), choice)
            early_max = np.minimum(30, months * 10)
            nxt = np.select(
                [choice == 0, choice == 1, choice == 2],
                [
                    np.maximum(end - (rng.random(k) * early_max).astype(np.int64), purchase + 1),
                    end + rng.integers(1, 30, k),
                    end + rng.integers(30, 151, k),
                ],
                default=days,
            )
            cur[idx] = nxt
            prev_end[idx] = end
            alive[idx] = nxt < days
            cycle += 1
        m = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in parts.items()}
        order = np.lexsort((m["purchase"], m["cust"]))
        return {k: v[order].astype(np.int64) for k, v in m.items()}

    def _spans(self, rng, arch, m) -> tuple[np.ndarray, np.ndarray]:
        """Per membership, the days the member actually comes: [lo, hi] (empty if hi < lo)."""
        k = len(m["cust"])
        a = arch[m["cust"]]
        first = m["cycle"] == 0
        lo = m["start"].copy()
        # Slow starters: not a single visit in the activation window, then they come.
        slow = first & (a != NEVER) & (rng.random(k) < 0.15)
        lo = np.where(slow, lo + rng.integers(20, 46, k), lo)
        hi = np.minimum(m["end"], self.days - 1)
        length = np.maximum(hi - lo, 0)
        hi = np.where(first & (a == DROPOFF), np.minimum(hi, lo + rng.integers(14, 100, k)), hi)
        hi = np.where(m["status"] == 2, lo + (length * rng.uniform(0.1, 0.6, k)).astype(np.int64),
                      hi)
        hi = np.where(m["status"] == 1, lo + (length * rng.uniform(0.5, 0.95, k)).astype(np.int64),
                      hi)
        hi = np.minimum(hi, self.days - 1)
        return lo, hi

    def _visits(self, rng, arch, m):
        lo, hi = self._spans(rng, arch, m)
        m["lo"], m["hi"] = lo, hi
        a = arch[m["cust"]]
        # Drop-offs who come back behave like casual visitors from then on.
        a = np.where((a == DROPOFF) & (m["cycle"] > 0), CASUAL, a)
        low = np.array([r[0] for r in VISIT_RATE])[a]
        high = np.array([r[1] for r in VISIT_RATE])[a]
        rate = rng.uniform(low, high)
        length = np.maximum(hi - lo + 1, 0)
        count = rng.poisson(rate * length)
        which = np.repeat(np.arange(len(lo)), count)
        day = lo[which] + (rng.random(len(which)) * length[which]).astype(np.int64)
        sec = self._seconds(rng, len(which))
        cust = m["cust"][which]
        # Habits from a child generator: the other draws stay what they were for a seed.
        habits = rng.spawn(1)[0]
        habit_hour = HOURS[habits.choice(len(HOURS), len(arch), p=HOUR_P)]
        at_habit = habits.random(len(which)) < HABIT_SHARE
        sec = np.where(
            at_habit, habit_hour[cust] * 3600 + habits.integers(0, 1800, len(which)), sec
        )
        order = np.lexsort((sec, day, cust))
        return cust[order], day[order], sec[order]

    def _purchases(self, rng, n, arch, m):
        lo, hi = m["lo"], m["hi"]
        a = arch[m["cust"]]
        addon_buyer = (rng.random(n) < 0.5)[m["cust"]]
        cross_buyer = (rng.random(n) < 0.35)[m["cust"]]
        length = np.maximum(hi - lo + 1, 0)
        # Cross-sell comes once the relationship is regular: from day 60 of the membership.
        cross_lo = lo + 60
        cross_len = np.maximum(hi - cross_lo + 1, 0)
        n_add = rng.poisson(np.array(ADDON_RATE)[a] * length * addon_buyer)
        n_cross = rng.poisson(np.array(CROSS_RATE)[a] * cross_len * cross_buyer)
        w_add = np.repeat(np.arange(len(lo)), n_add)
        w_cross = np.repeat(np.arange(len(lo)), n_cross)
        day = np.concatenate([
            lo[w_add] + (rng.random(len(w_add)) * length[w_add]).astype(np.int64),
            cross_lo[w_cross] + (rng.random(len(w_cross)) * cross_len[w_cross]).astype(np.int64),
        ])
        service = np.concatenate([
            rng.choice(len(SERVICES), len(w_add), p=ADDON_P),
            rng.choice(len(SERVICES), len(w_cross), p=CROSS_P),
        ])
        # the cross-sell service by the membership's product (a child generator, see _visits)
        pick = rng.spawn(1)[0]
        cdf = np.cumsum(np.array(CROSS_BY_PRODUCT)[m["product"][w_cross]], axis=1)
        cross_service = (pick.random(len(w_cross))[:, None] >= cdf[:, :-1]).sum(axis=1)
        service[len(w_add):] = cross_service
        package = (rng.random(len(service)) < 0.2).astype(np.int64)
        amount = self.service_amounts[service, package]
        cust = m["cust"][np.concatenate([w_add, w_cross])]
        sec = self._seconds(rng, len(cust))
        order = np.lexsort((sec, day, cust))
        return cust[order], day[order], sec[order], service[order], amount[order]

    def _first_names(self, rng, name_i) -> np.ndarray:
        names = self.first_names[name_i]
        return np.where(rng.random(len(name_i)) < CONTACT_P["first_name_empty"], b"", names)

    def _emails(self, rng, zone, name_i) -> np.ndarray:
        n = len(zone)
        latin = self.latin[name_i]
        surname = self.surnames[self._pick(rng, self.surname_range, zone)]
        dom_i = self._pick(rng, self.domain_range, zone)
        number = ints(rng.integers(1, 100, n))
        local = np.strings.add(np.strings.add(np.strings.add(latin, b"."), surname), number)
        u = rng.random(n)
        p = CONTACT_P
        mixed = (u >= 1 - p["email_mixed_case"])
        local = np.where(mixed, np.strings.capitalize(local), local)
        domain = np.where(mixed, np.strings.capitalize(self.domains[dom_i]), self.domains[dom_i])
        malformed = (u >= p["email_empty"]) & (u < p["email_empty"] + p["email_malformed"])
        kind = rng.integers(0, 3, n)
        at = np.where(malformed & (kind == 0), b"", np.where(malformed & (kind == 1), b"@@", b"@"))
        domain = np.where(malformed & (kind == 2), self.bare_domains[dom_i], domain)
        email = np.strings.add(np.strings.add(local, at), domain)
        return np.where(u < p["email_empty"], b"", email)

    def _phones(self, rng, zone) -> np.ndarray:
        n = len(zone)
        ua = np.strings.add(np.strings.add(b"+380", self.ua_ops[rng.integers(0, 12, n)]),
                            digits(rng.integers(0, 10**7, n), 7))
        pl = np.strings.add(b"+48", ints(rng.integers(5 * 10**8, 9 * 10**8, n)))
        de = np.strings.add(b"+4915", digits(rng.integers(0, 10**9, n), 9))
        us = np.strings.add(np.strings.add(b"+1", self.us_areas[rng.integers(0, 5, n)]),
                            ints(rng.integers(2 * 10**6, 10**7, n)))
        phone = np.choose(zone, [ua, pl, de, us])
        u = rng.random(n)
        p = CONTACT_P
        short = ints(rng.integers(1000, 1_000_000, n))  # e.g. '12345'
        national = np.strings.add(b"0", np.strings.add(self.ua_ops[rng.integers(0, 12, n)],
                                                       digits(rng.integers(0, 10**7, n), 7)))
        cut1 = p["phone_empty"]
        cut2 = cut1 + p["phone_short"]
        cut3 = cut2 + p["phone_national"]
        return np.select([u < cut1, u < cut2, u < cut3], [b"", short, national], default=phone)

    def _consents(self, rng, n, cid, vzone, created, created_sec) -> tuple[bytes, int]:
        parts = []
        for code, channel in enumerate(("sms", "email")):
            has = rng.random(n) < CONSENT_ROW_P[channel]
            out = rng.random(n) < OPT_OUT_P[channel]
            later = created + (rng.random(n) * np.maximum(self.days - 1 - created, 0)).astype(
                np.int64)
            day = np.where(out, later, created)
            sec = np.where(out, self._seconds(rng, n), created_sec)
            idx = np.flatnonzero(has)
            parts.append((idx, np.full(len(idx), code), out[idx], day[idx], sec[idx]))
        cust, chan, opted_out, day, sec = (np.concatenate(x) for x in zip(*parts, strict=True))
        order = np.lexsort((chan, cust))
        cust, chan, opted_out, day, sec = (x[order] for x in (cust, chan, opted_out, day, sec))
        block = csv_block([
            cid[cust],
            vocab(["sms", "email"])[chan],
            np.where(opted_out, b"false", b"true"),
            self.calendar.timestamp(day, sec, vzone[cust]),
        ])
        return block, len(cust)


def club_model(start: date, end: date, club_zone: str, customers: int) -> ClubModel:
    """The model of a club open from ``start`` to ``end`` whose own zone is ``club_zone``."""
    zone_names = list(ZONES) + ([] if club_zone in ZONES else [club_zone])
    days = (end - start).days + 1
    return ClubModel(
        start=start,
        days=days,
        calendar=_Calendar(start, days, zone_names),
        zone_names=zone_names,
        club_zone=zone_names.index(club_zone),
        id_extra=max(0, len(str(customers)) - 7),
    )
