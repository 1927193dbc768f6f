"""HTTP endpoints of the admin API."""
