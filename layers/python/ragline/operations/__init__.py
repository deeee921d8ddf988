"""Operating Ragline: figures from the local store (stats), drift of retrieval signals, A/B
reports. Pure functions over query-log entries, ledger rows and registry records, so the CLI,
the /v1/ops API and the evaluate function all compute the same numbers."""
