"""The notifier: delivers customers' notifications (`python -m services.order.notifier`)."""
