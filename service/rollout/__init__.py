"""Rolling adapter versions out: the one path for promote / canary / rollback / retire / reject
(lifecycle), its place in the server (server), and the canary rule (canary)."""
