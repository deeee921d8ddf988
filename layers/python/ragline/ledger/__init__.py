"""The cost ledger's logic: prices (a versioned table), metering of model calls, budgets."""
