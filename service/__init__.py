"""Refinery, the application: serving (serving/), the store (store/), learning from feedback
(learn/), distilling principles into adapters (distill/), rolling versions out (rollout/), the
HTTP API (api/) and the `refinery` command (cli/).

Public API for scripts outside the service (bench/, deployments): `service.app.create_app`,
`service.settings.Settings`, `service.store.Store`, `service.distill` and the `refinery` command.
"""
