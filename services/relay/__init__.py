"""The outbox relay process: the kit's relay over the platform's database and Redis."""
