"""The report a club manager reads, on a club that lived 40 days under the lifecycle rules.

The club is the simulation's (real dbt, planning and sandbox dispatch, day by day), kept; the
providers' delivery reports go in through the webhook writer, a few messages expire, the
marts are built, and a blast-only simulation of the same days is stored. The page is then
opened in headless Chromium at desktop and phone width.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import subprocess
import tempfile
import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from lifecycle.delivery.webhooks.events import Event, write_events
from lifecycle.insight.report import build_report, write_report
from lifecycle.insight.responses import default_response_model
from lifecycle.insight.simulate import simulate, simulate_policy
from lifecycle.insight.uplift import EFFECT, MIN_ARM, NO_EFFECT, TOO_FEW
from lifecycle.settings import Settings
from lifecycle.transform.dbt import build

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIRST = date(2026, 3, 1)
DAYS = 40
LAST = FIRST + timedelta(days=DAYS - 1)


def make_club(server_url: str, settings: Settings, target: Path) -> str:
    """The kept database of a lifecycle run, with delivery events, expired rows and marts."""
    simulate_policy(server_url, "lifecycle", customers=1500, days=DAYS, seed=11,
                    first_day=FIRST, settings=settings, keep_database=True)
    import os

    base = server_url.rsplit("/", 1)[0]
    name = "t_report_" + uuid.uuid4().hex[:8]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'alter database "lifecycle_sim_lifecycle_{os.getpid()}" rename to "{name}"')
    url = f"{base}/{name}"
    return finish_club(url, settings, target)


def finish_club(url: str, settings: Settings, target: Path) -> str:
    rng = random.Random(5)
    events = []
    with psycopg.connect(url) as conn:
        sent = conn.execute("select outbox_id, channel, sent_at from ops.outbox "
                            "where status = 'sent' order by outbox_id").fetchall()
        for oid, channel, at in sent:
            provider = "sendgrid" if channel == "email" else "twilio"

            def ev(kind: str, minutes: int, oid=oid, channel=channel, at=at, provider=provider):
                return Event(provider=provider, channel=channel, event_type=kind,
                             occurred_at=at + timedelta(minutes=minutes),
                             dedupe_key=f"{provider}|{oid}|{kind}", outbox_id=oid)

            if rng.random() < 0.9:
                events.append(ev("delivered", 1))
                if channel == "email" and rng.random() < 0.5:
                    events.append(ev("open", 30))
                    if rng.random() < 0.3:
                        events.append(ev("click", 31))
            elif rng.random() < 0.5:
                events.append(ev("undelivered" if channel == "sms" else "bounce", 1))
        # messages whose deadline passed before they went out: not sends, not charged
        conn.execute(
            "insert into ops.outbox (message_key, plan_date, customer_id, phase, step, cycle_key,"
            " channel, to_address, body, send_at, window_end_at, deadline_at, status)"
            " select 'expired-' || outbox_id, plan_date + 1, customer_id, phase, step,"
            " cycle_key, channel, to_address, body, send_at, window_end_at, deadline_at,"
            " 'expired' from ops.outbox o where status = 'sent' and plan_date < %s"
            " and not exists (select 1 from ops.outbox n where n.customer_id = o.customer_id"
            " and n.plan_date = o.plan_date + 1) order by outbox_id limit 7", (LAST,))
        conn.commit()
    write_events(url, events)
    # the simulation builds phase_conversions on its first and last day only; an incremental
    # build then computes just the last conversion_settle_days of exposures: build it whole
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop table analytics.phase_conversions cascade")
    build(url, LAST, ["staging.ops", "message_delivery", "metrics_retention_monthly",
                      "phase_conversions", "phase_uplift", "contact_health",
                      "metrics_contact_health"],
          settings=settings, target_path=target, unit_tests=False)
    # the AS IS of the same days, stored in this database as `lifecycle simulate` does
    simulate(url, customers=300, days=DAYS, policies=("blast",), seed=11, first_day=FIRST,
             settings=settings)
    return url


@pytest.fixture(scope="module")
def club(server_url: str, tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(home=tmp_path_factory.mktemp("state"))
    url = make_club(server_url, settings, tmp_path_factory.mktemp("dbt"))
    yield url, settings
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{url.rsplit("/", 1)[1]}" with (force)')


def _visible_text(page: str) -> str:
    body = re.sub(r"(?s)<(style|svg)\b.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_headline_counts_only_sent_messages_and_judges_each_phase(club, tmp_path: Path) -> None:
    url, settings = club
    report = write_report(url, FIRST, LAST, tmp_path / "report.html", settings)
    h = report.headline
    with psycopg.connect(url) as conn:
        by_status = dict(conn.execute(
            "select status, count(*) from ops.outbox where plan_date between %s and %s "
            "group by 1", (FIRST, LAST)).fetchall())
        delivered = conn.execute(
            "select count(*), count(*) filter (where delivered_at is not null"
            " or first_opened_at is not null) from analytics.message_delivery"
            " where outbox_status = 'sent' and plan_date between %s and %s group by channel",
            (FIRST, LAST)).fetchall()
        sent_texts, calls_made = conn.execute(
            "select count(*) filter (where channel <> 'call' and status = 'sent'), "
            "count(*) filter (where channel = 'call' and (status = 'sent' or last_error in "
            "('call_no_answer', 'call_wrong_number'))) from ops.outbox "
            "where plan_date between %s and %s", (FIRST, LAST)).fetchone()
    assert by_status["expired"] == 7 == h["expired"]
    # messages: the SMS and emails sent, and the calls the desk made (answered or not)
    assert h["sms"] + h["email"] == sent_texts
    assert h["calls"] == calls_made
    assert h["messages"] == h["sms"] + h["email"] + h["calls"]
    assert h["cost"] == pytest.approx(
        h["sms_segments"] * settings.sms_cost + h["email"] * settings.email_cost
        + h["calls"] * settings.call_cost, abs=0.01)
    assert h["incremental_conversions_low"] <= h["incremental_conversions"]
    assert h["incremental_conversions"] <= h["incremental_conversions_high"]
    assert h["incremental_verdict"] in (EFFECT, NO_EFFECT, TOO_FEW)
    assert h["return_on_spend"] == pytest.approx(h["incremental_revenue"] / h["cost"], abs=0.01)
    page = report.path.read_text(encoding="utf-8")
    text = _visible_text(page)
    assert f"{h['messages']:,} messages sent" in text
    assert "7 expired unsent" in text
    # the funnel from message_delivery: delivered as a share of sent, per channel
    for sent, got in delivered:
        assert f"{got:,} ({got / sent:.1%})" in text
    for word in ("delivered", "opened", "clicked"):
        assert word in text
    # every phase row has a verdict; a phase whose smaller arm is under the minimum says so
    verdicts = re.findall(r"class=\"verdict (?:yes|no|few)\"[^>]*>([^<]+)<", page)
    assert verdicts and set(verdicts) <= {EFFECT, NO_EFFECT, TOO_FEW}
    assert f"fewer than {MIN_ARM} customers" in text  # the rules, in words
    assert "Newcombe" in text
    # the simulation of these days is there, labelled, with its assumptions as sentences
    assert 'id="simulation"' in page and "not your club's results" in text
    assert f"covers {FIRST} to {LAST}" in text
    retention = default_response_model().respond["retention"]
    assert f"A retention message makes {retention:.0%} of the customers" in text
    assert "(Source: fitness-club case" in text
    # money with ranges, the global control group, the detectable difference
    assert h["incremental_profit_low"] <= h["incremental_profit"] <= h["incremental_profit_high"]
    assert "Profit after the message cost" in text
    g = h["global_control"]
    assert g["treated"] > 0 and g["control"] > 0 and g["verdict"] in (EFFECT, NO_EFFECT, TOO_FEW)
    assert "all phases (global control group)" in text
    if any(v != EFFECT for v in verdicts):
        assert "would show (8 times in 10)" in text
    # next month's profit with its range, and the rule of thumb with the club's numbers in it
    assert h["forecast_profit_low"] <= h["forecast_profit"] <= h["forecast_profit_high"]
    assert h["forecast_rule_of_thumb"] > 0
    assert "Next month: the profit to expect" in text and "Rule of thumb: P = " in text
    assert f"= {h['forecast_rule_of_thumb']:,.0f} UAH" in text
    assert "Simulation no. " in text and "#?" not in text
    assert '{"' not in text and "_rate" not in text and "incremental_conversions" not in text
    # shares are percents: no raw fractions like 0.1234 anywhere in the words
    assert not re.search(r"(?<![\d.,])0\.\d{3,}", text), re.findall(r"0\.\d{3,}", text)[:5]


def test_the_contact_health_section_shows_the_decay_beside_the_reference(club) -> None:
    url, settings = club
    page, _ = build_report(url, FIRST, LAST, settings)
    with psycopg.connect(url) as conn:
        # the simulation's providers found some contacts dead (its club decays)
        dead = conn.execute("select count(*) from ops.dead_contacts").fetchone()[0]
        contacts, measured = conn.execute(
            "select count(*), count(*) filter (where status = 'dead')"
            " from analytics.contact_health").fetchone()
    assert dead > 0 and 0 < measured <= dead
    section = page[page.index('<section id="contacts">'):]
    section = section[:section.index("</section>")]
    text = _visible_text(section)
    assert f"{measured:,} of {contacts:,} phones and emails are known dead" in text
    assert "<svg" in section  # the chart
    for label in ("under 2 years ago", "2-3 years ago", "3-5 years ago", "5+ years ago"):
        assert label in text
    # the article's reference beside the measured shares
    assert "~30%" in text and "50%–60%" in text and "~90%" in text
    assert "dead, CLM article" in text


def test_a_simulation_of_other_days_is_left_out(club) -> None:
    url, settings = club
    page, headline = build_report(url, LAST + timedelta(days=1), LAST + timedelta(days=30),
                                  settings)
    assert headline["simulation"] == {}
    assert 'id="simulation"' not in page and "AS IS (blast)" not in page


_MEASURE = """(() => {
  const s = document.scrollingElement, imgs = [...document.images];
  return {scrollWidth: s.scrollWidth, innerWidth: innerWidth,
          broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
          svgs: document.querySelectorAll('svg').length, text: document.body.innerText};
})()"""


class _Chromium:
    """Headless Chromium over the DevTools protocol: a viewport of any width (its window
    cannot be narrower than 500 px), the page measured once loaded, a full-page screenshot."""

    def __init__(self, profile: str) -> None:
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"], stderr=subprocess.PIPE, text=True)
        endpoint = None
        for line in self.proc.stderr:
            if "DevTools listening on " in line:
                endpoint = line.split("DevTools listening on ", 1)[1].strip()
                break
        assert endpoint, "chromium printed no DevTools endpoint"
        self._connection = connect(endpoint, max_size=None, open_timeout=30)
        self.ws = self._connection.__enter__()
        self.events: list[dict] = []
        self.last_id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]

    def _recv(self) -> dict:
        return json.loads(self.ws.recv(timeout=60))

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.last_id += 1
        msg = {"id": self.last_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = self._recv()
            if reply.get("id") == self.last_id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str, width: int, height: int) -> None:
        s = self.session
        self.call("Emulation.setDeviceMetricsOverride", s, width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)
        self.call("Page.enable", s)
        self.call("Runtime.enable", s)
        self.call("Page.navigate", s, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._recv())

    def evaluate(self, expression: str) -> dict:
        return self.call("Runtime.evaluate", self.session, expression=expression,
                         returnByValue=True)["result"]["value"]

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", self.session, format="png",
                         captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.mark.parametrize("width", [1280, 390])
def test_page_fits_the_screen_in_chromium(club, tmp_path: Path, width: int) -> None:
    url, settings = club
    out = tmp_path / "report.html"
    write_report(url, FIRST, LAST, out, settings)
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page  # the report itself runs nothing
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it with apt-get when root)")
    shot = tmp_path / f"report-{width}.png"
    with tempfile.TemporaryDirectory() as profile:
        browser = _Chromium(profile)
        try:
            browser.open(out.as_uri(), width, 844)
            measure = browser.evaluate(_MEASURE)
            browser.screenshot(shot)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000  # saved beside the report in the test's directory
    assert measure["innerWidth"] == width
    assert measure["scrollWidth"] <= measure["innerWidth"], measure["scrollWidth"]
    assert measure["broken"] == 0
    # uplift, funnel, audience, per customer, retention, contact health, simulation
    assert measure["svgs"] >= 6
    visible = measure["text"]
    assert '{"' not in visible
    assert re.search(r"\d+\.\d%", visible)  # shares as percents
    assert not re.search(r"(?<![\d.,])0\.\d{3,}", visible)
    errors = [e for e in browser.events
              if e.get("method") in ("Runtime.exceptionThrown", "Runtime.consoleAPICalled")]
    assert errors == []
    assert "Contact health" in visible and "dead, CLM article" in visible
