"""The marketers' rules file (``include/rules/phases.yml``): read, checked, compiled.

``loading`` reads a file into ``compiled.Rules`` or raises ``errors.RulesInvalid`` with every
mistake at once, located by ``yamldoc`` and explained by ``errors``; ``models`` are the pydantic
shapes, ``checks`` the cross-field checks, ``conditions`` compiles audiences to SQL over
``customer_facts``, ``templates`` and ``sms`` render and measure texts, ``assignment`` hashes
customers into variants and the control group, ``schema`` writes the JSON Schema for editors.
May import: ``lifecycle.settings``, ``lifecycle.warehouse.facts``.
"""
