"""Deterministic demo data: the same seed always gives the same account.

Folders 1 "Your First Folder" and 2 "Marketing"; lists 1 "Your first list" (folder 1),
2 "Newsletter" and 3 "Webinar 2024" (folder 2); 300 contacts created during 2024, about
6% blocklisted (``emailBlacklisted``), a few with an SMS number or an EXT_ID, many
"hand-added" to the lists. Seeded addresses look like ``anna.weber.17@example.com``, a
pattern the Pipedrive demo data does not use, so the two overlap only when a test says so.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from sandbox.brevo.model import EPOCH
from sandbox.brevo.store import Store

CONTACTS = 300
BASE_MS = (datetime(2024, 1, 1, tzinfo=UTC) - EPOCH).days * 86_400_000
DAY_MS = 86_400_000
FIRST = ("anna", "ben", "carla", "david", "emma", "felix", "greta", "hugo", "ida", "mia")
LAST = ("weber", "fischer", "wagner", "becker", "koch", "richter", "klein", "wolf", "smith")
DOMAINS = ("example.com", "example.net", "shop.example.org")
# list id -> share of contacts in it
MEMBERSHIP = {1: 0.4, 2: 0.25, 3: 0.1}


def seed_store(store: Store, seed: int) -> None:
    """Fill an empty store with the demo account for ``seed``."""
    rng = random.Random(seed)
    with store.lock:
        first = store.add_folder("Your First Folder", BASE_MS)
        marketing = store.add_folder("Marketing", BASE_MS + DAY_MS)
        store.add_list("Your first list", first.id, BASE_MS)
        store.add_list("Newsletter", marketing.id, BASE_MS + DAY_MS)
        store.add_list("Webinar 2024", marketing.id, BASE_MS + 40 * DAY_MS)
        created = sorted(BASE_MS + rng.randrange(300 * DAY_MS) for _ in range(CONTACTS))
        for number, created_ms in enumerate(created, start=1):
            given, family = rng.choice(FIRST), rng.choice(LAST)
            email = f"{given}.{family}.{number}@{rng.choice(DOMAINS)}"
            modified = created_ms + rng.randrange(60 * DAY_MS)
            contact = store.add_contact(email, created_ms, modified)
            contact.attributes.update(FIRSTNAME=given.title(), LASTNAME=family.title())
            contact.email_blacklisted = rng.random() < 0.06
            contact.sms_blacklisted = rng.random() < 0.03
            if rng.random() < 0.2:
                contact.attributes["SMS"] = f"+49170{number:07d}"
            if rng.random() < 0.05:
                store.set_ext_id(contact, f"legacy-{number}")
            for list_id, share in MEMBERSHIP.items():
                if rng.random() < share:
                    store.lists[list_id].members.add(contact.id)
