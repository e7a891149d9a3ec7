"""Background machinery: leadership, submitter, poller (and, on every instance, shared loops)."""
