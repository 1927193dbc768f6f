"""The name of the Brevo list a filter feeds."""

from __future__ import annotations


def brevo_list_name(filter_name: str, filter_id: int) -> str:
    """``<filter name> (Pipedrive #<id>)``: the id keeps two filters with one name apart."""
    return f"{filter_name.strip()} (Pipedrive #{filter_id})"
