"""Access: operators, roles, sessions, signed requests, approvals and the audit log.

- `policy`: roles, actions, the permission table and `authorize(principal, action,
  resource)`, the one place a role is checked (the command line today, an HTTP layer
  later, with the same `Principal`);
- `operators`: accounts, Argon2id password hashes, TOTP second factors;
- `sessions`: login (password, TOTP, lockout, new-origin alerts), the session file
  (Ed25519 private key, mode 0600) and the check every command makes first;
- `requests`: what operators ask the service to sign for them, with approvals, and the
  checks the service makes before it does (`cloud_receiver.applications.requests`
  carries them out);
- `audit`: what is recorded and the alerts raised on it (the hash chain itself is
  `cloud_receiver.storage.audit`);
- `settings`: lifetimes, thresholds and the lockout, in the database.

A layer of the receiver between the applications (above) and the storage (below).
"""
