"""The order pipeline: the worker that takes a placed order from its stock to its money.

It consumes the `orders` queue (the order outbox's events, relayed) with the
kit's queue worker and moves each placed order along the machine of
`services.order.domain`, every move through `services.order.transitions`:

    orders.placed (pending)     reserve the stock (reservation id = order id)
    orders.placed (reserved),
    orders.reserved             extend the reservation, write the payment row,
                                charge the provider under the row's id
    orders.paid                 commit the reservation, fulfil
    orders.cancelled            release the reservation, refund a capture
    orders.failed               release the reservation

Beside the consumer, the reconciler settles charges whose answer was lost
(`unknown`) or never asked for (`pending` past a grace period) by asking the
provider about the payment's key; it never charges again.

Every step reads the order's state under its row lock before it writes, so a
redelivered or duplicated message finds its work done and does nothing; the
inbox records what was applied so a redelivery is skipped without calls.
"""
