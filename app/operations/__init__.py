"""What the platform operator runs against a whole installation: the post-deploy check, scheduled backups."""
