"""pipedrive-brevo-sync: keeps Brevo contact lists equal to Pipedrive filters."""
