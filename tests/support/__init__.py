"""What the tests are built from: fixture tenants, clients, a running `lyss`, mock providers, domain helpers."""
