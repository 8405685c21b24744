"""Directory sync: the SCIM 2.0 server Entra ID's provisioning service talks to (SPEC "Directory sync").

The login never imports this package (tests/unit/test_layering.py); both meet in the accounts table
(shared/accounts.py). The SCIM libraries (pydantic-based) are imported on the first SCIM request, by
`service.handle`, never when function_app is imported: a worker that only signs people in does not
pay for them at start.

Modules: `auth` (the bearer tokens, directory sync on/off), `events` (the DirectoryEvents table),
`mapping` (a SCIM User's email, kinds and link), `resources` (the SCIM models and what discovery
announces), `store` (SCIM Users in Table Storage), `sync` (a person's portal accounts), `service`
(one request, end to end), `status` (what the setup page shows)."""
