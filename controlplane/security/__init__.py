"""Supply-chain checks: signed versions, the repository's signature policy, and the record of security events."""
