"""Service-level clocks (business calendars, deadlines, escalations); filled by the SLA issue."""
