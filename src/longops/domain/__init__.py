"""Pure domain model: statuses, transitions, provider-status mapping and schemas. No I/O here."""
