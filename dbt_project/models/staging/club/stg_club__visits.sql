-- One select, no CTEs, unlike the other models: PostgreSQL cannot flatten a view that has a
-- WITH clause into the query that reads it, and then a join to it cannot use raw.visits'
-- (customer_id, visited_at) index, which int_visits_daily's incremental runs depend on
-- (a scan of every visit instead of a lookup per changed customer).
select
    visit_id,
    customer_id,
    visited_at,
    -- when the row was last (re)loaded: int_visits_daily's high-water mark
    _loaded_at
from {{ source('club', 'visits') }}
