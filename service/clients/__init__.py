"""Outbound HTTP to Pipedrive and Brevo: nothing else in the service talks to them."""
