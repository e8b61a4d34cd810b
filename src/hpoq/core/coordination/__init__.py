"""Redis coordination: key names, connections, variant counters, trial budgets, leases."""
