"""The event gateway (`shop.event.v1`): signed courier webhooks onto a Redis stream,
their processing by workers, and the dead-letter admin."""
