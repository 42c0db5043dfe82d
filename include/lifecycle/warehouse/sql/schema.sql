-- Schemas the pipeline owns. dbt builds into its own schema (settings.dbt_schema).
-- Idempotent: run by `lifecycle warehouse up`, `lifecycle load` and every pipeline run.

create schema if not exists raw;
create schema if not exists ops;

-- raw: the data contract (docs/data-contract.md); loaded by `lifecycle load`, upserted by id.
create table if not exists raw.customers (
    customer_id  text primary key,
    club_id      text not null default 'main',
    first_name   text,
    email        text,
    phone        text,
    timezone     text,
    created_at   timestamptz not null,
    contact_updated_at timestamptz,
    _loaded_at   timestamptz not null default now()
);

-- Columns added after a table first shipped (contract grows compatibly, docs/architecture.md #8).
alter table raw.customers add column if not exists club_id text not null default 'main';
-- When the customer last gave or confirmed their contacts at the club (contact health); null:
-- created_at, the day they first gave them.
alter table raw.customers add column if not exists contact_updated_at timestamptz;

create table if not exists raw.memberships (
    membership_id text primary key,
    customer_id   text not null,
    product       text not null,
    purchased_on  date not null,
    starts_on     date not null,
    ends_on       date not null,
    price         numeric(12, 2) not null,
    status        text not null check (status in ('active', 'frozen', 'cancelled')),
    _loaded_at    timestamptz not null default now()
);
create index if not exists memberships_customer_idx on raw.memberships (customer_id);

create table if not exists raw.visits (
    visit_id    text primary key,
    customer_id text not null,
    visited_at  timestamptz not null,
    _loaded_at  timestamptz not null default now()
);
create index if not exists visits_customer_idx on raw.visits (customer_id, visited_at);
-- int_visits_daily reads the visits (re)loaded since its last run (_loaded_at newer than its
-- watermark) every day; rows arrive in load order, so a BRIN index (a few hundred kB at 100M
-- rows, next to nothing to maintain on COPY) finds them without scanning the whole table.
create index if not exists visits_loaded_at_brin on raw.visits using brin (_loaded_at);

create table if not exists raw.purchases (
    purchase_id  text primary key,
    customer_id  text not null,
    service      text not null,
    purchased_at timestamptz not null,
    amount       numeric(12, 2) not null,
    _loaded_at   timestamptz not null default now()
);
create index if not exists purchases_customer_idx on raw.purchases (customer_id, purchased_at);

create table if not exists raw.consents (
    customer_id text not null,
    channel     text not null check (channel in ('sms', 'email')),
    opted_in    boolean not null,
    updated_at  timestamptz not null,
    _loaded_at  timestamptz not null default now(),
    primary key (customer_id, channel)
);

create table if not exists raw.services (
    service    text primary key,
    category   text not null check (category in ('addon', 'cross_sell')),
    _loaded_at timestamptz not null default now()
);

-- ops: what the pipeline itself writes.
create table if not exists ops.outbox (
    outbox_id      bigserial primary key,
    -- customer|phase|step|cycle: a phase step is sent at most once per membership cycle,
    -- whatever day it is planned on (docs/architecture.md #4).
    message_key    text not null,
    plan_date      date not null,
    customer_id    text not null,
    phase          text not null,
    step           integer not null check (step >= 1),
    cycle_key      text not null,
    channel        text not null check (channel in ('sms', 'email', 'call')),
    variant        text not null default 'A',
    to_address     text not null,
    subject        text,
    body           text not null,
    send_at        timestamptz not null,
    -- End of the send window on send_at's local day: never sent after it (held to the next day).
    window_end_at  timestamptz not null,
    -- Not sent by then (held, retried): expires with a reason instead of going out late.
    deadline_at    timestamptz not null,
    status         text not null default 'planned'
                   check (status in ('planned', 'claimed', 'sent', 'failed', 'expired', 'unknown')),
    attempts       integer not null default 0,
    lease_until    timestamptz,
    provider_id    text,
    last_error     text,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    sent_at        timestamptz
);
-- Each claim is a batch; the dispatcher stamps sending_at (committed) just before it hands the
-- batch to its transport. A claim that lapses before that (the worker died between claiming and
-- sending) is planned again: certainly not sent. One that lapses after it is 'unknown'.
create table if not exists ops.dispatch_batches (
    batch_id   bigserial primary key,
    channel    text,
    claimed_at timestamptz not null default now(),
    sending_at timestamptz
);
alter table ops.outbox add column if not exists batch_id bigint;
-- Stamped, in the same statement that checks the row is still claimed by this batch, just before
-- the provider request that carries the row: from then on the row may have reached the provider.
alter table ops.outbox add column if not exists handed_at timestamptz;
-- The offer a message carries: its code, and for an offer chosen per member (a step's offer
-- `from: next_best_offer`) why: next_best (the member's best-ranked catalog service) or fallback.
-- Null on rows planned before these columns existed; offer_source null = a fixed offer.
alter table ops.outbox add column if not exists offer_code text;
alter table ops.outbox add column if not exists offer_source text
    check (offer_source in ('next_best', 'fallback'));
-- A message that is live, or that may have reached its provider, holds its key: the same phase
-- step for the same membership cycle can never be planned again, whatever becomes of the row
-- (an 'unknown' row that reconciliation expires keeps it). Only rows certainly not sent (failed
-- or expired before they were handed over) release it. Built once (it replaces
-- outbox_message_key_live_uq, which let an expired 'unknown' row's key go): rows from before
-- handed_at that reconciliation had expired from 'unknown' are stamped with the time their
-- batch was handed over first, unless their key was planned again since (those stay as they
-- are: the index cannot hold both).
do $$
begin
    if to_regclass('ops.outbox_message_key_taken_uq') is null then
        update ops.outbox o
        set handed_at = coalesce((select b.sending_at from ops.dispatch_batches b
                                  where b.batch_id = o.batch_id), o.updated_at)
        from (
            select distinct on (x.message_key) x.outbox_id
            from ops.outbox x
            where x.status = 'expired' and x.handed_at is null
              and x.last_error like 'reconciled: no provider event%'
              and not exists (
                  select 1 from ops.outbox l
                  where l.message_key = x.message_key
                    and (l.handed_at is not null
                         or l.status in ('planned', 'claimed', 'sent', 'unknown')))
            order by x.message_key, x.outbox_id desc
        ) legacy
        where o.outbox_id = legacy.outbox_id;
        create unique index outbox_message_key_taken_uq on ops.outbox (message_key)
            where handed_at is not null or status in ('planned', 'claimed', 'sent', 'unknown');
    end if;
end
$$;
drop index if exists ops.outbox_message_key_live_uq;
-- At most one lifecycle message per customer per planning day.
create unique index if not exists outbox_customer_day_uq on ops.outbox (customer_id, plan_date);
create index if not exists outbox_plan_date_idx on ops.outbox (plan_date);
-- (customer_id, plan_date) is outbox_customer_day_uq already: every index slows each update.
drop index if exists ops.outbox_customer_idx;
create index if not exists outbox_due_idx on ops.outbox (channel, send_at) where status = 'planned';

-- Customers eligible for a phase on a day but not planned, with why.
create table if not exists ops.skips (
    plan_date   date not null,
    customer_id text not null,
    phase       text not null,
    step        integer not null,
    reason      text not null,
    created_at  timestamptz not null default now(),
    primary key (plan_date, customer_id, phase, step)
);
-- A control-group customer goes through every rule and is held back only where its message
-- would have been written: the skip records that message's channel, variant and key (null for
-- every other reason, and on control rows written before the columns existed).
alter table ops.skips add column if not exists channel text;
alter table ops.skips add column if not exists variant text;
alter table ops.skips add column if not exists message_key text;
-- planning reads each candidate's control would-haves as its history (planning.audience)
create index if not exists skips_control_customer_idx on ops.skips (customer_id)
    where reason = 'control_group' and channel is not null;

-- The sandbox transport's record of what would have been sent: one row per outbox message.
create table if not exists ops.sandbox_messages (
    outbox_id   bigint primary key references ops.outbox (outbox_id),
    channel     text not null,
    to_address  text not null,
    subject     text,
    body        text not null,
    provider_id text not null,
    recorded_at timestamptz not null default now()
);

create table if not exists ops.runs (
    run_id      bigserial primary key,
    plan_date   date not null,
    step        text not null,
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    status      text not null default 'running',
    summary     jsonb not null default '{}'::jsonb
);
create index if not exists runs_plan_date_idx on ops.runs (plan_date);

-- Token buckets shared by all dispatchers (lifecycle.delivery.throttle): one row per provider.
create table if not exists ops.rate_limits (
    key        text primary key,
    rate       double precision not null,
    burst      double precision not null,
    tokens     double precision not null,
    updated_at timestamptz not null
);

-- Who must not be messaged on a channel, and why. Planning skips them (reason opted_out,
-- hard_bounce, spam_complaint, or suppressed for manual); provider events add rows here.
create table if not exists ops.suppressions (
    customer_id text not null,
    -- call: the customer asked not to be called (an SMS opt-out stops calls too)
    channel     text not null check (channel in ('sms', 'email', 'call')),
    reason      text not null
                check (reason in ('opted_out', 'hard_bounce', 'spam_complaint', 'manual')),
    -- where it came from: 'twilio', 'sendgrid', 'manual:<who>', a file name...
    source      text not null,
    created_at  timestamptz not null default now(),
    primary key (customer_id, channel)
);

-- Addresses that must not be messaged on a channel, whoever has them: every SMS opt-out (STOP
-- and the like, matched to a customer or not) suppresses the sender's number here in E.164, and
-- an opt-in (START) lifts it. Planning skips a customer whose phone is here (opted_out) and
-- dispatch does not claim a row sent to it, so a STOP from a number no customer had yet holds
-- for the customer loaded with it later.
create table if not exists ops.address_suppressions (
    channel    text not null check (channel in ('sms', 'email')),
    -- E.164 phone (+380671234567) or lower-case email, as the outbox's to_address holds it
    address    text not null check (address <> ''),
    reason     text not null
               check (reason in ('opted_out', 'hard_bounce', 'spam_complaint', 'manual')),
    source     text not null,
    created_at timestamptz not null default now(),
    primary key (channel, address)
);

-- Contacts known to be dead (contact health): a phone or an email address no message reaches,
-- whoever holds it, with the first evidence seen. Provider events (a hard bounce, an undelivered
-- SMS, a carrier failure) and call outcomes (a wrong number) add rows through
-- lifecycle.contacts.mark_dead; planning skips a customer whose contact for a channel is here
-- (skip reason dead_contact): a phone serves SMS and calls, an email the email channel. A new
-- phone or email on the customer's record is a different address, so it is reachable again.
create table if not exists ops.dead_contacts (
    kind        text not null check (kind in ('phone', 'email')),
    -- E.164 phone (+380671234567) or lower-case email, as customer_facts and the outbox hold it
    address     text not null check (address <> ''),
    evidence    text not null
                check (evidence in ('hard_bounce', 'undelivered', 'wrong_number', 'carrier_failure')),
    -- when the evidence happened (the provider's or the call's time), not when it was loaded
    observed_at timestamptz not null,
    -- where it came from: 'twilio', 'sendgrid', 'calls:<file>', ...
    source      text not null,
    created_at  timestamptz not null default now(),
    primary key (kind, address)
);

-- Dates allowed to exceed the policy's volume guard (an intended big send), with why.
create table if not exists ops.volume_overrides (
    plan_date  date primary key,
    reason     text not null check (reason <> ''),
    created_at timestamptz not null default now()
);

-- Provider events as the signed webhooks delivered them (lifecycle.delivery.webhooks): SendGrid event
-- webhook batches, Twilio status callbacks and inbound SMS. Written in one transaction with the
-- suppression change an event implies. A retried delivery is the same row: dedupe_key is the
-- event's content (outbox id or provider message, event type, provider timestamp), and SendGrid's
-- sg_event_id is unique too (it has been seen to change between retries, hence both).
create table if not exists ops.message_events (
    event_id            bigserial primary key,
    provider            text not null check (provider in ('sendgrid', 'twilio', 'call_centre')),
    channel             text not null check (channel in ('sms', 'email', 'call')),
    -- SendGrid: processed, delivered, deferred, bounce, dropped, spamreport, unsubscribe,
    -- group_unsubscribe, open, click. Twilio: queued, sent, delivered, undelivered, failed;
    -- inbound SMS: inbound_opt_out, inbound_opt_in, inbound (any other text). call_centre (the
    -- outcomes file of `lifecycle calls load`): call_reached, call_no_answer, call_wrong_number,
    -- call_not_interested, call_interested, call_booked.
    event_type          text not null,
    -- The message it is about (custom_args.outbox_id / ?outbox_id= of the status callback);
    -- null for inbound SMS and for events of mail we did not send through the outbox.
    outbox_id           bigint,
    provider_message_id text,
    provider_event_id   text,
    -- The address the event concerns (recipient, or the sender of an inbound SMS).
    address             text,
    -- Bounce/drop reason, bounce type, Twilio error code, clicked URL: what explains the event.
    reason              text,
    -- The suppression change applied: opted_out, hard_bounce, spam_complaint, opt_in, or null.
    suppression         text,
    customers_affected  integer not null default 0,
    occurred_at         timestamptz not null,
    received_at         timestamptz not null default now(),
    dedupe_key          text not null
);
create unique index if not exists message_events_dedupe_uq on ops.message_events (dedupe_key);
create unique index if not exists message_events_provider_event_uq
    on ops.message_events (provider, provider_event_id) where provider_event_id is not null;
create index if not exists message_events_outbox_idx on ops.message_events (outbox_id);
-- An opt-out or bounce applies to every customer the address was sent to.
create index if not exists outbox_address_idx on ops.outbox (channel, lower(to_address));

-- AS IS vs TO BE runs of `lifecycle simulate` (lifecycle.insight.simulate): one row per run, every
-- policy's figures and the response model that produced them in results.
create table if not exists ops.simulations (
    simulation_id bigserial primary key,
    created_at    timestamptz not null default now(),
    customers     integer not null,
    days          integer not null,
    seed          bigint not null,
    first_day     date not null,
    results       jsonb not null
);

-- The call channel (a front desk's or call centre's daily call list): tables made before it
-- get 'call' in their channel checks, and the call centre as an event provider. Replaced only
-- where the check lacks it (a replaced check validates the whole table once).
do $$
declare
    wanted record;
begin
    for wanted in
        select * from (values
            ('ops.outbox', 'outbox_channel_check', 'call',
             'check (channel in (''sms'', ''email'', ''call''))'),
            ('ops.suppressions', 'suppressions_channel_check', 'call',
             'check (channel in (''sms'', ''email'', ''call''))'),
            ('ops.message_events', 'message_events_channel_check', 'call',
             'check (channel in (''sms'', ''email'', ''call''))'),
            ('ops.message_events', 'message_events_provider_check', 'call_centre',
             'check (provider in (''sendgrid'', ''twilio'', ''call_centre''))')
        ) as w (tbl, con, needs, def)
    loop
        if not exists (
            select 1 from pg_constraint
            where conrelid = wanted.tbl::regclass and conname = wanted.con
              and pg_get_constraintdef(oid) like '%''' || wanted.needs || '''%'
        ) then
            execute format('alter table %s drop constraint if exists %I', wanted.tbl, wanted.con);
            execute format('alter table %s add constraint %I %s', wanted.tbl, wanted.con,
                           wanted.def);
        end if;
    end loop;
end
$$;
