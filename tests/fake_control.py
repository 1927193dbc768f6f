"""The fake Pipedrive and the fake Brevo as the sync tests drive them: wrappers over a
``RunningFake``'s control API (and, for Brevo, its API as another Brevo user would call it),
shared by the engine tests (``tests/sync``) and the end-to-end tests (``tests/integration``).
"""

from __future__ import annotations

from types import EllipsisType
from typing import Any

import httpx

from sandbox.pipedrive.fields import TIER_KEY, condition, groups
from tests.fakes import RunningFake

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
OTHER_BREVO_USER = "someone-else"  # the api-key of calls a test makes to Brevo's API itself


def service_settings(
    pipedrive: RunningFake, brevo: RunningFake, *, token: str, key: str
) -> dict[str, Any]:
    """The settings that point the service at the fakes, with ``token`` as its Pipedrive
    API token and ``key`` as its Brevo API key: by ``Settings`` field name (all strings;
    upper-cased, they are the environment variables)."""
    return {
        "pipedrive_api_token": token,
        "pipedrive_base_url": pipedrive.url,
        "brevo_api_key": key,
        "brevo_base_url": brevo.url + "/v3",
    }


# --- the fake Pipedrive -----------------------------------------------------------------


def tier_conditions(tier: str) -> dict[str, Any]:
    """People filter conditions: the custom field "Customer tier" (9011) equals ``tier``."""
    return groups([condition("person", TIER_KEY, "=", tier)])


def title_conditions(prefix: str) -> dict[str, Any]:
    """Deal filter conditions: the deal's title (12451) starts with ``prefix``."""
    return groups([condition("deal", "title", "LIKE '$%'", prefix)])


class Pipedrive:
    """The fake Pipedrive's control API.

    ``tier`` is the "Customer tier" persons and people filters get when a call names none.
    """

    def __init__(self, fake: RunningFake, tier: str | None = None) -> None:
        self.fake = fake
        self.tier = tier

    def person(
        self,
        first: str,
        last: str | None,
        *emails: str,
        tier: str | None | EllipsisType = ...,
        labels: list[int] | None = None,
    ) -> int:
        """Create a person (``tier`` puts it in that tier's people filter; None: no tier)."""
        if tier is ...:
            tier = self.tier
        body: dict[str, Any] = {"first_name": first, "last_name": last, "emails": list(emails)}
        if tier is not None:
            body["custom_fields"] = {TIER_KEY: tier}
        if labels is not None:
            body["label_ids"] = labels
        person_id: int = self.fake.control("POST", "/_sandbox/persons", json=body).json()["id"]
        return person_id

    def update_person(self, person_id: int, **body: Any) -> None:
        """Change the person's fields given in ``body``."""
        self.fake.control("PATCH", f"/_sandbox/persons/{person_id}", json=body)

    def set_tier(self, person_id: int, tier: str | None) -> None:
        """Move the person to ``tier`` (None: no tier)."""
        self.update_person(person_id, custom_fields={TIER_KEY: tier})

    def delete_person(self, person_id: int) -> None:
        """Delete the person."""
        self.fake.control("DELETE", f"/_sandbox/persons/{person_id}")

    def filter(self, name: str, type_: str, conditions: dict[str, Any]) -> int:
        """Create a filter of ``type_`` ("people", "deals") with these conditions."""
        body = {"name": name, "type": type_, "conditions": conditions}
        filter_id: int = self.fake.control("POST", "/_sandbox/filters", json=body).json()["id"]
        return filter_id

    def people_filter(self, name: str, tier: str | None = None) -> int:
        """A people filter of the persons in ``tier`` (None: the wrapper's tier)."""
        tier = tier if tier is not None else self.tier
        assert tier is not None, "name a tier, or give the wrapper one"
        return self.filter(name, "people", tier_conditions(tier))

    def deal_filter(self, name: str, prefix: str) -> int:
        """A deal filter of the deals whose title starts with ``prefix``."""
        return self.filter(name, "deals", title_conditions(prefix))

    def update_filter(self, filter_id: int, **body: Any) -> None:
        """Change the filter's name or conditions given in ``body``."""
        self.fake.control("PATCH", f"/_sandbox/filters/{filter_id}", json=body)

    def delete_filter(self, filter_id: int) -> None:
        """Delete the filter."""
        self.fake.control("DELETE", f"/_sandbox/filters/{filter_id}")

    def deal(self, title: str, person_id: int | None) -> int:
        """Create an open deal of the person (None: of nobody)."""
        body = {"title": title, "person_id": person_id, "status": "open"}
        deal_id: int = self.fake.control("POST", "/_sandbox/deals", json=body).json()["id"]
        return deal_id

    def update_deal(self, deal_id: int, **body: Any) -> None:
        """Change the deal's fields given in ``body``."""
        self.fake.control("PATCH", f"/_sandbox/deals/{deal_id}", json=body)

    def member_ids(self, filter_id: int) -> list[int]:
        """The ids of the filter's members (persons or deals), as the fake evaluates it."""
        ids: list[int] = self.fake.control("GET", f"/_sandbox/filters/{filter_id}/members").json()[
            "ids"
        ]
        return ids

    def syncable_filter_count(self) -> int:
        """People and deal filters a refresh mirrors (not temporary, active, not deleted)."""
        state = self.fake.app.state.fake
        with state.lock:
            return sum(
                1
                for f in state.data.filters.values()
                if f.type in ("people", "deals")
                and f.active_flag
                and not f.temporary_flag
                and not f.deleted
            )

    def calls(self) -> dict[str, int]:
        """API calls answered since the reset, by ``METHOD /path``."""
        calls: dict[str, int] = self.fake.control("GET", "/_sandbox/usage").json()["calls"]
        return calls

    def add_webhook(self, url: str, *, version: str, user: str, password: str, token: str) -> int:
        """Register a webhook for every object and action through the API
        (``POST /v1/webhooks`` with the API ``token``), as ``pbsync webhooks install``
        would; its id."""
        response = httpx.post(
            self.fake.url + "/v1/webhooks",
            headers={"x-api-token": token},
            json={
                "subscription_url": url,
                "event_action": "*",
                "event_object": "*",
                "name": f"tests ({version})",
                "version": version,
                "http_auth_user": user,
                "http_auth_password": password,
            },
            timeout=10,
        )
        assert response.status_code == 201, response.text
        webhook_id: int = response.json()["data"]["id"]
        return webhook_id

    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery attempt since the reset (event_id, attempt, status...)."""
        entries: list[dict[str, Any]] = self.fake.control("GET", "/_sandbox/deliveries").json()[
            "deliveries"
        ]
        return entries

    def delivered_events(self) -> int:
        """How many distinct events a webhook acknowledged with a 2xx."""
        return len(
            {
                d["event_id"]
                for d in self.deliveries()
                if d["status"] is not None and 200 <= d["status"] < 300
            }
        )

    def filter_emails(self, filter_id: int) -> list[str]:
        """The primary emails of the filter's members (of its deals' persons), sorted, as
        the fake evaluates it."""
        emails: list[str] = self.fake.control(
            "GET", f"/_sandbox/filters/{filter_id}/members"
        ).json()["emails"]
        return emails


# --- the fake Brevo ---------------------------------------------------------------------


class Brevo:
    """The fake Brevo: its control API, and its API as another Brevo user would call it."""

    def __init__(self, fake: RunningFake) -> None:
        self.fake = fake

    def emails(self, list_id: int) -> list[str]:
        """The list's member emails, sorted."""
        emails: list[str] = self.fake.control("GET", f"/_sandbox/lists/{list_id}/emails").json()[
            "emails"
        ]
        return emails

    def contact(self, email: str) -> dict[str, Any] | None:
        """The contact, or None when Brevo has none with this address."""
        response = httpx.get(
            self.fake.url + "/_sandbox/contacts", params={"email": email}, timeout=10
        )
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        contact: dict[str, Any] = response.json()
        return contact

    def add_by_hand(self, email: str, *list_ids: int) -> None:
        """A contact someone made in Brevo (in these lists)."""
        body = {"email": email, "attributes": {"FIRSTNAME": "Hand"}, "listIds": list(list_ids)}
        self.fake.control("POST", "/_sandbox/contacts", json=body)

    def blocklist(self, email: str) -> None:
        """Blocklist the contact, as someone would in Brevo."""
        self.fake.control("PUT", f"/_sandbox/contacts/{email}/blocklist", json={"blocked": True})

    def reject_imports_of(self, *emails: str) -> None:
        """Make imports reject these addresses."""
        self.fake.control("PUT", "/_sandbox/import-rejects", json={"emails": list(emails)})

    def faults(self, *faults: dict[str, Any]) -> None:
        """Inject these faults (and no latency) into the fake's API."""
        self.fake.control("PUT", "/_sandbox/faults", json={"faults": list(faults), "latency": []})

    def calls(self) -> dict[str, int]:
        """Calls the fake's API has answered since the reset, by operation ("POST /contacts")."""
        usage = self.fake.control("GET", "/_sandbox/usage").json()["calls"]
        return {operation: sum(by_status.values()) for operation, by_status in usage.items()}

    def writes(self) -> int:
        """Write calls (POST, PUT, PATCH, DELETE) the fake's API has answered since the reset."""
        return sum(
            count
            for operation, count in self.calls().items()
            if operation.split(" ", 1)[0] in WRITE_METHODS
        )

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to the Brevo API itself (as someone using Brevo's UI or API would make it)."""
        return httpx.request(
            method,
            self.fake.url + "/v3" + path,
            headers={"api-key": OTHER_BREVO_USER},
            timeout=10,
            **kwargs,
        )

    def folders_named(self, name: str) -> list[int]:
        """The ids of the folders called ``name``."""
        response = self.api("GET", "/contacts/folders?limit=50&offset=0")
        assert response.status_code == 200, response.text
        return [f["id"] for f in response.json().get("folders", []) if f["name"] == name]

    def delete_list(self, list_id: int) -> None:
        """Delete the list, as someone would in Brevo."""
        response = self.api("DELETE", f"/contacts/lists/{list_id}")
        assert response.status_code == 204, response.text

    def list(self, list_id: int) -> dict[str, Any]:
        """The list as Brevo's API returns it (name, folderId, ...)."""
        response = self.api("GET", f"/contacts/lists/{list_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body
