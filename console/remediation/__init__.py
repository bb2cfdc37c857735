"""What the fix ledger knows: the action catalog and escalation ladders (resources/remediation/), the verified
success of each fix by provider, GPU model and driver, and what to try next for an incident."""
