"""The club's data in: the CSV contract, the loader and a synthetic club.

``contract`` defines the files once, as data; ``loader`` checks a directory of them against it
and loads all of it into ``raw`` or nothing, with every error located by file, line and column
(``values`` checks one value as PostgreSQL will read it and masks contacts in what errors quote);
``generator`` writes a synthetic club that exercises every phase, to CSV or straight into the
warehouse. May import: ``lifecycle.settings``, ``lifecycle.logs``, ``lifecycle.warehouse``.
"""
